import io
import json

import pytest

from flatnet.cni import launcher, spec
from flatnet.cni.spec import CniError

CONFIG = json.dumps({"cniVersion": "1.0.0", "name": "flatnet", "type": "flatnet", "hostId": 1}).encode()

ADD_ENVIRONMENT = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "0123456789abcdef",
    "CNI_NETNS": "/run/netns/container",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}

RESULT = {
    "interfaces": [
        {"name": "flatnet0", "mac": "02:00:00:00:00:01"},
        {"name": "veth0123abcd", "mac": "02:00:00:00:00:02"},
        {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/run/netns/container"},
    ],
    "ips": [{"address": "10.100.1.10/24", "gateway": "10.100.1.1", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.100.1.1"}],
    "dns": {},
}


def request_error(environment: dict[str, str], stdin: bytes = CONFIG) -> CniError:
    with pytest.raises(CniError) as raised:
        spec.parse_request(environment, stdin)
    return raised.value


# CNI_ARGS


def test_cni_args_are_parsed_into_pairs():
    args = spec.parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.100.1.20")

    assert args == {"IgnoreUnknown": "1", "K8S_POD_NAME": "web", "IP": "10.100.1.20"}


def test_cni_args_tolerate_empty_entries():
    assert spec.parse_cni_args("") == {}
    assert spec.parse_cni_args("A=1;;B=2;") == {"A": "1", "B": "2"}


def test_cni_args_value_may_contain_equals():
    assert spec.parse_cni_args("LABEL=a=b") == {"LABEL": "a=b"}


@pytest.mark.parametrize("raw", ["NOVALUE", "=value", "A=1;broken"])
def test_invalid_cni_args_entry_is_code_4(raw):
    with pytest.raises(CniError) as raised:
        spec.parse_cni_args(raw)

    assert raised.value.code == spec.INVALID_ENVIRONMENT
    assert "CNI_ARGS" in raised.value.msg


# Config on stdin


def test_config_is_decoded():
    assert spec.parse_config(CONFIG)["hostId"] == 1


def test_invalid_json_is_code_6():
    with pytest.raises(CniError) as raised:
        spec.parse_config(b'{"cniVersion": ')

    assert raised.value.code == spec.DECODE_FAILURE
    assert "not valid JSON" in raised.value.msg


def test_json_array_is_code_6():
    with pytest.raises(CniError) as raised:
        spec.parse_config(b"[]")

    assert raised.value.code == spec.DECODE_FAILURE


@pytest.mark.parametrize("version", ["0.2.0", "1.1.0", "2.0.0", None, 1])
def test_unsupported_version_is_code_1(version):
    with pytest.raises(CniError) as raised:
        spec.parse_config(json.dumps({"cniVersion": version}).encode())

    assert raised.value.code == spec.INCOMPATIBLE_VERSION
    assert repr(version) in raised.value.msg
    assert "1.0.0" in raised.value.details


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
def test_supported_version_is_accepted(version):
    assert spec.parse_config(json.dumps({"cniVersion": version}).encode())["cniVersion"] == version


# Environment


def test_add_request_is_parsed():
    environment = dict(ADD_ENVIRONMENT, CNI_ARGS="K8S_POD_NAME=web")

    request = spec.parse_request(environment, CONFIG)

    assert request.command == "ADD"
    assert request.container_id == "0123456789abcdef"
    assert request.netns == "/run/netns/container"
    assert request.ifname == "eth0"
    assert request.args == {"K8S_POD_NAME": "web"}
    assert request.cni_version == "1.0.0"


@pytest.mark.parametrize("command", ["", "add", "GC", "STATUS", "REMOVE"])
def test_unsupported_command_is_code_4(command):
    error = request_error(dict(ADD_ENVIRONMENT, CNI_COMMAND=command))

    assert error.code == spec.INVALID_ENVIRONMENT
    assert "CNI_COMMAND" in error.msg
    assert repr(command) in error.msg


def test_version_needs_no_container_environment():
    request = spec.parse_request({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')

    assert request.command == "VERSION"
    assert request.cni_version == "0.4.0"


@pytest.mark.parametrize("container_id", ["", "-leading-dash", "has space", "slash/inside", "_underscore"])
def test_invalid_container_id_is_code_4(container_id):
    error = request_error(dict(ADD_ENVIRONMENT, CNI_CONTAINERID=container_id))

    assert error.code == spec.INVALID_ENVIRONMENT
    assert "CNI_CONTAINERID" in error.msg


def test_container_id_may_contain_dots_and_dashes():
    request = spec.parse_request(dict(ADD_ENVIRONMENT, CNI_CONTAINERID="a1_b.c-d"), CONFIG)

    assert request.container_id == "a1_b.c-d"


@pytest.mark.parametrize("ifname", ["", "a" * 16, "eth/0", ".", ".."])
def test_invalid_ifname_is_code_4(ifname):
    error = request_error(dict(ADD_ENVIRONMENT, CNI_IFNAME=ifname))

    assert error.code == spec.INVALID_ENVIRONMENT
    assert "CNI_IFNAME" in error.msg


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_missing_netns_is_code_4(command):
    environment = dict(ADD_ENVIRONMENT, CNI_COMMAND=command)
    del environment["CNI_NETNS"]

    error = request_error(environment)

    assert error.code == spec.INVALID_ENVIRONMENT
    assert "CNI_NETNS" in error.msg


def test_del_needs_no_netns():
    environment = dict(ADD_ENVIRONMENT, CNI_COMMAND="DEL")
    del environment["CNI_NETNS"]

    request = spec.parse_request(environment, CONFIG)

    assert request.netns == ""


def test_unknown_command_is_reported_before_bad_config():
    error = request_error(dict(ADD_ENVIRONMENT, CNI_COMMAND="BOGUS"), b"not json")

    assert error.code == spec.INVALID_ENVIRONMENT


# Results


def test_version_result_lists_supported_versions():
    result = spec.version_result("0.4.0")

    assert result["cniVersion"] == "0.4.0"
    assert "0.4.0" in result["supportedVersions"]
    assert "1.0.0" in result["supportedVersions"]


def test_result_1_0_0_omits_ip_version():
    shaped = spec.shape_result("1.0.0", RESULT)

    assert shaped["cniVersion"] == "1.0.0"
    assert all("version" not in ip for ip in shaped["ips"])
    assert shaped["interfaces"] == RESULT["interfaces"]


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_result_before_1_0_0_has_ip_version(version):
    shaped = spec.shape_result(version, RESULT)

    assert shaped["cniVersion"] == version
    assert [ip["version"] for ip in shaped["ips"]] == ["4"]
    assert shaped["ips"][0]["interface"] == 2


def test_shaping_leaves_input_unchanged():
    spec.shape_result("0.4.0", RESULT)

    assert "version" not in RESULT["ips"][0]
    assert "cniVersion" not in RESULT


def test_error_without_details_omits_details():
    error = CniError(spec.INVALID_NETWORK_CONFIG, "bad config")

    assert error.as_dict("0.4.0") == {"cniVersion": "0.4.0", "code": 7, "msg": "bad config"}


def test_error_with_details_includes_them():
    error = CniError(spec.DECODE_FAILURE, "bad JSON", "line 1")

    assert error.as_dict("1.0.0")["details"] == "line 1"


# Launcher, for commands that never reach netlink


def run_launcher(monkeypatch, environment: dict[str, str], stdin: bytes) -> tuple[int, str]:
    for name in ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    stdout = io.StringIO()
    monkeypatch.setattr("sys.stdout", stdout)

    exit_code = 0
    try:
        launcher.main()
    except SystemExit as exit:
        exit_code = exit.code
    return exit_code, stdout.getvalue()


def test_launcher_version_prints_one_document(monkeypatch):
    exit_code, stdout = run_launcher(monkeypatch, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}')

    document = json.loads(stdout)
    assert exit_code == 0
    assert document == {"cniVersion": "1.0.0", "supportedVersions": list(spec.SUPPORTED_VERSIONS)}


def test_launcher_bad_json_prints_one_error(monkeypatch):
    exit_code, stdout = run_launcher(monkeypatch, {"CNI_COMMAND": "VERSION"}, b"{")

    document = json.loads(stdout)
    assert exit_code == 1
    assert document["code"] == spec.DECODE_FAILURE
    assert document["cniVersion"] == "1.0.0"
