"""The one place that touches pyroute2: typed netlink operations for the plugin.

pyroute2 reports failures as an errno; each function here turns that into an
error naming the operation and the object. Netlink sockets stay bound to the
network namespace they were opened in, so the plugin opens one socket in the
host namespace and one in the container's, each entered once with setns.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import ipaddress
import os
import secrets
from collections.abc import Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from flatnet import i18n
from flatnet.i18n import Message

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


i18n.define({
    "cni.netlink.enter_failed": (
        "failed to enter network namespace {namespace}: {error}",
        "ネットワーク名前空間に入れませんでした（{namespace}）: {error}",
    ),
    "cni.netlink.of_process": ("of plugin process {pid}", "プラグインのプロセス {pid} のもの"),
    "cni.netlink.of_plugin_returning": ("of the plugin (returning)", "プラグイン自身のもの、戻るとき"),
    "cni.netlink.netns_missing": ("network namespace {path} does not exist", "ネットワーク名前空間 {path} が存在しません"),
    "cni.netlink.open_failed": (
        "failed to open network namespace {path}: {error}",
        "ネットワーク名前空間 {path} を開けませんでした: {error}",
    ),
    "cni.netlink.lookup_failed": ("failed to look up interface {name}: {error}", "インターフェース {name} を検索できませんでした: {error}"),
    "cni.netlink.bridge_create_failed": ("failed to create bridge {name}: {error}", "ブリッジ {name} を作成できませんでした: {error}"),
    "cni.netlink.bridge_vanished": (
        "bridge {name} vanished right after it was created",
        "ブリッジ {name} が作成直後に消えました",
    ),
    "cni.netlink.bridge_mac_failed": (
        "failed to pin the MAC address of bridge {name}: {error}",
        "ブリッジ {name} の MAC アドレスを固定できませんでした: {error}",
    ),
    "cni.netlink.not_a_bridge": (
        "interface {name} exists but is a {kind} link, not a bridge",
        "インターフェース {name} は存在しますが、ブリッジではなく {kind} のリンクです",
    ),
    "cni.netlink.bridge_up_failed": (
        "failed to set bridge {name} up with mtu {mtu}: {error}",
        "ブリッジ {name} を mtu {mtu} で up にできませんでした: {error}",
    ),
    "cni.netlink.bridge_has_other_address": (
        "bridge {name} already has {addresses} in {network}, not the gateway {gateway}; "
        "fix the config's gateway or remove the address",
        "ブリッジ {name} には {network} のアドレス {addresses} がすでにあり、ゲートウェイ {gateway} ではありません。"
        "設定の gateway を直すか、そのアドレスを削除してください",
    ),
    "cni.netlink.bridge_address_failed": (
        "failed to add {gateway} to bridge {name}: {error}",
        "ブリッジ {name} に {gateway} を追加できませんでした: {error}",
    ),
    "cni.netlink.veth_create_failed": (
        "failed to create veth pair {ifname}/{peer}: {error}",
        "veth ペア {ifname}/{peer} を作成できませんでした: {error}",
    ),
    "cni.netlink.veth_create_with_mac_failed": (
        "failed to create veth pair {ifname}/{peer} with MAC {mac}: {error}",
        "MAC {mac} の veth ペア {ifname}/{peer} を作成できませんでした: {error}",
    ),
    "cni.netlink.interface_exists": (
        "interface {ifname} already exists in the container",
        "インターフェース {ifname} はコンテナー内にすでに存在します",
    ),
    "cni.netlink.veth_vanished": (
        "veth {ifname} vanished from the container right after it was created",
        "veth {ifname} が作成直後にコンテナーから消えました",
    ),
    "cni.netlink.veth_names_exhausted": (
        "failed to find a free host veth name for {ifname} after 5 tries",
        "{ifname} のホスト側 veth の空き名を 5 回試しても見つけられませんでした",
    ),
    "cni.netlink.host_veth_missing": (
        "host veth {name} not found after it was created",
        "ホスト側 veth {name} が作成後に見つかりません",
    ),
    "cni.netlink.attach_failed": (
        "failed to attach {name} to bridge {bridge}: {error}",
        "{name} をブリッジ {bridge} に接続できませんでした: {error}",
    ),
    "cni.netlink.configure_failed": (
        "failed to configure {name} with {address} via {gateway} in the container: {error}",
        "コンテナー内の {name} を {address}（経由 {gateway}）に設定できませんでした: {error}",
    ),
    "cni.netlink.delete_failed": ("failed to delete interface {name}: {error}", "インターフェース {name} を削除できませんでした: {error}"),
    "cni.netlink.addresses_failed": (
        "failed to list the addresses of {name}: {error}",
        "{name} のアドレスを一覧できませんでした: {error}",
    ),
    "cni.netlink.routes_failed": ("failed to list the routes of {name}: {error}", "{name} の経路を一覧できませんでした: {error}"),
})


class NetlinkFailure(Exception):
    """A netlink operation that failed, with a message that names the operation and object.

    ``message`` is the catalog message, which the plugin's error result shows
    in the requester's language. ``str()`` gives it in English, for logs.
    """

    def __init__(self, message: Message):
        super().__init__(message)
        self.message = message


class NetnsGone(NetlinkFailure):
    """The container's network namespace does not exist (any more)."""


def enter_netns(fd: int, namespace: Message | str) -> None:
    """Move the calling thread into the network namespace open at ``fd``.

    ``namespace`` names it in errors: a path, or a message such as "of plugin process 42".
    """
    # Python 3.11 has no os.setns; it arrived in 3.12.
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise NetlinkFailure(Message("cni.netlink.enter_failed", namespace=namespace, error=os.strerror(code)))


@contextlib.contextmanager
def inside_netns(path: str) -> Iterator[None]:
    """Run the body with this thread inside the network namespace at ``path``."""
    try:
        target = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NetnsGone(Message("cni.netlink.netns_missing", path=path)) from None
    except OSError as error:
        raise NetlinkFailure(Message("cni.netlink.open_failed", path=path, error=error.strerror)) from None
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter_netns(target, path)
        try:
            yield
        finally:
            enter_netns(original, Message("cni.netlink.of_plugin_returning"))
    finally:
        os.close(target)
        os.close(original)


def open_route_socket(netns: str | None = None) -> IPRoute:
    """Open a netlink route socket in ``netns`` (a path), or in the current namespace."""
    if netns is None:
        return IPRoute()
    with inside_netns(netns):
        return IPRoute()


@dataclasses.dataclass(frozen=True)
class Link:
    """One interface as the kernel reports it; ``peer_index`` is a veth's peer in its own namespace."""

    name: str
    index: int
    mac: str
    mtu: int = 0
    kind: str | None = None
    master: int | None = None
    peer_index: int | None = None
    up: bool = False


_IFF_UP = 0x1


def _to_link(message) -> Link:
    info = message.get_attr("IFLA_LINKINFO")
    return Link(
        name=message.get_attr("IFLA_IFNAME"),
        index=message["index"],
        mac=message.get_attr("IFLA_ADDRESS"),
        mtu=message.get_attr("IFLA_MTU") or 0,
        kind=info.get_attr("IFLA_INFO_KIND") if info is not None else None,
        master=message.get_attr("IFLA_MASTER"),
        peer_index=message.get_attr("IFLA_LINK"),
        up=bool(message["flags"] & _IFF_UP),
    )


def _link(ipr: IPRoute, name: str) -> Link | None:
    try:
        messages = ipr.link("get", ifname=name)
    except NetlinkError as error:
        if error.code == errno.ENODEV:
            return None
        raise NetlinkFailure(Message("cni.netlink.lookup_failed", name=name, error=_describe(error))) from None
    return _to_link(messages[0])


def link_by_index(ipr: IPRoute, index: int) -> Link | None:
    try:
        messages = ipr.link("get", index=index)
    except NetlinkError as error:
        if error.code == errno.ENODEV:
            return None
        raise NetlinkFailure(Message("cni.netlink.lookup_failed", name=index, error=_describe(error))) from None
    return _to_link(messages[0])


def _describe(error: NetlinkError) -> str:
    return os.strerror(error.code) if error.code else str(error)


def ensure_bridge(ipr: IPRoute, name: str, gateway: ipaddress.IPv4Interface, mtu: int) -> Link:
    """Create bridge ``name`` if missing, with ``gateway`` as its address and a pinned MTU."""
    bridge = _link(ipr, name)
    if bridge is None:
        try:
            ipr.link("add", ifname=name, kind="bridge")
        except NetlinkError as error:
            if error.code != errno.EEXIST:
                raise NetlinkFailure(Message("cni.netlink.bridge_create_failed", name=name, error=_describe(error))) from None
        bridge = _link(ipr, name)
        if bridge is None:
            raise NetlinkFailure(Message("cni.netlink.bridge_vanished", name=name))
        # A bridge whose MAC was never set takes the lowest MAC of its ports, so
        # it would change as containers come and go; pin the one it has now.
        try:
            ipr.link("set", index=bridge.index, address=bridge.mac)
        except NetlinkError as error:
            raise NetlinkFailure(Message("cni.netlink.bridge_mac_failed", name=name, error=_describe(error))) from None

    if bridge.kind != "bridge":
        raise NetlinkFailure(Message("cni.netlink.not_a_bridge", name=name, kind=bridge.kind or "plain"))

    # Setting the MTU explicitly stops the kernel from moving the bridge to its
    # smallest port's MTU.
    try:
        if bridge.mtu != mtu:
            ipr.link("set", index=bridge.index, mtu=mtu)
        if not bridge.up:
            ipr.link("set", index=bridge.index, state="up")
    except NetlinkError as error:
        raise NetlinkFailure(Message("cni.netlink.bridge_up_failed", name=name, mtu=mtu, error=_describe(error))) from None

    addresses = [
        ipaddress.IPv4Interface(f"{entry.get_attr('IFA_ADDRESS')}/{entry['prefixlen']}")
        for entry in ipr.get_addr(index=bridge.index, family=2)
    ]
    if gateway not in addresses:
        others = [str(address) for address in addresses if address.network == gateway.network]
        if others:
            raise NetlinkFailure(Message(
                "cni.netlink.bridge_has_other_address", name=name, addresses=", ".join(others), network=gateway.network, gateway=gateway
            ))
        try:
            ipr.addr("add", index=bridge.index, address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
        except NetlinkError as error:
            if error.code != errno.EEXIST:
                raise NetlinkFailure(Message("cni.netlink.bridge_address_failed", gateway=gateway, name=name, error=_describe(error))) from None
    return bridge


class InterfaceExists(NetlinkFailure):
    """The container already has an interface of the requested name."""


def random_mac() -> str:
    """Return a random locally administered unicast MAC address, as the kernel would pick."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{octet:02x}" for octet in octets)


def create_veth(
    container: IPRoute, ifname: str, host_netns_fd: int, mtu: int, mac: str | None = None
) -> tuple[Link, Link]:
    """Create ``ifname``, set up, in the container with its peer in the host namespace.

    Creating the pair inside the container's namespace and sending the peer out
    costs about 2 ms. Creating it on the host and moving it in costs about 20.
    ``mac`` sets the container end's MAC address. The host end gets a MAC
    chosen here, so it needs no lookup afterwards. Returns the container link
    and the host link.
    """
    options = {"address": mac} if mac else {}
    for _ in range(5):
        peer = Link(name=f"veth{secrets.token_hex(4)}", index=0, mac=random_mac(), mtu=mtu, kind="veth")
        try:
            container.link(
                "add", ifname=ifname, kind="veth", mtu=mtu, state="up", **options,
                peer={"ifname": peer.name, "net_ns_fd": host_netns_fd, "mtu": mtu, "address": peer.mac},
            )
        except NetlinkError as error:
            if error.code != errno.EEXIST:
                if mac:
                    failure = Message("cni.netlink.veth_create_with_mac_failed", ifname=ifname, peer=peer.name, mac=mac, error=_describe(error))
                else:
                    failure = Message("cni.netlink.veth_create_failed", ifname=ifname, peer=peer.name, error=_describe(error))
                raise NetlinkFailure(failure) from None
            # Either the container has ifname already, or the random host name clashed.
            if _link(container, ifname) is not None:
                raise InterfaceExists(Message("cni.netlink.interface_exists", ifname=ifname)) from None
            continue
        link = _link(container, ifname)
        if link is None:
            raise NetlinkFailure(Message("cni.netlink.veth_vanished", ifname=ifname))
        # A veth's IFLA_LINK is its peer's index in the peer's own namespace.
        return link, dataclasses.replace(peer, index=link.peer_index or 0)
    raise NetlinkFailure(Message("cni.netlink.veth_names_exhausted", ifname=ifname))


def attach_to_bridge(host: IPRoute, peer: Link, bridge: Link) -> Link:
    """Enslave host veth ``peer`` to ``bridge``, set it up, and return it as it is now."""
    if not peer.index:
        found = _link(host, peer.name)
        if found is None:
            raise NetlinkFailure(Message("cni.netlink.host_veth_missing", name=peer.name))
        peer = found
    try:
        host.link("set", index=peer.index, master=bridge.index, state="up")
    except NetlinkError as error:
        raise NetlinkFailure(Message("cni.netlink.attach_failed", name=peer.name, bridge=bridge.name, error=_describe(error))) from None
    return dataclasses.replace(peer, master=bridge.index, up=True)


def configure_container_interface(
    container: IPRoute, link: Link, address: ipaddress.IPv4Interface, gateway: ipaddress.IPv4Address
) -> None:
    """Give the container's interface its address and route by default via ``gateway``.

    The interface is up from its creation. Loopback is the runtime's to set up
    (podman does it before ADD), as with the reference plugins.
    """
    try:
        container.addr("add", index=link.index, address=str(address.ip), prefixlen=address.network.prefixlen)
        container.route("add", dst="0.0.0.0/0", gateway=str(gateway), oif=link.index)
    except NetlinkError as error:
        raise NetlinkFailure(Message(
            "cni.netlink.configure_failed", name=link.name, address=address, gateway=gateway, error=_describe(error)
        )) from None


def delete_link(ipr: IPRoute, name: str) -> bool:
    """Delete link ``name``; return False if it did not exist."""
    link = _link(ipr, name)
    if link is None:
        return False
    try:
        ipr.link("del", index=link.index)
    except NetlinkError as error:
        if error.code == errno.ENODEV:
            return False
        raise NetlinkFailure(Message("cni.netlink.delete_failed", name=name, error=_describe(error))) from None
    return True


def addresses(ipr: IPRoute, link: Link) -> list[ipaddress.IPv4Interface]:
    """Return the IPv4 addresses on ``link``."""
    try:
        entries = ipr.get_addr(index=link.index, family=2)
    except NetlinkError as error:
        raise NetlinkFailure(Message("cni.netlink.addresses_failed", name=link.name, error=_describe(error))) from None
    return [ipaddress.IPv4Interface(f"{entry.get_attr('IFA_ADDRESS')}/{entry['prefixlen']}") for entry in entries]


def has_route(ipr: IPRoute, destination: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address | None, link: Link) -> bool:
    """Whether the main table routes ``destination`` (via ``gateway``, if given) out of ``link``."""
    try:
        routes = ipr.get_routes(family=2, table=254, oif=link.index)
    except NetlinkError as error:
        raise NetlinkFailure(Message("cni.netlink.routes_failed", name=link.name, error=_describe(error))) from None
    for route in routes:
        dst = route.get_attr("RTA_DST") or "0.0.0.0"
        if ipaddress.IPv4Network(f"{dst}/{route['dst_len']}") != destination:
            continue
        via = route.get_attr("RTA_GATEWAY")
        if gateway is None or (via is not None and ipaddress.IPv4Address(via) == gateway):
            return True
    return False


def find_link(ipr: IPRoute, name: str) -> Link | None:
    return _link(ipr, name)


def enable_ip_forwarding() -> None:
    """Turn on IPv4 forwarding in the current network namespace.

    New namespaces inherit the root namespace's value, so a host where it
    happens to be 1 would hide a missing setting.
    """
    with open("/proc/sys/net/ipv4/ip_forward", "r+") as setting:
        if setting.read().strip() != "1":
            setting.seek(0)
            setting.write("1")
