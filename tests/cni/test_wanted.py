import ipaddress

import pytest

from flatnet.cni import wanted
from flatnet.cni.config import load_netconf
from flatnet.cni.spec import ADDRESS_UNAVAILABLE, INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG, CniError, Request

NETNS = "/run/netns/container"


def conf(**overrides):
    raw = {"cniVersion": "1.0.0", "name": "flatnet", "type": "flatnet", "hostId": 4}
    raw.update(overrides)
    return load_netconf(raw)


def request(cni_args: dict[str, str] | None = None, **config) -> Request:
    body = {"cniVersion": "1.0.0", "name": "flatnet", "type": "flatnet", "hostId": 4}
    body.update(config)
    return Request("ADD", "0123456789abcdef0123", NETNS, "eth0", cni_args or {}, body)


def error_of(call) -> CniError:
    with pytest.raises(CniError) as raised:
        call()
    return raised.value


# Address


def test_no_request_means_allocation():
    assert wanted.from_request(request(), conf()).address is None


@pytest.mark.parametrize("value", ["10.100.4.20", "10.100.4.20/24"])
def test_ip_argument_is_the_address(value):
    assert wanted.from_request(request({"IP": value}), conf()).address == ipaddress.IPv4Address("10.100.4.20")


def test_ips_capability_is_the_address():
    attachment = wanted.from_request(request(runtimeConfig={"ips": ["10.100.4.21/24"]}), conf())

    assert attachment.address == ipaddress.IPv4Address("10.100.4.21")


def test_args_cni_ips_is_the_address():
    attachment = wanted.from_request(request(args={"cni": {"ips": ["10.100.4.22"]}}), conf())

    assert attachment.address == ipaddress.IPv4Address("10.100.4.22")


def test_same_address_from_two_sources_is_one():
    attachment = wanted.from_request(request({"IP": "10.100.4.20"}, runtimeConfig={"ips": ["10.100.4.20/24"]}), conf())

    assert attachment.address == ipaddress.IPv4Address("10.100.4.20")


def test_two_addresses_are_rejected():
    error = error_of(lambda: wanted.from_request(request({"IP": "10.100.4.20"}, runtimeConfig={"ips": ["10.100.4.21"]}), conf()))

    assert error.code == ADDRESS_UNAVAILABLE
    assert "10.100.4.20" in error.msg
    assert "10.100.4.21" in error.msg


@pytest.mark.parametrize("value", ["bogus", "10.100.4", "fd00::1", "10.100.4.20/16"])
def test_bad_ip_argument_is_code_4(value):
    error = error_of(lambda: wanted.from_request(request({"IP": value}), conf()))

    assert error.code == INVALID_ENVIRONMENT
    assert repr(value) in error.msg


def test_ips_capability_must_be_list():
    error = error_of(lambda: wanted.from_request(request(runtimeConfig={"ips": "10.100.4.20"}), conf()))

    assert error.code == INVALID_NETWORK_CONFIG
    assert "runtimeConfig.ips" in error.msg


# MAC


@pytest.mark.parametrize("source", [
    {"cni_args": {"MAC": "02:AA:bb:cc:dd:ee"}},
    {"runtimeConfig": {"mac": "02:aa:bb:cc:dd:ee"}},
    {"args": {"cni": {"mac": "02:aa:bb:cc:dd:ee"}}},
])
def test_mac_comes_from_any_source(source):
    attachment = wanted.from_request(request(**source), conf())

    assert attachment.mac == "02:aa:bb:cc:dd:ee"


@pytest.mark.parametrize("value", ["02:aa:bb:cc:dd", "zz:aa:bb:cc:dd:ee", "03:aa:bb:cc:dd:ee", "00:00:00:00:00:00"])
def test_bad_mac_argument_is_code_4(value):
    error = error_of(lambda: wanted.from_request(request({"MAC": value}), conf()))

    assert error.code == INVALID_ENVIRONMENT
    assert repr(value) in error.msg


def test_two_macs_are_rejected():
    error = error_of(lambda: wanted.from_request(
        request({"MAC": "02:00:00:00:00:01"}, runtimeConfig={"mac": "02:00:00:00:00:02"}), conf()
    ))

    assert "02:00:00:00:00:01" in error.msg
    assert "02:00:00:00:00:02" in error.msg


# Name, ports and aliases


def test_hostname_is_pod_name_or_short_id():
    assert wanted.from_request(request({"K8S_POD_NAME": "web.1"}), conf()).hostname == "web.1"
    assert wanted.from_request(request(), conf()).hostname == "0123456789ab"


def test_bad_pod_name_is_code_4():
    error = error_of(lambda: wanted.from_request(request({"K8S_POD_NAME": "-web"}), conf()))

    assert error.code == INVALID_ENVIRONMENT
    assert "'-web'" in error.msg


def test_tcp_container_ports_are_recorded():
    mappings = [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 8443, "containerPort": 443},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
        {"hostPort": 8081, "containerPort": 80, "protocol": "tcp"},
    ]

    assert wanted.from_request(request(runtimeConfig={"portMappings": mappings}), conf()).ports == [80, 443]


@pytest.mark.parametrize(("mappings", "named"), [
    ("80", "runtimeConfig.portMappings"),
    (["80"], "runtimeConfig.portMappings[0]"),
    ([{"containerPort": 0}], "runtimeConfig.portMappings[0].containerPort"),
    ([{"containerPort": 80}, {"containerPort": 80, "protocol": "icmp"}], "runtimeConfig.portMappings[1].protocol"),
])
def test_bad_port_mapping_is_code_7(mappings, named):
    error = error_of(lambda: wanted.from_request(request(runtimeConfig={"portMappings": mappings}), conf()))

    assert error.code == INVALID_NETWORK_CONFIG
    assert named in error.msg


def test_aliases_of_this_network_are_recorded():
    aliases = {"flatnet": ["Web", "www.site", "web"], "other": ["elsewhere"]}

    assert wanted.from_request(request(runtimeConfig={"aliases": aliases}), conf()).aliases == ["web", "www.site"]


def test_aliases_as_list_are_accepted():
    assert wanted.from_request(request(runtimeConfig={"aliases": ["api"]}), conf()).aliases == ["api"]


@pytest.mark.parametrize("aliases", [{"flatnet": "web"}, {"flatnet": ["-bad"]}, {"flatnet": [7]}])
def test_bad_aliases_are_code_7(aliases):
    error = error_of(lambda: wanted.from_request(request(runtimeConfig={"aliases": aliases}), conf()))

    assert error.code == INVALID_NETWORK_CONFIG
    assert "alias" in error.msg
    assert "--network-alias" in error.msg
    assert "invalid network config" not in error.msg


def test_bad_alias_blames_podman_alias():
    error = error_of(lambda: wanted.from_request(request(runtimeConfig={"aliases": {"flatnet": ["-bad"]}}), conf()))

    document = error.as_dict("1.0.0")
    japanese = error.as_dict("1.0.0", japanese=True)
    assert document["msg"] == (
        "invalid alias from podman: '-bad', given with podman run --network-alias (runtimeConfig.aliases), is not a container name"
    )
    assert japanese["msg"].startswith("podman から渡されたエイリアスが不正です: podman run --network-alias で指定された '-bad'")
    assert "ネットワーク設定が不正です" not in japanese["msg"]


# prevResult for CHECK


PREVIOUS = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "flatnet0", "mac": "02:00:00:00:00:01"},
        {"name": "veth01234567", "mac": "02:00:00:00:00:02"},
        {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": NETNS},
    ],
    "ips": [{"address": "10.100.4.10/24", "gateway": "10.100.4.1", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.100.4.1"}],
}


def test_previous_result_gives_address_mac_and_host_veth():
    expected = wanted.from_previous_result(request(prevResult=PREVIOUS), conf())

    assert expected == wanted.Expected(ipaddress.IPv4Interface("10.100.4.10/24"), "02:00:00:00:00:03", "veth01234567")


def test_previous_result_after_portmap_is_read():
    chained = dict(PREVIOUS, dns={"nameservers": ["10.100.4.1"]})

    assert wanted.from_previous_result(request(prevResult=chained), conf()).address.ip == ipaddress.IPv4Address("10.100.4.10")


@pytest.mark.parametrize(("previous", "named"), [
    (None, "prevResult"),
    ({"interfaces": []}, "no interfaces or ips"),
    (dict(PREVIOUS, interfaces=PREVIOUS["interfaces"][:2]), "no interface eth0"),
    (dict(PREVIOUS, ips=[]), "0 addresses"),
    (dict(PREVIOUS, ips=[{"address": "bogus", "interface": 2}]), "'bogus'"),
])
def test_bad_previous_result_is_code_7(previous, named):
    error = error_of(lambda: wanted.from_previous_result(request(prevResult=previous), conf()))

    assert error.code == INVALID_NETWORK_CONFIG
    assert named in error.msg


# Valid attachments for GC


def test_valid_attachments_from_either_key():
    entry = [{"containerID": "c1", "ifname": "eth0"}]

    assert wanted.valid_attachments({"cni.dev/valid-attachments": entry}) == {("c1", "eth0")}
    assert wanted.valid_attachments({"cni.dev/attachments": entry}) == {("c1", "eth0")}


def test_missing_attachments_list_is_code_7():
    error = error_of(lambda: wanted.valid_attachments({}))

    assert error.code == INVALID_NETWORK_CONFIG
    assert "cni.dev/valid-attachments" in error.msg


@pytest.mark.parametrize("entries", ["c1", [{"containerID": "c1"}], [{"containerID": "", "ifname": "eth0"}], ["c1/eth0"]])
def test_bad_attachments_are_code_7(entries):
    error = error_of(lambda: wanted.valid_attachments({"cni.dev/valid-attachments": entries}))

    assert error.code == INVALID_NETWORK_CONFIG
    assert "cni.dev/valid-attachments" in error.msg
