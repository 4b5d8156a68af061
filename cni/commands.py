"""ADD, DEL, CHECK and VERSION, built from the config, allocator, store and netlink.

Each command takes a parsed Request and returns the result as a dict in the
request's cniVersion, or raises CniError. Nothing here writes to stdout.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any

from flatnet.cni import handoff, netlink
from flatnet.cni.allocator import allocate
from flatnet.cni.config import NetConf, load_netconf
from flatnet.cni.spec import (
    ADDRESS_UNAVAILABLE,
    INVALID_ENVIRONMENT,
    NETLINK_FAILURE,
    CniError,
    Request,
    shape_result,
    version_result,
)
from flatnet.cni.store import DirectoryStore


def run(request: Request) -> dict[str, Any] | None:
    """Run the command of ``request``; return its result, or None when there is none."""
    if request.command == "VERSION":
        return version_result(request.cni_version)
    conf = load_netconf(request.config)
    if request.command == "ADD":
        return shape_result(request.cni_version, add(request, conf))
    if request.command == "DEL":
        delete(request, conf)
        return None
    check(request, conf)
    return None


def _requested_address(request: Request) -> ipaddress.IPv4Address | None:
    value = request.args.get("IP")
    if not value:
        return None
    try:
        return ipaddress.IPv4Address(value.split("/")[0])
    except ValueError:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS IP={value!r} is not an IPv4 address") from None


def _hostname(request: Request) -> str:
    return request.args.get("K8S_POD_NAME") or request.container_id[:12]


def _container_ports(request: Request) -> list[int]:
    mappings = request.config.get("runtimeConfig", {}).get("portMappings", [])
    ports = set()
    for mapping in mappings if isinstance(mappings, list) else []:
        port = mapping.get("containerPort") if isinstance(mapping, dict) else None
        if isinstance(port, int) and 0 < port < 65536 and mapping.get("protocol", "tcp") == "tcp":
            ports.add(port)
    return sorted(ports)


def add(request: Request, conf: NetConf) -> dict[str, Any]:
    """Attach the container to the host's bridge with a fresh address."""
    with DirectoryStore(conf.data_dir) as store:
        held_before = any(
            existing.container_id == request.container_id and existing.ifname == request.ifname
            for existing in store.reserved().values()
        )
        reservation = allocate(store, conf, request.container_id, request.ifname, _requested_address(request))
    address = ipaddress.IPv4Interface(f"{reservation.address}/{conf.subnet.prefixlen}")

    try:
        result = _set_up_interfaces(request, conf, address)
    except BaseException:
        # Undo the reservation so a failed ADD leaves nothing behind; the veth,
        # if it was made, went with the rollback in _set_up_interfaces. A
        # repeated ADD got the address an earlier ADD reserved, which may still
        # be in use, so that one is left for DEL to free.
        if not held_before:
            with DirectoryStore(conf.data_dir) as store:
                store.release(request.container_id, request.ifname)
        raise

    change = handoff.added_change({
        "id": request.container_id,
        "ip": str(address.ip),
        "hostname": _hostname(request),
        "ports": _container_ports(request),
        "hostId": conf.host_id,
        "createdAt": handoff.now_iso(),
        "ifname": request.ifname,
    })
    handoff.hand_off(change, conf.registry_endpoints, conf.data_dir)
    return result


def _set_up_interfaces(request: Request, conf: NetConf, address: ipaddress.IPv4Interface) -> dict[str, Any]:
    gateway = ipaddress.IPv4Interface(f"{conf.gateway}/{conf.subnet.prefixlen}")
    host_netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    host = netlink.open_route_socket()
    container = None
    container_link = None
    try:
        container = netlink.open_route_socket(request.netns)
        netlink.enable_ip_forwarding()
        bridge = netlink.ensure_bridge(host, conf.bridge, gateway, conf.mtu)
        container_link, peer = netlink.create_veth(container, request.ifname, host_netns_fd, conf.mtu)
        host_link = netlink.attach_to_bridge(host, peer, bridge)
        netlink.configure_container_interface(container, container_link, address, conf.gateway)
    except netlink.NetlinkFailure as error:
        if container is not None and container_link is not None:
            netlink.delete_link(container, request.ifname)
        raise CniError(NETLINK_FAILURE, str(error)) from None
    finally:
        os.close(host_netns_fd)
        host.close()
        if container is not None:
            container.close()

    return {
        "interfaces": [
            {"name": bridge.name, "mac": bridge.mac},
            {"name": host_link.name, "mac": host_link.mac},
            {"name": container_link.name, "mac": container_link.mac, "sandbox": request.netns},
        ],
        "ips": [{"address": str(address), "gateway": str(conf.gateway), "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0", "gw": str(conf.gateway)}],
        "dns": {},
    }


def delete(request: Request, conf: NetConf) -> None:
    """Detach the container and free its address.

    DEL succeeds when the netns, the interface or the reservation is already
    gone, and when it runs twice: the runtime retries DEL and stops cleaning up
    the rest of the chain at the first failure.
    """
    if request.netns:
        try:
            container = netlink.open_route_socket(request.netns)
        except netlink.NetnsGone:
            container = None
        except netlink.NetlinkFailure as error:
            print(f"flatnet: DEL could not enter {request.netns}: {error}; releasing the address anyway", file=sys.stderr)
            container = None
        if container is not None:
            try:
                netlink.delete_link(container, request.ifname)
            except netlink.NetlinkFailure as error:
                raise CniError(NETLINK_FAILURE, str(error)) from None
            finally:
                container.close()

    with DirectoryStore(conf.data_dir) as store:
        released = store.release(request.container_id, request.ifname)
    if released:
        change = handoff.removed_change(request.container_id, "deleted")
        handoff.hand_off(change, conf.registry_endpoints, conf.data_dir)


def check(request: Request, conf: NetConf) -> None:
    """Verify that the container still has what ADD gave it."""
    with DirectoryStore(conf.data_dir) as store:
        held = [r for r in store.reserved().values() if r.container_id == request.container_id and r.ifname == request.ifname]
    if not held:
        raise CniError(ADDRESS_UNAVAILABLE, f"container {request.container_id} holds no address on {request.ifname}")

    expected = ipaddress.IPv4Interface(f"{held[0].address}/{conf.subnet.prefixlen}")
    container = netlink.open_route_socket(request.netns)
    try:
        present = netlink.container_address(container, request.ifname)
    finally:
        container.close()
    if expected not in present:
        raise CniError(
            NETLINK_FAILURE,
            f"interface {request.ifname} in {request.netns} does not have {expected}",
            f"found {', '.join(map(str, present)) or 'no address'}",
        )

    host = netlink.open_route_socket()
    try:
        if netlink.find_link(host, conf.bridge) is None:
            raise CniError(NETLINK_FAILURE, f"bridge {conf.bridge} is missing on the host")
    finally:
        host.close()
