"""What the runtime asks for beyond the network config, read and validated before any change.

ADD reads the requested address and MAC (``CNI_ARGS`` ``IP=``/``MAC=``, the
``ips``/``mac`` capabilities, or ``args.cni``), the container's name, its port
mappings and its aliases. CHECK reads the previous result; GC the list of
valid attachments. Every rule names the key, the value and what is valid.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any

from flatnet.cni.config import NetConf
from flatnet.cni.spec import ADDRESS_UNAVAILABLE, INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG, CniError, Request
from flatnet.events.record import CONTAINER_NAME

_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_NAME_RULE = "letters, digits, '_', '.' and '-', starting with a letter or digit, at most 253 characters"
_PROTOCOLS = ("tcp", "udp", "sctp")
GC_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")


@dataclasses.dataclass(frozen=True)
class Attachment:
    """The address, MAC and names ADD gives the container besides the defaults."""

    address: ipaddress.IPv4Address | None
    mac: str | None
    hostname: str
    ports: list[int]
    aliases: list[str]


@dataclasses.dataclass(frozen=True)
class Expected:
    """The attachment an earlier ADD reported in its result, for CHECK."""

    address: ipaddress.IPv4Interface
    mac: str
    host_veth: str


def from_request(request: Request, conf: NetConf) -> Attachment:
    return Attachment(
        address=_requested_address(request, conf),
        mac=_requested_mac(request),
        hostname=_hostname(request),
        ports=_container_ports(request),
        aliases=_aliases(request, conf),
    )


def _hostname(request: Request) -> str:
    name = request.args.get("K8S_POD_NAME") or request.container_id[:12]
    if not CONTAINER_NAME.fullmatch(name):
        raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS K8S_POD_NAME {name!r} is not a container name", f"a name has {_NAME_RULE}")
    return name


def _args_cni(request: Request) -> dict[str, Any]:
    args = request.config.get("args")
    cni = args.get("cni") if isinstance(args, dict) else None
    return cni if isinstance(cni, dict) else {}


def _requested_address(request: Request, conf: NetConf) -> ipaddress.IPv4Address | None:
    candidates: list[tuple[str, object]] = []
    if request.args.get("IP"):
        candidates.append(("CNI_ARGS IP", request.args["IP"]))
    for key, source in (("runtimeConfig.ips", request.runtime_config.get("ips")), ("args.cni.ips", _args_cni(request).get("ips"))):
        if source is None:
            continue
        if not isinstance(source, list):
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid network config: {key} {source!r} must be a list of addresses")
        candidates += [(key, value) for value in source]

    addresses = {_parse_address(key, value, conf) for key, value in candidates}
    if len(addresses) > 1:
        raise CniError(
            ADDRESS_UNAVAILABLE,
            f"requested addresses {', '.join(sorted(map(str, addresses)))} are more than one",
            "flatnet gives one IPv4 address per interface; ask for one with IP= or --ip",
        )
    return addresses.pop() if addresses else None


def _parse_address(key: str, value: object, conf: NetConf) -> ipaddress.IPv4Address:
    code = INVALID_ENVIRONMENT if key.startswith("CNI_ARGS") else INVALID_NETWORK_CONFIG
    try:
        interface = ipaddress.IPv4Interface(value)
    except (ValueError, TypeError):
        raise CniError(code, f"{key} {value!r} is not an IPv4 address", f"give one like '{conf.range_start}'") from None
    if "/" in str(value) and interface.network.prefixlen != conf.subnet.prefixlen:
        raise CniError(code, f"{key} {value!r} has prefix /{interface.network.prefixlen}, not /{conf.subnet.prefixlen} of {conf.subnet}")
    return interface.ip


def _requested_mac(request: Request) -> str | None:
    candidates = [
        (key, value)
        for key, value in (
            ("CNI_ARGS MAC", request.args.get("MAC") or None),
            ("runtimeConfig.mac", request.runtime_config.get("mac")),
            ("args.cni.mac", _args_cni(request).get("mac")),
        )
        if value is not None
    ]
    macs = set()
    for key, value in candidates:
        code = INVALID_ENVIRONMENT if key.startswith("CNI_ARGS") else INVALID_NETWORK_CONFIG
        if not isinstance(value, str) or not _MAC.match(value):
            raise CniError(code, f"{key} {value!r} is not a MAC address", "give six hex pairs like '02:42:ac:11:00:02'")
        if int(value[:2], 16) & 1 or value.replace(":", "").strip("0") == "":
            raise CniError(code, f"{key} {value!r} is a multicast or zero MAC address", "a container needs a unicast MAC, with the lowest bit of the first byte 0")
        macs.add(value.lower())
    if len(macs) > 1:
        raise CniError(INVALID_ENVIRONMENT, f"requested MAC addresses {', '.join(sorted(macs))} differ", "ask for one MAC address")
    return macs.pop() if macs else None


def _container_ports(request: Request) -> list[int]:
    """Return the TCP container ports of the ``portMappings`` capability, which the registry keeps for the HTTP proxy."""
    mappings = request.runtime_config.get("portMappings", [])
    if not isinstance(mappings, list):
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid network config: runtimeConfig.portMappings {mappings!r} must be a list")
    ports = set()
    for position, mapping in enumerate(mappings):
        key = f"runtimeConfig.portMappings[{position}]"
        if not isinstance(mapping, dict):
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid network config: {key} {mapping!r} must be an object")
        port = mapping.get("containerPort")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid network config: {key}.containerPort {port!r} must be a port from 1 to 65535")
        protocol = mapping.get("protocol", "tcp")
        if not isinstance(protocol, str) or protocol.lower() not in _PROTOCOLS:
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid network config: {key}.protocol {protocol!r} must be one of {', '.join(_PROTOCOLS)}")
        if protocol.lower() == "tcp":
            ports.add(port)
    return sorted(ports)


def _aliases(request: Request, conf: NetConf) -> list[str]:
    """Extra names of the container: podman sends a map keyed by network name, CNI's conventions a list."""
    raw = request.runtime_config.get("aliases", [])
    if isinstance(raw, dict):
        raw = raw.get(conf.name, [])
    if not isinstance(raw, list):
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid network config: runtimeConfig.aliases for network {conf.name!r} must be a list of names, got {raw!r}")
    aliases = []
    for alias in raw:
        if not isinstance(alias, str) or not CONTAINER_NAME.fullmatch(alias):
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid network config: alias {alias!r} is not a container name", f"a name has {_NAME_RULE}")
        if alias.lower() not in aliases:
            aliases.append(alias.lower())
    return aliases


def from_previous_result(request: Request, conf: NetConf) -> Expected:
    """Return the container's interface and address from ``prevResult``, as an earlier ADD of flatnet reported them."""
    previous = request.config.get("prevResult")
    if not isinstance(previous, dict):
        raise CniError(INVALID_NETWORK_CONFIG, "invalid network config: CHECK needs prevResult, the result of the ADD", f"got {previous!r}")
    interfaces = previous.get("interfaces")
    ips = previous.get("ips")
    if not isinstance(interfaces, list) or not isinstance(ips, list):
        raise CniError(INVALID_NETWORK_CONFIG, "invalid network config: prevResult has no interfaces or ips list")

    position = next(
        (
            index for index, interface in enumerate(interfaces)
            if isinstance(interface, dict) and interface.get("name") == request.ifname and interface.get("sandbox") == request.netns
        ),
        None,
    )
    if position is None:
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid network config: prevResult lists no interface {request.ifname} in {request.netns}")
    addresses = [ip.get("address") for ip in ips if isinstance(ip, dict) and ip.get("interface") == position]
    if len(addresses) != 1:
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid network config: prevResult gives {request.ifname} {len(addresses)} addresses, flatnet gives one")
    try:
        address = ipaddress.IPv4Interface(addresses[0])
    except (ValueError, TypeError):
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid network config: prevResult address {addresses[0]!r} is not an IPv4 address") from None

    host_veths = [
        interface.get("name") for interface in interfaces
        if isinstance(interface, dict) and not interface.get("sandbox") and interface.get("name") != conf.bridge
    ]
    mac = interfaces[position].get("mac")
    return Expected(address, mac if isinstance(mac, str) else "", host_veths[0] if len(host_veths) == 1 else "")


def valid_attachments(config: dict[str, Any]) -> set[tuple[str, str]]:
    """The (containerID, ifname) pairs GC must keep, from the newer key or the 1.1.0 one."""
    key = next((key for key in GC_KEYS if key in config), None)
    if key is None:
        raise CniError(
            INVALID_NETWORK_CONFIG,
            f"invalid network config: GC needs {GC_KEYS[0]}, the list of attachments still in use",
            "without it every reservation would be freed; send an empty list to free them all",
        )
    entries = config[key]
    if not isinstance(entries, list):
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid network config: {key} {entries!r} must be a list")
    valid = set()
    for position, entry in enumerate(entries):
        container_id = entry.get("containerID") if isinstance(entry, dict) else None
        ifname = entry.get("ifname") if isinstance(entry, dict) else None
        if not isinstance(container_id, str) or not isinstance(ifname, str) or not container_id or not ifname:
            raise CniError(
                INVALID_NETWORK_CONFIG,
                f"invalid network config: {key}[{position}] {entry!r} must be an object with containerID and ifname",
            )
        valid.add((container_id, ifname))
    return valid
