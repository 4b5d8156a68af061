import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flatnet import i18n
from flatnet.cni import dispatch, launcher, spec
from flatnet.cni.spec import CniError
from flatnet.i18n import Message

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


@pytest.mark.parametrize("version", ["0.2.0", "1.2.0", "2.0.0", None, 1])
def test_unsupported_version_is_code_1(version):
    with pytest.raises(CniError) as raised:
        spec.parse_config(json.dumps({"cniVersion": version, "name": "flatnet"}).encode())

    assert raised.value.code == spec.INCOMPATIBLE_VERSION
    assert repr(version) in raised.value.msg
    assert "1.0.0" in raised.value.details


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_supported_version_is_accepted(version):
    assert spec.parse_config(json.dumps({"cniVersion": version, "name": "flatnet"}).encode())["cniVersion"] == version


@pytest.mark.parametrize("name", [None, "", "-dash", "has space", 7])
def test_invalid_network_name_is_code_7(name):
    with pytest.raises(CniError) as raised:
        spec.parse_config(json.dumps({"cniVersion": "1.0.0", "name": name}).encode())

    assert raised.value.code == spec.INVALID_NETWORK_CONFIG
    assert "name" in raised.value.msg
    assert repr(name) in raised.value.msg


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


@pytest.mark.parametrize("command", ["", "add", "gc", "REMOVE"])
def test_unsupported_command_is_code_4(command):
    error = request_error(dict(ADD_ENVIRONMENT, CNI_COMMAND=command))

    assert error.code == spec.INVALID_ENVIRONMENT
    assert "CNI_COMMAND" in error.msg
    assert repr(command) in error.msg


@pytest.mark.parametrize(("command", "version", "first"), [
    ("CHECK", "0.3.1", "0.4.0"), ("GC", "1.0.0", "1.1.0"), ("STATUS", "0.4.0", "1.1.0"),
])
def test_command_newer_than_config_is_code_1(command, version, first):
    config = json.dumps({"cniVersion": version, "name": "flatnet"}).encode()

    error = request_error(dict(ADD_ENVIRONMENT, CNI_COMMAND=command), config)

    assert error.code == spec.INCOMPATIBLE_VERSION
    assert command in error.msg
    assert first in error.details


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_need_no_container_environment(command):
    config = json.dumps({"cniVersion": "1.1.0", "name": "flatnet"}).encode()

    request = spec.parse_request({"CNI_COMMAND": command}, config)

    assert request.command == command


def test_fault_hook_is_read_from_environment():
    environment = dict(ADD_ENVIRONMENT, FLATNET_CNI_FAULT="add:after-reserve:kill")

    assert spec.parse_request(environment, CONFIG).fault == "add:after-reserve:kill"


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
    result = spec.version_result({"cniVersion": "0.4.0"})

    assert result["cniVersion"] == "0.4.0"
    assert result["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def test_version_result_for_unknown_version_names_newest():
    assert spec.version_result({"cniVersion": "9.9.9"})["cniVersion"] == "1.1.0"


def test_result_1_0_0_omits_ip_version():
    shaped = spec.shape_result("1.0.0", RESULT)

    assert shaped["cniVersion"] == "1.0.0"
    assert all("version" not in ip for ip in shaped["ips"])
    assert shaped["interfaces"] == RESULT["interfaces"]


def test_result_1_1_0_has_1_0_0_shape():
    shaped = spec.shape_result("1.1.0", RESULT)

    assert shaped == dict(RESULT, cniVersion="1.1.0")


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
    error = CniError(spec.INVALID_NETWORK_CONFIG, Message("cni.config_not_json"))

    assert error.as_dict("0.4.0") == {"cniVersion": "0.4.0", "code": 7, "msg": "network config on stdin is not valid JSON"}


def test_error_with_details_includes_them():
    error = CniError(spec.DECODE_FAILURE, Message("cni.config_not_json"), "line 1")

    assert error.as_dict("1.0.0")["details"] == "line 1"


def test_error_renders_japanese_on_request():
    error = CniError(spec.INVALID_ENVIRONMENT, Message("cni.ifname_invalid", ifname="a/b"), Message("cni.ifname_rule"))

    japanese = error.as_dict("1.0.0", japanese=True)

    assert japanese["msg"] == "CNI_IFNAME 'a/b' が不正です"
    assert japanese["details"].startswith("'/' や空白を含まない")
    assert error.as_dict("1.0.0")["msg"] == "CNI_IFNAME 'a/b' is invalid"
    assert error.msg == "CNI_IFNAME 'a/b' is invalid"
    assert error.details == "it must be a Linux interface name of 1 to 15 characters without '/' or spaces"


def test_error_renders_nested_messages_in_one_language():
    importlib.import_module("flatnet.cni.config")  # defines the cni.config.* messages
    rule = Message("cni.config.rule_host_id")
    error = CniError(spec.INVALID_NETWORK_CONFIG, Message("cni.config.invalid", key="hostId", value=0, rule=rule))

    assert error.as_dict("1.0.0", japanese=True)["msg"] == (
        "ネットワーク設定が不正です: hostId 0: 1 から 254 までの整数で、フリート内で重複しない値にしてください"
    )
    assert error.msg == "invalid network config: hostId 0: must be an integer from 1 to 254, unique in the fleet"


def test_error_keeps_foreign_details_verbatim():
    error = CniError(spec.DECODE_FAILURE, Message("cni.config_not_json"), "Expecting value: line 1 column 1 (char 0)")

    assert error.as_dict("1.0.0", japanese=True)["details"] == "Expecting value: line 1 column 1 (char 0)"


# Launcher and dispatch, for commands that never reach netlink


def test_launcher_version_prints_one_document():
    stdout, code = launcher.respond({b"CNI_COMMAND": b"VERSION"}, b'{"cniVersion": "1.0.0"}')

    assert code == 0
    assert json.loads(stdout) == {"cniVersion": "1.0.0", "supportedVersions": list(spec.SUPPORTED_VERSIONS)}


@pytest.mark.parametrize("stdin", [b"{", b"", b"[]", b'{"cniVersion": "7.0.0"}'])
def test_launcher_version_answers_any_stdin(stdin):
    stdout, code = launcher.respond({b"CNI_COMMAND": b"VERSION"}, stdin)

    assert code == 0
    assert json.loads(stdout) == spec.version_result({})


def test_launcher_matches_spec_for_every_version():
    for version in spec.SUPPORTED_VERSIONS:
        stdout, _ = launcher.respond({b"CNI_COMMAND": b"VERSION"}, json.dumps({"cniVersion": version}).encode())

        assert json.loads(stdout) == spec.version_result({"cniVersion": version})


@pytest.mark.parametrize("stdin", [b'{"cniVersion": "1.0.0", "name": "x"}', b' {"a": [1, 2.5, true, null, "\\u00e9"]} \n'])
def test_launcher_decodes_config_as_json_does(stdin):
    assert launcher.decode_config(stdin) == json.loads(stdin)


@pytest.mark.parametrize("stdin", [b"{", b"[]", b'{"a": 1} x', b"\xff", b'{"a": NaN}'])
def test_launcher_rejects_what_is_not_one_object(stdin):
    assert launcher.decode_config(stdin) is None


def test_socket_path_defaults_to_data_dir():
    assert launcher.socket_path({"dataDir": "/srv/flatnet/"}) == "/srv/flatnet/gateway.sock"
    assert launcher.socket_path({}) == "/var/lib/flatnet/gateway.sock"
    assert launcher.socket_path({"dataDir": "/srv", "socket": "/run/fn.sock"}) == "/run/fn.sock"


def test_request_encoding_round_trips():
    environment = {"CNI_COMMAND": "ADD", "CNI_ARGS": "A=1;B=2=3"}
    request = launcher.encode_request(environment, b'{"x": 1}')

    header, _, body = request.partition(b"\n")
    magic, sizes = header[:len(launcher.PROTOCOL_MAGIC)], header[len(launcher.PROTOCOL_MAGIC):].split()
    block, stdin = body[:int(sizes[0])], body[int(sizes[0]):]

    assert magic == launcher.PROTOCOL_MAGIC
    assert dict(entry.decode().split("=", 1) for entry in block.split(b"\0")) == environment
    assert stdin == b'{"x": 1}'
    assert len(stdin) == int(sizes[1])


@pytest.mark.parametrize(("reply", "expected"), [
    (b"0\n", (b"", 0)), (b"1\n{}", (b"{}", 1)), (b"", None), (b"0", None), (b"x\n", None), (b"1234\n", None),
])
def test_reply_decoding(reply, expected):
    assert launcher.decode_reply(reply) == expected


def test_gateway_failure_document_is_one_cni_error():
    failure = launcher.GatewayFailed("cni.gateway_no_reply", path="/run/gw.sock", error='closed "suddenly"')

    document = json.loads(launcher.gateway_failure_document({"cniVersion": "0.4.0"}, "ADD", failure))

    assert document["cniVersion"] == "0.4.0"
    assert document["code"] == spec.TRY_AGAIN_LATER
    assert "ADD" in document["msg"]
    assert document["details"] == 'the gateway at /run/gw.sock did not reply: closed "suddenly"'


def test_gateway_failure_document_in_japanese():
    failure = launcher.GatewayFailed("cni.gateway_reply_incomplete", path="/run/gw.sock")

    document = json.loads(launcher.gateway_failure_document({"cniVersion": "1.0.0"}, "ADD", failure, japanese=True))

    assert document["msg"].startswith("ホストのゲートウェイが ADD の実行中に失敗しました")
    assert document["details"] == "/run/gw.sock のゲートウェイが応答を最後まで送らずに接続を閉じました"
    assert str(failure) == "the gateway at /run/gw.sock closed the connection without a complete reply"


def test_forwarded_environment_keeps_cni_fault_and_locale_variables():
    environ = {
        b"CNI_COMMAND": b"ADD", b"PATH": b"/bin", b"FLATNET_CNI_FAULT": b"x:fail", b"HOME": b"/root",
        b"LANG": b"ja_JP.UTF-8", b"LC_ALL": b"C", b"LC_MESSAGES": b"ja_JP", b"LC_TIME": b"ja_JP",
    }

    assert launcher.forwarded_environment(environ) == {
        "CNI_COMMAND": "ADD", "FLATNET_CNI_FAULT": "x:fail", "LANG": "ja_JP.UTF-8", "LC_ALL": "C", "LC_MESSAGES": "ja_JP",
    }


@pytest.mark.parametrize("environment", [
    {},
    {"LANG": "ja_JP.UTF-8"},
    {"LANG": "C"},
    {"LANG": "en_US.UTF-8"},
    {"LC_ALL": "C", "LANG": "ja_JP.UTF-8"},
    {"LC_ALL": "", "LANG": "ja_JP.UTF-8"},
    {"LC_MESSAGES": "ja_JP", "LANG": "C"},
    {"LC_ALL": "ja_JP.eucJP", "LC_MESSAGES": "C"},
    {"LC_MESSAGES": "JA_JP"},
])
def test_launcher_locale_rule_matches_i18n(environment):
    assert launcher.locale_is_japanese(environment) == i18n.locale_is_japanese(environment)


def test_launcher_messages_are_in_the_catalog():
    catalog = i18n.catalog()

    for key, pair in launcher.MESSAGES.items():
        assert catalog[key] == pair


def test_dispatch_version_matches_launcher():
    stdout, code = dispatch.execute({"CNI_COMMAND": "VERSION"}, b"{")

    assert (stdout, code) == launcher.respond({b"CNI_COMMAND": b"VERSION"}, b"{")


def test_dispatch_bad_json_is_one_error():
    stdout, code = dispatch.execute({"CNI_COMMAND": "ADD"}, b"{")

    document = json.loads(stdout)
    assert code == 1
    assert document["code"] == spec.DECODE_FAILURE
    assert document["cniVersion"] == "1.0.0"


def test_dispatch_error_follows_japanese_locale():
    environment = dict(ADD_ENVIRONMENT, CNI_CONTAINERID="-web", LANG="ja_JP.UTF-8")

    stdout, code = dispatch.execute(environment, CONFIG)

    document = json.loads(stdout)
    assert code == 1
    assert document["code"] == spec.INVALID_ENVIRONMENT
    assert document["msg"] == "CNI_CONTAINERID '-web' が不正です"
    assert document["details"].startswith("空でなく、英字か数字で始まり")


@pytest.mark.parametrize("locale", [{"LANG": "C"}, {}, {"LC_ALL": "C", "LANG": "ja_JP.UTF-8"}], ids=["C", "unset", "LC_ALL"])
def test_dispatch_error_in_english_without_japanese_locale(locale):
    environment = dict(ADD_ENVIRONMENT, CNI_CONTAINERID="-web", **locale)

    stdout, code = dispatch.execute(environment, CONFIG)

    document = json.loads(stdout)
    assert code == 1
    assert document["msg"] == "CNI_CONTAINERID '-web' is invalid"
    assert document["details"].startswith("it must be non-empty")


def test_dispatch_error_carries_config_version():
    environment = dict(ADD_ENVIRONMENT, CNI_CONTAINERID="")
    config = json.dumps({"cniVersion": "0.4.0", "name": "flatnet", "hostId": 1}).encode()

    stdout, code = dispatch.execute(environment, config)

    assert code == 1
    assert json.loads(stdout)["cniVersion"] == "0.4.0"
    assert json.loads(stdout)["code"] == spec.INVALID_ENVIRONMENT


def test_error_document_escapes_any_text():
    details = 'quote " backslash \\ newline \n accent é'

    document = json.loads(launcher.error_document({"cniVersion": "1.0.0"}, 999, "failed", details))

    assert document == {"cniVersion": "1.0.0", "code": 999, "msg": "failed", "details": details}


def test_launcher_failure_prints_one_cni_error(tmp_path):
    launcher_dir = str(Path(launcher.__file__).parent)
    probe = (
        "import sys\n"
        f"sys.path.insert(0, {launcher_dir!r})\n"
        "import launcher\n"
        "launcher.respond = lambda *arguments: 1 / 0\n"
        "launcher.main()\n"
    )

    completed = subprocess.run(
        [sys.executable, "-SI", "-c", probe], input=b'{"cniVersion": "0.4.0"}', capture_output=True, env={"CNI_COMMAND": "ADD"},
    )

    assert completed.returncode == 1
    assert json.loads(completed.stdout) == {
        "cniVersion": "0.4.0", "code": 999, "msg": "the flatnet plugin failed", "details": "ZeroDivisionError: division by zero",
    }
    assert b"ZeroDivisionError" in completed.stderr


def test_launcher_failure_follows_japanese_locale():
    launcher_dir = str(Path(launcher.__file__).parent)
    probe = (
        "import sys\n"
        f"sys.path.insert(0, {launcher_dir!r})\n"
        "import launcher\n"
        "launcher.respond = lambda *arguments: 1 / 0\n"
        "launcher.main()\n"
    )

    completed = subprocess.run(
        [sys.executable, "-SI", "-c", probe], input=b'{"cniVersion": "1.0.0"}', capture_output=True,
        env={"CNI_COMMAND": "ADD", "LANG": "ja_JP.UTF-8"},
    )

    assert completed.returncode == 1
    assert json.loads(completed.stdout)["msg"] == "flatnet プラグインが失敗しました"
