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

from flatnet import i18n
from flatnet.cni.config import NetConf
from flatnet.cni.spec import ADDRESS_UNAVAILABLE, INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG, CniError, Request
from flatnet.events.record import CONTAINER_NAME
from flatnet.i18n import Message

_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_PROTOCOLS = ("tcp", "udp", "sctp")
GC_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")

i18n.define({
    "cni.wanted.name_rule": (
        "a name has letters, digits, '_', '.' and '-', starting with a letter or digit, at most 253 characters",
        "名前は英字か数字で始まり、英字・数字・'_'・'.'・'-' からなる 253 文字以内の文字列です",
    ),
    "cni.wanted.pod_name_invalid": (
        "CNI_ARGS K8S_POD_NAME {name!r} is not a container name",
        "CNI_ARGS K8S_POD_NAME {name!r} はコンテナー名ではありません",
    ),
    "cni.wanted.addresses_not_list": (
        "invalid network config: {key} {value!r} must be a list of addresses",
        "ネットワーク設定が不正です: {key} {value!r} はアドレスのリストにしてください",
    ),
    "cni.wanted.several_addresses": (
        "requested addresses {addresses} are more than one",
        "要求されたアドレス {addresses} が複数あります",
    ),
    "cni.wanted.one_address_hint": (
        "flatnet gives one IPv4 address per interface; ask for one with IP= or --ip",
        "flatnet はインターフェースごとに IPv4 アドレスを 1 つ割り当てます。IP= か --ip で 1 つだけ要求してください",
    ),
    "cni.wanted.not_ipv4": ("{key} {value!r} is not an IPv4 address", "{key} {value!r} は IPv4 アドレスではありません"),
    "cni.wanted.ipv4_example": ("give one like '{example}'", "'{example}' のように指定してください"),
    "cni.wanted.other_prefix": (
        "{key} {value!r} has prefix /{prefix}, not /{subnet_prefix} of {subnet}",
        "{key} {value!r} のプレフィックスは /{prefix} で、{subnet} の /{subnet_prefix} ではありません",
    ),
    "cni.wanted.not_mac": ("{key} {value!r} is not a MAC address", "{key} {value!r} は MAC アドレスではありません"),
    "cni.wanted.mac_example": (
        "give six hex pairs like '02:42:ac:11:00:02'",
        "'02:42:ac:11:00:02' のように 16 進数 2 桁を 6 組指定してください",
    ),
    "cni.wanted.mac_not_unicast": (
        "{key} {value!r} is a multicast or zero MAC address",
        "{key} {value!r} はマルチキャストかゼロの MAC アドレスです",
    ),
    "cni.wanted.mac_unicast_hint": (
        "a container needs a unicast MAC, with the lowest bit of the first byte 0",
        "コンテナーにはユニキャストの MAC（先頭バイトの最下位ビットが 0）が必要です",
    ),
    "cni.wanted.macs_differ": ("requested MAC addresses {macs} differ", "要求された MAC アドレス {macs} が一致しません"),
    "cni.wanted.one_mac_hint": ("ask for one MAC address", "MAC アドレスは 1 つだけ要求してください"),
    "cni.wanted.port_mappings_not_list": (
        "invalid network config: runtimeConfig.portMappings {value!r} must be a list",
        "ネットワーク設定が不正です: runtimeConfig.portMappings {value!r} はリストにしてください",
    ),
    "cni.wanted.port_mapping_not_object": (
        "invalid network config: {key} {value!r} must be an object",
        "ネットワーク設定が不正です: {key} {value!r} はオブジェクトにしてください",
    ),
    "cni.wanted.container_port_invalid": (
        "invalid network config: {key}.containerPort {value!r} must be a port from 1 to 65535",
        "ネットワーク設定が不正です: {key}.containerPort {value!r} は 1 から 65535 までのポートにしてください",
    ),
    "cni.wanted.protocol_invalid": (
        "invalid network config: {key}.protocol {value!r} must be one of {protocols}",
        "ネットワーク設定が不正です: {key}.protocol {value!r} は {protocols} のいずれかにしてください",
    ),
    "cni.wanted.aliases_not_list": (
        "invalid aliases from podman: runtimeConfig.aliases for network {network!r} (podman run --network-alias)"
        " must be a list of names, got {value!r}",
        "podman から渡されたエイリアスが不正です: ネットワーク {network!r} の runtimeConfig.aliases"
        "（podman run --network-alias）は名前のリストにしてください（実際は {value!r}）",
    ),
    "cni.wanted.alias_invalid": (
        "invalid alias from podman: {alias!r}, given with podman run --network-alias (runtimeConfig.aliases),"
        " is not a container name",
        "podman から渡されたエイリアスが不正です: podman run --network-alias で指定された {alias!r}"
        "（runtimeConfig.aliases）はコンテナー名ではありません",
    ),
    "cni.wanted.prev_result_missing": (
        "invalid network config: CHECK needs prevResult, the result of the ADD",
        "ネットワーク設定が不正です: CHECK には ADD の結果である prevResult が必要です",
    ),
    "cni.wanted.got": ("got {value!r}", "実際の値: {value!r}"),
    "cni.wanted.prev_result_lists_missing": (
        "invalid network config: prevResult has no interfaces or ips list",
        "ネットワーク設定が不正です: prevResult に interfaces か ips のリストがありません",
    ),
    "cni.wanted.prev_result_no_interface": (
        "invalid network config: prevResult lists no interface {ifname} in {netns}",
        "ネットワーク設定が不正です: prevResult に {netns} のインターフェース {ifname} がありません",
    ),
    "cni.wanted.prev_result_address_count": (
        "invalid network config: prevResult gives {ifname} {count} addresses, flatnet gives one",
        "ネットワーク設定が不正です: prevResult では {ifname} のアドレスが {count} 個ですが、flatnet が割り当てるのは 1 つです",
    ),
    "cni.wanted.prev_result_not_ipv4": (
        "invalid network config: prevResult address {value!r} is not an IPv4 address",
        "ネットワーク設定が不正です: prevResult のアドレス {value!r} は IPv4 アドレスではありません",
    ),
    "cni.wanted.gc_list_missing": (
        "invalid network config: GC needs {key}, the list of attachments still in use",
        "ネットワーク設定が不正です: GC には使用中のアタッチメントのリスト {key} が必要です",
    ),
    "cni.wanted.gc_list_hint": (
        "without it every reservation would be freed; send an empty list to free them all",
        "これがないとすべての予約が解放されてしまいます。すべて解放するには空のリストを送ってください",
    ),
    "cni.wanted.gc_list_not_list": (
        "invalid network config: {key} {value!r} must be a list",
        "ネットワーク設定が不正です: {key} {value!r} はリストにしてください",
    ),
    "cni.wanted.gc_entry_invalid": (
        "invalid network config: {key}[{position}] {value!r} must be an object with containerID and ifname",
        "ネットワーク設定が不正です: {key}[{position}] {value!r} は containerID と ifname を持つオブジェクトにしてください",
    ),
})


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
        raise CniError(INVALID_ENVIRONMENT, Message("cni.wanted.pod_name_invalid", name=name), Message("cni.wanted.name_rule"))
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
            raise CniError(INVALID_NETWORK_CONFIG, Message("cni.wanted.addresses_not_list", key=key, value=source))
        candidates += [(key, value) for value in source]

    addresses = {_parse_address(key, value, conf) for key, value in candidates}
    if len(addresses) > 1:
        raise CniError(
            ADDRESS_UNAVAILABLE,
            Message("cni.wanted.several_addresses", addresses=", ".join(sorted(map(str, addresses)))),
            Message("cni.wanted.one_address_hint"),
        )
    return addresses.pop() if addresses else None


def _parse_address(key: str, value: object, conf: NetConf) -> ipaddress.IPv4Address:
    code = INVALID_ENVIRONMENT if key.startswith("CNI_ARGS") else INVALID_NETWORK_CONFIG
    try:
        interface = ipaddress.IPv4Interface(value)
    except (ValueError, TypeError):
        raise CniError(
            code, Message("cni.wanted.not_ipv4", key=key, value=value), Message("cni.wanted.ipv4_example", example=conf.range_start)
        ) from None
    if "/" in str(value) and interface.network.prefixlen != conf.subnet.prefixlen:
        raise CniError(code, Message(
            "cni.wanted.other_prefix", key=key, value=value, prefix=interface.network.prefixlen,
            subnet_prefix=conf.subnet.prefixlen, subnet=conf.subnet,
        ))
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
            raise CniError(code, Message("cni.wanted.not_mac", key=key, value=value), Message("cni.wanted.mac_example"))
        if int(value[:2], 16) & 1 or value.replace(":", "").strip("0") == "":
            raise CniError(code, Message("cni.wanted.mac_not_unicast", key=key, value=value), Message("cni.wanted.mac_unicast_hint"))
        macs.add(value.lower())
    if len(macs) > 1:
        raise CniError(
            INVALID_ENVIRONMENT, Message("cni.wanted.macs_differ", macs=", ".join(sorted(macs))), Message("cni.wanted.one_mac_hint")
        )
    return macs.pop() if macs else None


def _container_ports(request: Request) -> list[int]:
    """Return the TCP container ports of the ``portMappings`` capability, which the registry keeps for the HTTP proxy."""
    mappings = request.runtime_config.get("portMappings", [])
    if not isinstance(mappings, list):
        raise CniError(INVALID_NETWORK_CONFIG, Message("cni.wanted.port_mappings_not_list", value=mappings))
    ports = set()
    for position, mapping in enumerate(mappings):
        key = f"runtimeConfig.portMappings[{position}]"
        if not isinstance(mapping, dict):
            raise CniError(INVALID_NETWORK_CONFIG, Message("cni.wanted.port_mapping_not_object", key=key, value=mapping))
        port = mapping.get("containerPort")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise CniError(INVALID_NETWORK_CONFIG, Message("cni.wanted.container_port_invalid", key=key, value=port))
        protocol = mapping.get("protocol", "tcp")
        if not isinstance(protocol, str) or protocol.lower() not in _PROTOCOLS:
            raise CniError(INVALID_NETWORK_CONFIG, Message(
                "cni.wanted.protocol_invalid", key=key, value=protocol, protocols=", ".join(_PROTOCOLS)
            ))
        if protocol.lower() == "tcp":
            ports.add(port)
    return sorted(ports)


def _aliases(request: Request, conf: NetConf) -> list[str]:
    """Extra names of the container: podman sends a map keyed by network name, CNI's conventions a list."""
    raw = request.runtime_config.get("aliases", [])
    if isinstance(raw, dict):
        raw = raw.get(conf.name, [])
    if not isinstance(raw, list):
        raise CniError(INVALID_NETWORK_CONFIG, Message("cni.wanted.aliases_not_list", network=conf.name, value=raw))
    aliases = []
    for alias in raw:
        if not isinstance(alias, str) or not CONTAINER_NAME.fullmatch(alias):
            raise CniError(INVALID_NETWORK_CONFIG, Message("cni.wanted.alias_invalid", alias=alias), Message("cni.wanted.name_rule"))
        if alias.lower() not in aliases:
            aliases.append(alias.lower())
    return aliases


def from_previous_result(request: Request, conf: NetConf) -> Expected:
    """Return the container's interface and address from ``prevResult``, as an earlier ADD of flatnet reported them."""
    previous = request.config.get("prevResult")
    if not isinstance(previous, dict):
        raise CniError(INVALID_NETWORK_CONFIG, Message("cni.wanted.prev_result_missing"), Message("cni.wanted.got", value=previous))
    interfaces = previous.get("interfaces")
    ips = previous.get("ips")
    if not isinstance(interfaces, list) or not isinstance(ips, list):
        raise CniError(INVALID_NETWORK_CONFIG, Message("cni.wanted.prev_result_lists_missing"))

    position = next(
        (
            index for index, interface in enumerate(interfaces)
            if isinstance(interface, dict) and interface.get("name") == request.ifname and interface.get("sandbox") == request.netns
        ),
        None,
    )
    if position is None:
        raise CniError(INVALID_NETWORK_CONFIG, Message("cni.wanted.prev_result_no_interface", ifname=request.ifname, netns=request.netns))
    addresses = [ip.get("address") for ip in ips if isinstance(ip, dict) and ip.get("interface") == position]
    if len(addresses) != 1:
        raise CniError(INVALID_NETWORK_CONFIG, Message("cni.wanted.prev_result_address_count", ifname=request.ifname, count=len(addresses)))
    try:
        address = ipaddress.IPv4Interface(addresses[0])
    except (ValueError, TypeError):
        raise CniError(INVALID_NETWORK_CONFIG, Message("cni.wanted.prev_result_not_ipv4", value=addresses[0])) from None

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
            INVALID_NETWORK_CONFIG, Message("cni.wanted.gc_list_missing", key=GC_KEYS[0]), Message("cni.wanted.gc_list_hint")
        )
    entries = config[key]
    if not isinstance(entries, list):
        raise CniError(INVALID_NETWORK_CONFIG, Message("cni.wanted.gc_list_not_list", key=key, value=entries))
    valid = set()
    for position, entry in enumerate(entries):
        container_id = entry.get("containerID") if isinstance(entry, dict) else None
        ifname = entry.get("ifname") if isinstance(entry, dict) else None
        if not isinstance(container_id, str) or not isinstance(ifname, str) or not container_id or not ifname:
            raise CniError(
                INVALID_NETWORK_CONFIG, Message("cni.wanted.gc_entry_invalid", key=key, position=position, value=entry)
            )
        valid.add((container_id, ifname))
    return valid
