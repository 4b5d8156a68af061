"""The flatnet network config (the plugin's object in the conflist) and its validation.

Every rule names the key, the value it got and what would be valid, as a CNI
error with code 7 (invalid network config), in English or Japanese.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flatnet import i18n
from flatnet.cni.launcher import DEFAULT_DATA_DIR, SOCKET_NAME
from flatnet.cni.spec import INVALID_NETWORK_CONFIG, CniError
from flatnet.cni.store import RELEASE_MEMORY_SECONDS
from flatnet.i18n import Message

DEFAULT_BRIDGE = "flatnet0"
# Nebula's default tun MTU: container traffic crosses the overlay unfragmented.
DEFAULT_MTU = 1300
FIRST_CONTAINER_HOST = 10
# The registry's default ttl: peers may route to a released address from a
# stale cache for that long, so it is not handed out again sooner.
DEFAULT_REUSE_DELAY_SECONDS = 300.0
MAX_REUSE_DELAY_SECONDS = RELEASE_MEMORY_SECONDS
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")

i18n.define({
    "cni.config.invalid": ("invalid network config: {key} {value!r}: {rule}", "ネットワーク設定が不正です: {key} {value!r}: {rule}"),
    "cni.config.ip_range_mismatch": (
        "invalid network config: ipRange {ip_range!r} does not match hostId {host_id}",
        "ネットワーク設定が不正です: ipRange {ip_range!r} が hostId {host_id} と合いません",
    ),
    "cni.config.ip_range_hint": (
        "host {host_id} owns {expected}; set ipRange to {expected!r} or fix hostId",
        "ホスト {host_id} の範囲は {expected} です。ipRange を {expected!r} にするか、hostId を直してください",
    ),
    "cni.config.missing": ("invalid network config: {key} is missing", "ネットワーク設定が不正です: {key} がありません"),
    "cni.config.add_key": (
        "add {key} to the flatnet plugin's object in the conflist: it {rule}",
        "conflist の flatnet プラグインのオブジェクトに {key} を追加してください。値は {rule}",
    ),
    "cni.config.rule_host_id": (
        "must be an integer from 1 to 254, unique in the fleet",
        "1 から 254 までの整数で、フリート内で重複しない値にしてください",
    ),
    "cni.config.rule_range_order": ("must not be above rangeEnd {range_end}", "rangeEnd {range_end} より大きくしないでください"),
    "cni.config.rule_endpoints": (
        "must be a list of gateway URLs like 'http://10.100.0.1:8080'",
        "'http://10.100.0.1:8080' のようなゲートウェイ URL のリストにしてください",
    ),
    "cni.config.rule_endpoint_url": (
        "must be an http:// URL like 'http://10.100.0.1:8080' ({error})",
        "'http://10.100.0.1:8080' のような http:// URL にしてください（{error}）",
    ),
    "cni.config.rule_endpoint_host": (
        "each entry must be an http:// URL with a host, like 'http://10.100.0.1:8080'",
        "各項目はホストを含む http:// URL にしてください（例: 'http://10.100.0.1:8080'）",
    ),
    "cni.config.rule_data_dir": ("must be an absolute directory path", "ディレクトリーの絶対パスにしてください"),
    "cni.config.rule_bridge": (
        "must be an interface name of 1 to 15 letters, digits, '_', '.' or '-'",
        "英字・数字・'_'・'.'・'-' からなる 1〜15 文字のインターフェース名にしてください",
    ),
    "cni.config.rule_mtu": (
        "must be an integer from 576 to 9000 (Nebula's tun MTU, 1300 by default)",
        "576 から 9000 までの整数にしてください（Nebula の tun の MTU。既定は 1300）",
    ),
    "cni.config.rule_capabilities": (
        "must be an object of capability names to booleans",
        "capability 名を真偽値に対応づけるオブジェクトにしてください",
    ),
    "cni.config.rule_socket": (
        "must be the absolute path of the gateway's socket (default <dataDir>/{socket_name})",
        "ゲートウェイのソケットの絶対パスにしてください（既定は <dataDir>/{socket_name}）",
    ),
    "cni.config.rule_reuse_delay": (
        "must be a number of seconds from 0 to {maximum:.0f}",
        "0 から {maximum:.0f} までの秒数にしてください",
    ),
    "cni.config.rule_address": ("must be an IPv4 address inside {subnet}", "{subnet} 内の IPv4 アドレスにしてください"),
    "cni.config.rule_host_address": ("must be a host address inside {subnet}", "{subnet} 内のホストアドレスにしてください"),
})


@dataclasses.dataclass(frozen=True)
class NetConf:
    """A validated flatnet network config."""

    name: str
    host_id: int
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    range_start: ipaddress.IPv4Address
    range_end: ipaddress.IPv4Address
    registry_endpoints: tuple[str, ...]
    data_dir: Path
    bridge: str
    mtu: int
    capabilities: dict[str, bool]
    socket: Path
    reuse_delay: float


def _invalid(key: str, value: Any, rule: Message) -> CniError:
    return CniError(INVALID_NETWORK_CONFIG, Message("cni.config.invalid", key=key, value=value, rule=rule))


def load_netconf(raw: dict[str, Any]) -> NetConf:
    """Validate the plugin config ``raw`` and return it as a NetConf."""
    if "hostId" not in raw:
        raise CniError(
            INVALID_NETWORK_CONFIG,
            Message("cni.config.missing", key="hostId"),
            Message("cni.config.add_key", key="hostId", rule=Message("cni.config.rule_host_id")),
        )
    host_id = raw["hostId"]
    if not isinstance(host_id, int) or isinstance(host_id, bool) or not 1 <= host_id <= 254:
        raise _invalid("hostId", host_id, Message("cni.config.rule_host_id"))

    expected_range = f"10.100.{host_id}.0/24"
    ip_range = raw.get("ipRange", expected_range)
    if ip_range != expected_range:
        raise CniError(
            INVALID_NETWORK_CONFIG,
            Message("cni.config.ip_range_mismatch", ip_range=ip_range, host_id=host_id),
            Message("cni.config.ip_range_hint", host_id=host_id, expected=expected_range),
        )
    subnet = ipaddress.IPv4Network(expected_range)

    gateway = _address_in(raw, "gateway", str(subnet.network_address + 1), subnet)
    range_start = _address_in(raw, "rangeStart", str(subnet.network_address + FIRST_CONTAINER_HOST), subnet)
    range_end = _address_in(raw, "rangeEnd", str(subnet.broadcast_address - 1), subnet)
    if range_start > range_end:
        raise _invalid("rangeStart", str(range_start), Message("cni.config.rule_range_order", range_end=range_end))

    endpoints = raw.get("registryEndpoints", [])
    if not isinstance(endpoints, list) or not all(isinstance(url, str) for url in endpoints):
        raise _invalid("registryEndpoints", endpoints, Message("cni.config.rule_endpoints"))
    for url in endpoints:
        try:
            parts = urlsplit(url)
            # Reading .port raises ValueError for a port that is not a number from 0 to 65535.
            parts.port
        except ValueError as error:
            raise _invalid("registryEndpoints", url, Message("cni.config.rule_endpoint_url", error=error)) from None
        if parts.scheme != "http" or not parts.hostname:
            raise _invalid("registryEndpoints", url, Message("cni.config.rule_endpoint_host"))

    data_dir = raw.get("dataDir", DEFAULT_DATA_DIR)
    if not isinstance(data_dir, str) or not data_dir.startswith("/"):
        raise _invalid("dataDir", data_dir, Message("cni.config.rule_data_dir"))

    bridge = raw.get("bridge", DEFAULT_BRIDGE)
    if not isinstance(bridge, str) or not _IFNAME.match(bridge):
        raise _invalid("bridge", bridge, Message("cni.config.rule_bridge"))

    mtu = raw.get("mtu", DEFAULT_MTU)
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 576 <= mtu <= 9000:
        raise _invalid("mtu", mtu, Message("cni.config.rule_mtu"))

    capabilities = raw.get("capabilities", {})
    if not isinstance(capabilities, dict) or not all(isinstance(value, bool) for value in capabilities.values()):
        raise _invalid("capabilities", capabilities, Message("cni.config.rule_capabilities"))

    socket = raw.get("socket", f"{data_dir.rstrip('/')}/{SOCKET_NAME}")
    if not isinstance(socket, str) or not socket.startswith("/") or "\0" in socket:
        raise _invalid("socket", socket, Message("cni.config.rule_socket", socket_name=SOCKET_NAME))

    reuse_delay = raw.get("reuseDelay", DEFAULT_REUSE_DELAY_SECONDS)
    if (
        not isinstance(reuse_delay, (int, float)) or isinstance(reuse_delay, bool)
        or not 0 <= reuse_delay <= MAX_REUSE_DELAY_SECONDS
    ):
        raise _invalid("reuseDelay", reuse_delay, Message("cni.config.rule_reuse_delay", maximum=MAX_REUSE_DELAY_SECONDS))

    return NetConf(
        name=str(raw.get("name", "flatnet")),
        host_id=host_id,
        subnet=subnet,
        gateway=gateway,
        range_start=range_start,
        range_end=range_end,
        registry_endpoints=tuple(endpoints),
        data_dir=Path(data_dir),
        bridge=bridge,
        mtu=mtu,
        capabilities=capabilities,
        socket=Path(socket),
        reuse_delay=float(reuse_delay),
    )


def _address_in(raw: dict[str, Any], key: str, default: str, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    value = raw.get(key, default)
    try:
        address = ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise _invalid(key, value, Message("cni.config.rule_address", subnet=subnet)) from None
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
        raise _invalid(key, value, Message("cni.config.rule_host_address", subnet=subnet))
    return address
