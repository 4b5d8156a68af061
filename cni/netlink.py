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


def _setns(fd: int, what: str) -> None:
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
        _setns(target, path)
        try:
            yield
        finally:
            _setns(original, "of the plugin (returning)")
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
    name: str
    index: int
    mac: str


def _link(ipr: IPRoute, name: str) -> Link | None:
    indexes = ipr.link_lookup(ifname=name)
    if not indexes:
        return None
    message = ipr.get_links(indexes[0])[0]
    return Link(name, indexes[0], message.get_attr("IFLA_ADDRESS"))


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

    message = ipr.get_links(bridge.index)[0]
    info = message.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    if kind != "bridge":
        raise NetlinkFailure(f"interface {name} exists but is a {kind or 'plain'} link, not a bridge")

    # Setting the MTU explicitly stops the kernel from moving the bridge to its
    # smallest port's MTU.
    try:
        if message.get_attr("IFLA_MTU") != mtu:
            ipr.link("set", index=bridge.index, mtu=mtu)
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


def create_veth(container: IPRoute, ifname: str, host_netns_fd: int, mtu: int) -> tuple[Link, str]:
    """Create ``ifname`` in the container with its peer in the host namespace.

    Creating the pair inside the container's namespace and sending the peer out
    costs about 2 ms; creating it on the host and moving it in costs about 20.
    Returns the container link and the host peer's name.
    """
    if _link(container, ifname) is not None:
        raise NetlinkFailure(f"interface {ifname} already exists in the container")
    for _ in range(5):
        peer = f"veth{secrets.token_hex(4)}"
        try:
            container.link(
                "add", ifname=ifname, kind="veth", mtu=mtu,
                peer={"ifname": peer, "net_ns_fd": host_netns_fd, "mtu": mtu},
            )
        except NetlinkError as error:
            if error.code == errno.EEXIST:
                continue
            raise NetlinkFailure(f"failed to create veth pair {ifname}/{peer}: {_describe(error)}") from None
        link = _link(container, ifname)
        if link is None:
            raise NetlinkFailure(f"veth {ifname} vanished from the container right after it was created")
        return link, peer
    raise NetlinkFailure(f"failed to find a free host veth name for {ifname} after 5 tries")


def attach_to_bridge(host: IPRoute, peer: str, bridge: Link) -> Link:
    """Enslave host veth ``peer`` to ``bridge`` and set it up."""
    link = _link(host, peer)
    if link is None:
        raise NetlinkFailure(f"host veth {peer} not found after it was created")
    try:
        host.link("set", index=link.index, master=bridge.index, state="up")
    except NetlinkError as error:
        raise NetlinkFailure(f"failed to attach {peer} to bridge {bridge.name}: {_describe(error)}") from None
    return link


def configure_container_interface(
    container: IPRoute, link: Link, address: ipaddress.IPv4Interface, gateway: ipaddress.IPv4Address
) -> None:
    """Give the container's interface its address, set it up, and route by default via ``gateway``."""
    try:
        lo = container.link_lookup(ifname="lo")
        if lo:
            container.link("set", index=lo[0], state="up")
        container.addr("add", index=link.index, address=str(address.ip), prefixlen=address.network.prefixlen)
        container.link("set", index=link.index, state="up")
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


def container_address(container: IPRoute, ifname: str) -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses on ``ifname`` in the container, empty if it is missing."""
    link = _link(container, ifname)
    if link is None:
        return []
    return [
        ipaddress.IPv4Interface(f"{entry.get_attr('IFA_ADDRESS')}/{entry['prefixlen']}")
        for entry in container.get_addr(index=link.index, family=2)
    ]


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
