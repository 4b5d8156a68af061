"""The CNI protocol: environment and stdin in, a result or an error out.

Exactly one JSON document, or none, goes to stdout, whatever happens;
diagnostics go to the log file under ``dataDir`` or to stderr. This module uses
only the standard library and flatnet.i18n, so that errors found before any
network work cost no pyroute2 import.

podman prints an error's ``msg`` and ``details`` to the person who ran it, so
both come from the message catalog, in the language of the plugin process's
locale (see :meth:`CniError.as_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from flatnet import i18n
from flatnet.cni import launcher
from flatnet.cni.launcher import FAULT_VARIABLE, SUPPORTED_VERSIONS, decode_config, version_document
from flatnet.i18n import Message

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
# The first config version in which the specification defines each command;
# the reference plugins' skel rejects older configs with code 1, as this does.
FIRST_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
CONTAINER_COMMANDS = ("ADD", "DEL", "CHECK")

# Error codes from the CNI specification; 100 and up are this plugin's own.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
ADDRESSES_EXHAUSTED = 100
ADDRESS_UNAVAILABLE = 101
NETLINK_FAILURE = 102
INTERFACE_EXISTS = 103
CHECK_FAILED = 104
INTERNAL_FAILURE = 999

_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

# The launcher's own errors, which it formats without this module.
i18n.define(launcher.MESSAGES)
i18n.define({
    "cni.args_entry_invalid": ("invalid CNI_ARGS entry {entry!r}", "CNI_ARGS の項目 {entry!r} が不正です"),
    "cni.args_rule": (
        "CNI_ARGS must be 'KEY=VALUE' pairs separated by ';', e.g. 'IgnoreUnknown=1;K8S_POD_NAME=web'",
        "CNI_ARGS は ';' で区切った 'KEY=VALUE' の組にしてください（例: 'IgnoreUnknown=1;K8S_POD_NAME=web'）",
    ),
    "cni.config_not_json": ("network config on stdin is not valid JSON", "標準入力のネットワーク設定が正しい JSON ではありません"),
    "cni.config_not_object": (
        "network config on stdin is a JSON {kind}, expected an object",
        "標準入力のネットワーク設定が JSON の {kind} です。オブジェクトにしてください",
    ),
    "cni.version_unsupported": ("cniVersion {version!r} is not supported", "cniVersion {version!r} には対応していません"),
    "cni.version_supported": ("supported versions: {versions}", "対応しているバージョン: {versions}"),
    "cni.name_invalid": (
        "invalid network config: name {name!r} is not a network name",
        "ネットワーク設定が不正です: name {name!r} はネットワーク名ではありません",
    ),
    "cni.name_rule": (
        "it must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
        "英字か数字で始まり、英字・数字・'_'・'.'・'-' だけを含む名前にしてください",
    ),
    "cni.command_unsupported": ("CNI_COMMAND {command!r} is not supported", "CNI_COMMAND {command!r} には対応していません"),
    "cni.command_expected": ("expected one of {commands}", "{commands} のいずれかを指定してください"),
    "cni.command_too_new": (
        "config version {version} does not allow {command}",
        "設定のバージョン {version} では {command} を実行できません",
    ),
    "cni.command_first_version": ("{command} needs cniVersion {first} or later", "{command} には cniVersion {first} 以降が必要です"),
    "cni.container_id_invalid": ("CNI_CONTAINERID {container_id!r} is invalid", "CNI_CONTAINERID {container_id!r} が不正です"),
    "cni.container_id_rule": (
        "it must be non-empty, start with a letter or digit, and contain only letters, digits, '_', '.' and '-'",
        "空でなく、英字か数字で始まり、英字・数字・'_'・'.'・'-' だけを含む ID にしてください",
    ),
    "cni.ifname_invalid": ("CNI_IFNAME {ifname!r} is invalid", "CNI_IFNAME {ifname!r} が不正です"),
    "cni.ifname_rule": (
        "it must be a Linux interface name of 1 to 15 characters without '/' or spaces",
        "'/' や空白を含まない 1〜15 文字の Linux インターフェース名にしてください",
    ),
    "cni.netns_missing": ("CNI_NETNS is required for {command}", "{command} には CNI_NETNS が必要です"),
    "cni.netns_hint": ("set it to the container's netns path", "コンテナーのネットワーク名前空間のパスを設定してください"),
    "cni.internal_error": ("internal error: {error}", "内部エラー: {error}"),
})


class CniError(Exception):
    """An error reported to the runtime as a CNI error object.

    ``message`` and ``detail`` are catalog messages, formatted when the error
    object is built. A ``detail`` that is a plain string is text from other
    code (a JSON decoder's or an exception's message) and is passed on as it is.
    """

    def __init__(self, code: int, message: Message, detail: Message | str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail

    @property
    def msg(self) -> str:
        """The English ``msg``, for logs."""
        return str(self.message)

    @property
    def details(self) -> str:
        """The English ``details`` (empty when there are none), for logs."""
        return str(self.detail)

    def as_dict(self, cni_version: str, *, japanese: bool = False) -> dict[str, Any]:
        """Return the CNI error object, with ``msg`` and ``details`` in Japanese or English."""
        error: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.message.render(japanese)}
        if self.detail:
            error["details"] = self.detail.render(japanese) if isinstance(self.detail, Message) else self.detail
        return error


@dataclasses.dataclass(frozen=True)
class Request:
    """One plugin invocation: the CNI environment plus the network config."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    config: dict[str, Any]
    # Fault injection points for the crash tests; see flatnet.cni.faults.
    fault: str = ""

    @property
    def cni_version(self) -> str:
        return self.config.get("cniVersion", "1.0.0")

    @property
    def runtime_config(self) -> dict[str, Any]:
        runtime = self.config.get("runtimeConfig")
        return runtime if isinstance(runtime, dict) else {}


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def parse_cni_args(raw: str) -> dict[str, str]:
    """Parse ``CNI_ARGS`` (``K=V;K2=V2``); unknown keys are kept, never rejected."""
    args: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise CniError(INVALID_ENVIRONMENT, Message("cni.args_entry_invalid", entry=pair), Message("cni.args_rule"))
        args[key] = value
    return args


def parse_config(stdin: bytes) -> dict[str, Any]:
    """Decode the network config from stdin and check its version."""
    try:
        config = json.loads(stdin)
    except ValueError as error:
        raise CniError(DECODE_FAILURE, Message("cni.config_not_json"), str(error)) from None
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, Message("cni.config_not_object", kind=type(config).__name__))

    version = config.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            Message("cni.version_unsupported", version=version),
            Message("cni.version_supported", versions=", ".join(SUPPORTED_VERSIONS)),
        )
    name = config.get("name")
    if not isinstance(name, str) or not _NETWORK_NAME.match(name):
        raise CniError(INVALID_NETWORK_CONFIG, Message("cni.name_invalid", name=name), Message("cni.name_rule"))
    return config


def error_version(stdin: bytes) -> str:
    """The cniVersion to put on an error: the config's if it is supported, else 1.0.0."""
    try:
        version = json.loads(stdin).get("cniVersion")
    except (ValueError, AttributeError):
        return "1.0.0"
    return version if version in SUPPORTED_VERSIONS else "1.0.0"


def parse_request(environ: dict[str, str], stdin: bytes) -> Request:
    """Build a Request from the environment and stdin, validating what the command needs."""
    command = environ.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(
            INVALID_ENVIRONMENT,
            Message("cni.command_unsupported", command=command),
            Message("cni.command_expected", commands=", ".join(COMMANDS)),
        )
    if command == "VERSION":
        # VERSION answers whatever stdin holds, as the reference plugins do.
        return Request(command, "", "", "", {}, decode_config(stdin) or {})
    config = parse_config(stdin)
    first = FIRST_VERSION.get(command)
    if first is not None and version_tuple(config["cniVersion"]) < version_tuple(first):
        raise CniError(
            INCOMPATIBLE_VERSION,
            Message("cni.command_too_new", version=config["cniVersion"], command=command),
            Message("cni.command_first_version", command=command, first=first),
        )

    container_id = environ.get("CNI_CONTAINERID", "")
    netns = environ.get("CNI_NETNS", "")
    ifname = environ.get("CNI_IFNAME", "")
    if command in CONTAINER_COMMANDS:
        if not _CONTAINER_ID.match(container_id):
            raise CniError(
                INVALID_ENVIRONMENT, Message("cni.container_id_invalid", container_id=container_id), Message("cni.container_id_rule")
            )
        if not ifname or len(ifname) > 15 or "/" in ifname or ifname in (".", "..") or any(c.isspace() for c in ifname):
            raise CniError(INVALID_ENVIRONMENT, Message("cni.ifname_invalid", ifname=ifname), Message("cni.ifname_rule"))
        if command in ("ADD", "CHECK") and not netns:
            raise CniError(INVALID_ENVIRONMENT, Message("cni.netns_missing", command=command), Message("cni.netns_hint"))

    args = parse_cni_args(environ.get("CNI_ARGS", ""))
    fault = environ.get(FAULT_VARIABLE.decode(), "")
    return Request(command, container_id, netns, ifname, args, config, fault)


def version_result(config: dict[str, Any]) -> dict[str, Any]:
    """The VERSION result for ``config``, as flatnet.cni.launcher answers it."""
    return json.loads(version_document(config))


def shape_result(cni_version: str, result: dict[str, Any]) -> dict[str, Any]:
    """Return ``result`` (in 1.0.0 form) in the shape of ``cni_version``.

    Versions before 1.0.0 carry ``version`` on each IP entry; 1.1.0 adds only
    optional fields to the 1.0.0 shape.
    """
    shaped = {"cniVersion": cni_version, **result}
    if version_tuple(cni_version) < (1, 0, 0):
        shaped["ips"] = [dict(ip, version="4") for ip in result.get("ips", [])]
    return shaped


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()
