"""The CNI protocol: environment and stdin in, a result or an error out.

Exactly one JSON document, or none, goes to stdout, whatever happens;
diagnostics go to the log file under ``dataDir`` or to stderr. This module uses
only the standard library, so that errors found before any network work cost
no pyroute2 import.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from flatnet.cni.launcher import FAULT_VARIABLE, SUPPORTED_VERSIONS, decode_config, version_document

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


class CniError(Exception):
    """An error reported to the runtime as a CNI error object."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def as_dict(self, cni_version: str) -> dict[str, Any]:
        error: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            error["details"] = self.details
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
            raise CniError(
                INVALID_ENVIRONMENT,
                f"invalid CNI_ARGS entry {pair!r}",
                "CNI_ARGS must be 'KEY=VALUE' pairs separated by ';', e.g. 'IgnoreUnknown=1;K8S_POD_NAME=web'",
            )
        args[key] = value
    return args


def parse_config(stdin: bytes) -> dict[str, Any]:
    """Decode the network config from stdin and check its version."""
    try:
        config = json.loads(stdin)
    except ValueError as error:
        raise CniError(DECODE_FAILURE, "network config on stdin is not valid JSON", str(error)) from None
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, f"network config on stdin is a JSON {type(config).__name__}, expected an object")

    version = config.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"cniVersion {version!r} is not supported",
            f"supported versions: {', '.join(SUPPORTED_VERSIONS)}",
        )
    name = config.get("name")
    if not isinstance(name, str) or not _NETWORK_NAME.match(name):
        raise CniError(
            INVALID_NETWORK_CONFIG,
            f"invalid network config: name {name!r} is not a network name",
            "it must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
        )
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
            f"CNI_COMMAND {command!r} is not supported",
            f"expected one of {', '.join(COMMANDS)}",
        )
    if command == "VERSION":
        # VERSION answers whatever stdin holds, as the reference plugins do.
        return Request(command, "", "", "", {}, decode_config(stdin) or {})
    config = parse_config(stdin)
    first = FIRST_VERSION.get(command)
    if first is not None and version_tuple(config["cniVersion"]) < version_tuple(first):
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"config version {config['cniVersion']} does not allow {command}",
            f"{command} needs cniVersion {first} or later",
        )

    container_id = environ.get("CNI_CONTAINERID", "")
    netns = environ.get("CNI_NETNS", "")
    ifname = environ.get("CNI_IFNAME", "")
    if command in CONTAINER_COMMANDS:
        if not _CONTAINER_ID.match(container_id):
            raise CniError(
                INVALID_ENVIRONMENT,
                f"CNI_CONTAINERID {container_id!r} is invalid",
                "it must be non-empty, start with a letter or digit, and contain only letters, digits, '_', '.' and '-'",
            )
        if not ifname or len(ifname) > 15 or "/" in ifname or ifname in (".", "..") or any(c.isspace() for c in ifname):
            raise CniError(
                INVALID_ENVIRONMENT,
                f"CNI_IFNAME {ifname!r} is invalid",
                "it must be a Linux interface name of 1 to 15 characters without '/' or spaces",
            )
        if command in ("ADD", "CHECK") and not netns:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_NETNS is required for {command}", "set it to the container's netns path")

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
