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

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetlinkFailure(Exception):
    """A netlink operation that failed; the message names the operation and object."""


class NetnsGone(NetlinkFailure):
    """The container's network namespace does not exist (any more)."""


def enter_netns(fd: int, what: str) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    # Python 3.11 has no os.setns; it arrived in 3.12.
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise NetlinkFailure(f"failed to enter network namespace {what}: {os.strerror(code)}")


@contextlib.contextmanager
def inside_netns(path: str) -> Iterator[None]:
    """Run the body with this thread inside the network namespace at ``path``."""
    try:
        target = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NetnsGone(f"network namespace {path} does not exist") from None
    except OSError as error:
        raise NetlinkFailure(f"failed to open network namespace {path}: {error.strerror}") from None
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter_netns(target, path)
        try:
            yield
        finally:
            enter_netns(original, "of the plugin (returning)")
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
        raise NetlinkFailure(f"failed to look up interface {name}: {_describe(error)}") from None
    return _to_link(messages[0])


def link_by_index(ipr: IPRoute, index: int) -> Link | None:
    try:
        messages = ipr.link("get", index=index)
    except NetlinkError as error:
        if error.code == errno.ENODEV:
            return None
        raise NetlinkFailure(f"failed to look up interface {index}: {_describe(error)}") from None
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
                raise NetlinkFailure(f"failed to create bridge {name}: {_describe(error)}") from None
        bridge = _link(ipr, name)
        if bridge is None:
            raise NetlinkFailure(f"bridge {name} vanished right after it was created")
        # A bridge whose MAC was never set takes the lowest MAC of its ports, so
        # it would change as containers come and go; pin the one it has now.
        try:
            ipr.link("set", index=bridge.index, address=bridge.mac)
        except NetlinkError as error:
            raise NetlinkFailure(f"failed to pin the MAC address of bridge {name}: {_describe(error)}") from None

    if bridge.kind != "bridge":
        raise NetlinkFailure(f"interface {name} exists but is a {bridge.kind or 'plain'} link, not a bridge")

    # Setting the MTU explicitly stops the kernel from moving the bridge to its
    # smallest port's MTU.
    try:
        if bridge.mtu != mtu:
            ipr.link("set", index=bridge.index, mtu=mtu)
        if not bridge.up:
            ipr.link("set", index=bridge.index, state="up")
    except NetlinkError as error:
        raise NetlinkFailure(f"failed to set bridge {name} up with mtu {mtu}: {_describe(error)}") from None

    addresses = [
        ipaddress.IPv4Interface(f"{entry.get_attr('IFA_ADDRESS')}/{entry['prefixlen']}")
        for entry in ipr.get_addr(index=bridge.index, family=2)
    ]
    if gateway not in addresses:
        others = [str(address) for address in addresses if address.network == gateway.network]
        if others:
            raise NetlinkFailure(
                f"bridge {name} already has {', '.join(others)} in {gateway.network}, not the gateway {gateway}; "
                f"fix the config's gateway or remove the address"
            )
        try:
            ipr.addr("add", index=bridge.index, address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
        except NetlinkError as error:
            if error.code != errno.EEXIST:
                raise NetlinkFailure(f"failed to add {gateway} to bridge {name}: {_describe(error)}") from None
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
                what = f" with MAC {mac}" if mac else ""
                raise NetlinkFailure(f"failed to create veth pair {ifname}/{peer.name}{what}: {_describe(error)}") from None
            # Either the container has ifname already, or the random host name clashed.
            if _link(container, ifname) is not None:
                raise InterfaceExists(f"interface {ifname} already exists in the container") from None
            continue
        link = _link(container, ifname)
        if link is None:
            raise NetlinkFailure(f"veth {ifname} vanished from the container right after it was created")
        # A veth's IFLA_LINK is its peer's index in the peer's own namespace.
        return link, dataclasses.replace(peer, index=link.peer_index or 0)
    raise NetlinkFailure(f"failed to find a free host veth name for {ifname} after 5 tries")


def attach_to_bridge(host: IPRoute, peer: Link, bridge: Link) -> Link:
    """Enslave host veth ``peer`` to ``bridge``, set it up, and return it as it is now."""
    if not peer.index:
        found = _link(host, peer.name)
        if found is None:
            raise NetlinkFailure(f"host veth {peer.name} not found after it was created")
        peer = found
    try:
        host.link("set", index=peer.index, master=bridge.index, state="up")
    except NetlinkError as error:
        raise NetlinkFailure(f"failed to attach {peer.name} to bridge {bridge.name}: {_describe(error)}") from None
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
        raise NetlinkFailure(
            f"failed to configure {link.name} with {address} via {gateway} in the container: {_describe(error)}"
        ) from None


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
        raise NetlinkFailure(f"failed to delete interface {name}: {_describe(error)}") from None
    return True


def addresses(ipr: IPRoute, link: Link) -> list[ipaddress.IPv4Interface]:
    """Return the IPv4 addresses on ``link``."""
    try:
        entries = ipr.get_addr(index=link.index, family=2)
    except NetlinkError as error:
        raise NetlinkFailure(f"failed to list the addresses of {link.name}: {_describe(error)}") from None
    return [ipaddress.IPv4Interface(f"{entry.get_attr('IFA_ADDRESS')}/{entry['prefixlen']}") for entry in entries]


def has_route(ipr: IPRoute, destination: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address | None, link: Link) -> bool:
    """Whether the main table routes ``destination`` (via ``gateway``, if given) out of ``link``."""
    try:
        routes = ipr.get_routes(family=2, table=254, oif=link.index)
    except NetlinkError as error:
        raise NetlinkFailure(f"failed to list the routes of {link.name}: {_describe(error)}") from None
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
