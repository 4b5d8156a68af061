import ipaddress
from pathlib import Path

import pytest

from flatnet.cni.config import load_netconf
from flatnet.cni.spec import INVALID_NETWORK_CONFIG, CniError


def load(**overrides):
    raw = {"cniVersion": "1.0.0", "name": "flatnet", "type": "flatnet", "hostId": 3}
    raw.update(overrides)
    return load_netconf(raw)


def invalid(**overrides) -> CniError:
    with pytest.raises(CniError) as raised:
        load(**overrides)
    return raised.value


def test_defaults_follow_host_id():
    conf = load()

    assert conf.host_id == 3
    assert conf.subnet == ipaddress.IPv4Network("10.100.3.0/24")
    assert conf.gateway == ipaddress.IPv4Address("10.100.3.1")
    assert conf.range_start == ipaddress.IPv4Address("10.100.3.10")
    assert conf.range_end == ipaddress.IPv4Address("10.100.3.254")


def test_defaults_for_host_settings():
    conf = load()

    assert conf.name == "flatnet"
    assert conf.bridge == "flatnet0"
    assert conf.mtu == 1300
    assert conf.data_dir == Path("/var/lib/flatnet")
    assert conf.registry_endpoints == ()
    assert conf.capabilities == {}


def test_explicit_settings_are_kept():
    conf = load(
        ipRange="10.100.3.0/24",
        gateway="10.100.3.2",
        rangeStart="10.100.3.100",
        rangeEnd="10.100.3.120",
        registryEndpoints=["http://10.100.0.3:8080", "http://127.0.0.1:9"],
        dataDir="/srv/flatnet",
        bridge="fn-test0",
        mtu=1400,
        capabilities={"portMappings": True},
    )

    assert conf.gateway == ipaddress.IPv4Address("10.100.3.2")
    assert conf.range_start == ipaddress.IPv4Address("10.100.3.100")
    assert conf.range_end == ipaddress.IPv4Address("10.100.3.120")
    assert conf.registry_endpoints == ("http://10.100.0.3:8080", "http://127.0.0.1:9")
    assert conf.data_dir == Path("/srv/flatnet")
    assert conf.bridge == "fn-test0"
    assert conf.mtu == 1400
    assert conf.capabilities == {"portMappings": True}


@pytest.mark.parametrize("host_id", [None, 0, 255, "3", True, 2.0])
def test_invalid_host_id_is_code_7(host_id):
    error = invalid(hostId=host_id)

    assert error.code == INVALID_NETWORK_CONFIG
    assert "hostId" in error.msg
    assert repr(host_id) in error.msg


def test_missing_host_id_says_missing():
    raw = {"cniVersion": "1.0.0", "name": "flatnet", "type": "flatnet"}

    with pytest.raises(CniError) as raised:
        load_netconf(raw)

    error = raised.value
    assert error.code == INVALID_NETWORK_CONFIG
    assert error.msg == "invalid network config: hostId is missing"
    assert "None" not in error.msg
    assert "from 1 to 254" in error.details


def test_missing_host_id_in_japanese():
    with pytest.raises(CniError) as raised:
        load_netconf({"cniVersion": "1.0.0", "name": "flatnet", "type": "flatnet"})

    document = raised.value.as_dict("1.0.0", japanese=True)
    assert document["msg"] == "ネットワーク設定が不正です: hostId がありません"
    assert document["details"].startswith("conflist の flatnet プラグインのオブジェクトに hostId を追加してください。")


@pytest.mark.parametrize("host_id", [1, 254])
def test_host_id_limits_are_valid(host_id):
    assert load(hostId=host_id).subnet == ipaddress.IPv4Network(f"10.100.{host_id}.0/24")


def test_ip_range_of_other_host_names_both_values():
    error = invalid(hostId=3, ipRange="10.100.4.0/24")

    assert error.code == INVALID_NETWORK_CONFIG
    assert "'10.100.4.0/24'" in error.msg
    assert "hostId 3" in error.msg
    assert "10.100.3.0/24" in error.details


@pytest.mark.parametrize("ip_range", ["10.100.3.0/16", "10.100.3.1/24", "10.101.3.0/24", ["10.100.3.0/24"]])
def test_ip_range_must_be_host_subnet(ip_range):
    error = invalid(ipRange=ip_range)

    assert error.code == INVALID_NETWORK_CONFIG
    assert "ipRange" in error.msg


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gateway", "10.100.4.1"),
        ("gateway", "10.100.3.0"),
        ("gateway", "10.100.3.255"),
        ("gateway", "not-an-address"),
        ("gateway", 5),
        ("rangeStart", "10.100.2.10"),
        ("rangeStart", "10.100.3.0"),
        ("rangeEnd", "10.100.3.255"),
        ("rangeEnd", "fd00::1"),
        ("rangeEnd", None),
    ],
)
def test_address_outside_subnet_names_the_key(key, value):
    error = invalid(**{key: value})

    assert error.code == INVALID_NETWORK_CONFIG
    assert key in error.msg
    assert repr(value) in error.msg
    assert "10.100.3.0/24" in error.msg


def test_range_start_above_end_names_both():
    error = invalid(rangeStart="10.100.3.50", rangeEnd="10.100.3.40")

    assert error.code == INVALID_NETWORK_CONFIG
    assert "10.100.3.50" in error.msg
    assert "10.100.3.40" in error.msg


def test_single_address_range_is_valid():
    conf = load(rangeStart="10.100.3.50", rangeEnd="10.100.3.50")

    assert conf.range_start == conf.range_end


@pytest.mark.parametrize(
    "endpoints",
    [
        "http://10.100.0.3:8080",
        [8080],
        ["https://10.100.0.3:8080"],
        ["10.100.0.3:8080"],
        ["http://"],
        ["http://10.100.0.3:notaport"],
        ["http://10.100.0.3:70000"],
        ["http://[::1"],
    ],
)
def test_invalid_registry_endpoints_are_code_7(endpoints):
    # Each endpoint is dialled after the container is already set up, so a bad
    # one must fail here rather than halfway through ADD.
    error = invalid(registryEndpoints=endpoints)

    assert error.code == INVALID_NETWORK_CONFIG
    assert "registryEndpoints" in error.msg


@pytest.mark.parametrize("data_dir", ["var/lib/flatnet", "", 7])
def test_relative_data_dir_is_code_7(data_dir):
    error = invalid(dataDir=data_dir)

    assert error.code == INVALID_NETWORK_CONFIG
    assert "dataDir" in error.msg


@pytest.mark.parametrize("bridge", ["", "a-bridge-name-too-long", "br/0", "br 0", 0])
def test_invalid_bridge_name_is_code_7(bridge):
    error = invalid(bridge=bridge)

    assert error.code == INVALID_NETWORK_CONFIG
    assert "bridge" in error.msg


@pytest.mark.parametrize("mtu", [575, 9001, "1300", True, 1300.0])
def test_invalid_mtu_is_code_7(mtu):
    error = invalid(mtu=mtu)

    assert error.code == INVALID_NETWORK_CONFIG
    assert "mtu" in error.msg
    assert repr(mtu) in error.msg


@pytest.mark.parametrize("mtu", [576, 9000])
def test_mtu_limits_are_valid(mtu):
    assert load(mtu=mtu).mtu == mtu


def test_capabilities_must_be_object():
    error = invalid(capabilities=["portMappings"])

    assert error.code == INVALID_NETWORK_CONFIG
    assert "capabilities" in error.msg


def test_socket_defaults_to_data_dir():
    assert load(dataDir="/srv/flatnet").socket == Path("/srv/flatnet/gateway.sock")


def test_explicit_socket_is_kept():
    assert load(socket="/run/flatnet/gateway.sock").socket == Path("/run/flatnet/gateway.sock")


@pytest.mark.parametrize("socket", ["relative.sock", "", 5, None])
def test_invalid_socket_is_code_7(socket):
    error = invalid(socket=socket)

    assert error.code == INVALID_NETWORK_CONFIG
    assert "socket" in error.msg
    assert repr(socket) in error.msg


def test_reuse_delay_defaults_to_registry_ttl():
    assert load().reuse_delay == 300.0


@pytest.mark.parametrize("delay", [0, 1.5, 604800])
def test_reuse_delay_limits_are_valid(delay):
    assert load(reuseDelay=delay).reuse_delay == delay


@pytest.mark.parametrize("delay", [-1, 604801, "300", True, None, float("nan")])
def test_invalid_reuse_delay_is_code_7(delay):
    error = invalid(reuseDelay=delay)

    assert error.code == INVALID_NETWORK_CONFIG
    assert "reuseDelay" in error.msg


def test_capability_values_must_be_booleans():
    error = invalid(capabilities={"portMappings": "yes"})

    assert error.code == INVALID_NETWORK_CONFIG
    assert "capabilities" in error.msg
