"""ADD, DEL, CHECK, GC and STATUS, built from the config, allocator, store and netlink.

Each command takes a parsed Request and returns its result as a dict in the
request's cniVersion, or None when it has no output, or raises CniError.
Nothing here writes to stdout. The gateway's fast path and the in-process path
both run these functions, so the two give the same results.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Callable, Iterator
from typing import Any

from flatnet import i18n
from flatnet.cni import faults, handoff, netlink, wanted
from flatnet.cni.allocator import allocate
from flatnet.cni.config import NetConf, load_netconf
from flatnet.cni.handoff import Announcer, RegistryAnnouncer
from flatnet.cni.spec import (
    CHECK_FAILED,
    INTERFACE_EXISTS,
    IO_FAILURE,
    NETLINK_FAILURE,
    PLUGIN_NOT_AVAILABLE,
    CniError,
    Request,
    shape_result,
)
from flatnet.cni.store import DirectoryStore, Reservation
from flatnet.i18n import Joined, Message
from flatnet.logs import cni as logger

DEFAULT_ROUTE = ipaddress.IPv4Network("0.0.0.0/0")

i18n.define({
    "cni.outbox_failed": (
        "failed to record change {change_id} ({change_type}) in the outbox: {error}",
        "変更 {change_id}（{change_type}）を outbox に記録できませんでした: {error}",
    ),
    "cni.interface_exists": (
        "interface {ifname} already exists in the container ({netns})",
        "インターフェース {ifname} はコンテナー内にすでに存在します（{netns}）",
    ),
    "cni.interface_exists_hint": (
        "remove it, or run DEL for the container first",
        "それを削除するか、先にコンテナーの DEL を実行してください",
    ),
    "cni.interface_not_attached": (
        "interface {ifname} already exists in {netns} but is not attached to {bridge} with {address}",
        "インターフェース {ifname} は {netns} にすでに存在しますが、{address} で {bridge} に接続されていません",
    ),
    "cni.interface_not_attached_hint": (
        "run DEL for the container, then ADD again",
        "コンテナーの DEL を実行してから、もう一度 ADD を実行してください",
    ),
    "cni.check.no_address": (
        "container {container_id} holds no address on {ifname}",
        "コンテナー {container_id} は {ifname} にアドレスを持っていません",
    ),
    "cni.check.other_address": (
        "container {container_id} holds {held}, not {expected} of prevResult",
        "コンテナー {container_id} が持つのは {held} で、prevResult の {expected} ではありません",
    ),
    "cni.check.interface_missing": ("interface {ifname} is missing from {netns}", "インターフェース {ifname} が {netns} にありません"),
    "cni.check.other_mac": (
        "interface {ifname} has MAC {mac}, not {expected} of prevResult",
        "インターフェース {ifname} の MAC は {mac} で、prevResult の {expected} ではありません",
    ),
    "cni.check.address_missing": (
        "interface {ifname} in {netns} does not have {address}",
        "{netns} のインターフェース {ifname} に {address} がありません",
    ),
    "cni.check.addresses_found": ("found {addresses}", "見つかったアドレス: {addresses}"),
    "cni.check.no_address_found": ("found no address", "アドレスが 1 つもありません"),
    "cni.check.route_missing": (
        "the default route via {gateway} on {ifname} is missing in {netns}",
        "{netns} に {ifname} 上の {gateway} 経由のデフォルト経路がありません",
    ),
    "cni.check.bridge_missing": ("bridge {bridge} is missing on the host", "ホストにブリッジ {bridge} がありません"),
    "cni.check.peer_not_attached": (
        "the host end of {ifname} is not attached to bridge {bridge}",
        "{ifname} のホスト側がブリッジ {bridge} に接続されていません",
    ),
    "cni.check.other_peer": (
        "the host end of {ifname} is {peer}, not {expected} of prevResult",
        "{ifname} のホスト側は {peer} で、prevResult の {expected} ではありません",
    ),
    "cni.gc.partial": (
        "GC freed {freed} of {stale} stale reservations",
        "GC は古い予約 {stale} 件のうち {freed} 件を解放しました",
    ),
    "cni.gc.problem": ("{attachment} ({address}): {error}", "{attachment}（{address}）: {error}"),
    "cni.status.data_dir_unusable": (
        "data directory {data_dir} is not usable: {error}",
        "データディレクトリー {data_dir} を使えません: {error}",
    ),
    "cni.status.exhausted_hint": (
        "remove containers or widen rangeStart/rangeEnd",
        "コンテナーを削除するか、rangeStart/rangeEnd を広げてください",
    ),
})


def run(request: Request, announcer: Announcer | None = None) -> dict[str, Any] | None:
    """Run the command of ``request``; return its result, or None when there is none."""
    conf = load_netconf(request.config)
    if announcer is None:
        announcer = RegistryAnnouncer(conf.registry_endpoints, conf.data_dir)
    if request.command == "ADD":
        return shape_result(request.cni_version, add(request, conf, announcer))
    if request.command == "DEL":
        delete(request, conf, announcer)
    elif request.command == "CHECK":
        check(request, conf)
    elif request.command == "GC":
        gc(request, conf, announcer)
    elif request.command == "STATUS":
        status(conf)
    return None


class _Undo:
    """The steps a failing ADD takes back, newest first; each runs even if another fails."""

    def __init__(self, request: Request):
        self.request = request
        self.steps: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, step: Callable[[], object]) -> None:
        self.steps.append((what, step))

    def run(self) -> None:
        for what, step in reversed(self.steps):
            try:
                step()
            except Exception as error:  # noqa: BLE001 - every other step must still run
                logger.error("ADD %s/%s failed and undoing it failed too: %s: %s",
                             self.request.container_id, self.request.ifname, what, error)


def add(request: Request, conf: NetConf, announcer: Announcer) -> dict[str, Any]:
    """Attach the container to the host's bridge with an address, and announce it.

    An (id, ifname) that already has an address and whose interface is in
    place gets that attachment described again, and nothing is touched. A
    failure at any step undoes what this ADD did: the announcement, the veth
    and the reservation.
    """
    attachment = wanted.from_request(request, conf)
    undo = _Undo(request)
    try:
        with DirectoryStore(conf.data_dir) as store:
            reservation = store.owned_by(request.container_id, request.ifname)
            held_before = reservation is not None
            reservation = allocate(
                store, conf, request.container_id, request.ifname, attachment.address, netns=request.netns
            )
        if held_before:
            existing = _describe_existing(request, conf, reservation)
            if existing is not None:
                logger.info("ADD %s/%s repeated: %s is already attached", request.container_id, request.ifname, reservation.address)
                return existing
        else:
            undo.push(f"release {reservation.address}", lambda: _release(conf, request))
        faults.reach(request, "add:after-reserve")

        address = ipaddress.IPv4Interface(f"{reservation.address}/{conf.subnet.prefixlen}")
        result = _set_up_interfaces(request, conf, address, attachment.mac, undo)
        faults.reach(request, "add:after-interfaces")

        change = handoff.added_change({
            "id": request.container_id,
            "ip": str(address.ip),
            "hostname": attachment.hostname,
            "ports": attachment.ports,
            "aliases": attachment.aliases,
            "hostId": conf.host_id,
            "createdAt": handoff.now_iso(),
            "ifname": request.ifname,
        })
        delivery = _announce(announcer, change)
        undo.push(f"withdraw change {change.id}", lambda: handoff.withdraw(delivery, announcer))
        faults.reach(request, "add:after-announce")
    except BaseException:
        undo.run()
        raise
    logger.info("ADD %s/%s: %s on %s, announced to %s", request.container_id, request.ifname, address,
                result["interfaces"][1]["name"], delivery.target)
    return result


def _release(conf: NetConf, request: Request) -> None:
    with DirectoryStore(conf.data_dir) as store:
        store.release(request.container_id, request.ifname)


def _announce(announcer: Announcer, change) -> handoff.Delivery:
    try:
        return announcer.announce(change)
    except OSError as error:
        raise CniError(IO_FAILURE, Message("cni.outbox_failed", change_id=change.id, change_type=change.type, error=error)) from None


@contextlib.contextmanager
def _sockets(request: Request) -> Iterator[tuple[netlink.IPRoute, netlink.IPRoute, int]]:
    """Netlink sockets in the host's and the container's namespaces, and the host namespace's fd."""
    host_netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    host = netlink.open_route_socket()
    container = None
    try:
        container = netlink.open_route_socket(request.netns)
        yield host, container, host_netns_fd
    except netlink.NetlinkFailure as error:
        raise CniError(NETLINK_FAILURE, error.message) from None
    finally:
        os.close(host_netns_fd)
        host.close()
        if container is not None:
            container.close()


def _set_up_interfaces(
    request: Request, conf: NetConf, address: ipaddress.IPv4Interface, mac: str | None, undo: _Undo
) -> dict[str, Any]:
    gateway = ipaddress.IPv4Interface(f"{conf.gateway}/{conf.subnet.prefixlen}")
    with _sockets(request) as (host, container, host_netns_fd):
        netlink.enable_ip_forwarding()
        bridge = netlink.ensure_bridge(host, conf.bridge, gateway, conf.mtu)
        try:
            container_link, peer = netlink.create_veth(container, request.ifname, host_netns_fd, conf.mtu, mac)
        except netlink.InterfaceExists:
            raise CniError(
                INTERFACE_EXISTS,
                Message("cni.interface_exists", ifname=request.ifname, netns=request.netns),
                Message("cni.interface_exists_hint"),
            ) from None
        netns = request.netns
        undo.push(f"delete {request.ifname} in {netns}", lambda: _delete_container_interface(netns, request.ifname))
        faults.reach(request, "add:after-veth")
        host_link = netlink.attach_to_bridge(host, peer, bridge)
        netlink.configure_container_interface(container, container_link, address, conf.gateway)
    return _result(conf, bridge, host_link, container_link, address, request.netns)


def _result(
    conf: NetConf, bridge: netlink.Link, host_link: netlink.Link, container_link: netlink.Link,
    address: ipaddress.IPv4Interface, netns: str,
) -> dict[str, Any]:
    return {
        "interfaces": [
            {"name": bridge.name, "mac": bridge.mac},
            {"name": host_link.name, "mac": host_link.mac},
            {"name": container_link.name, "mac": container_link.mac, "sandbox": netns},
        ],
        "ips": [{"address": str(address), "gateway": str(conf.gateway), "interface": 2}],
        "routes": [{"dst": str(DEFAULT_ROUTE), "gw": str(conf.gateway)}],
        "dns": {},
    }


def _describe_existing(request: Request, conf: NetConf, reservation: Reservation) -> dict[str, Any] | None:
    """Describe the attachment of an earlier ADD, or return None if its interface is missing.

    Raises when the interface exists but is not that attachment, because
    changing it could break whatever made it.
    """
    address = ipaddress.IPv4Interface(f"{reservation.address}/{conf.subnet.prefixlen}")
    with _sockets(request) as (host, container, _):
        container_link = netlink.find_link(container, request.ifname)
        if container_link is None:
            return None
        bridge = netlink.find_link(host, conf.bridge)
        host_link = netlink.link_by_index(host, container_link.peer_index) if container_link.peer_index else None
        in_place = (
            bridge is not None
            and host_link is not None
            and host_link.master == bridge.index
            and address in netlink.addresses(container, container_link)
        )
    if not in_place:
        raise CniError(
            INTERFACE_EXISTS,
            Message("cni.interface_not_attached", ifname=request.ifname, netns=request.netns, bridge=conf.bridge, address=address),
            Message("cni.interface_not_attached_hint"),
        )
    return _result(conf, bridge, host_link, container_link, address, request.netns)


def _delete_container_interface(netns: str, ifname: str) -> str:
    """Delete ``ifname`` in ``netns`` and return what was found; a missing namespace or interface is no error."""
    try:
        container = netlink.open_route_socket(netns)
    except netlink.NetnsGone:
        return f"network namespace {netns} is gone"
    try:
        return f"deleted {ifname} in {netns}" if netlink.delete_link(container, ifname) else f"{ifname} was already gone from {netns}"
    finally:
        container.close()


def delete(request: Request, conf: NetConf, announcer: Announcer) -> None:
    """Detach the container, announce its removal, and free its address.

    DEL succeeds when the netns, the interface or the reservation is already
    gone, and when it runs twice: the runtime retries DEL and stops cleaning up
    the rest of the chain at the first failure. The removal is announced
    before the address is freed, so a DEL that stops between the two leaves
    the reservation for the next DEL, never a registry entry that no DEL removes.
    """
    found = "no CNI_NETNS given"
    if request.netns:
        try:
            found = _delete_container_interface(request.netns, request.ifname)
        except netlink.NetlinkFailure as error:
            raise CniError(NETLINK_FAILURE, error.message) from None
    faults.reach(request, "del:after-interfaces")

    with DirectoryStore(conf.data_dir) as store:
        held = store.owned_by(request.container_id, request.ifname)
    if held is None:
        logger.info("DEL %s/%s: %s; it held no address", request.container_id, request.ifname, found)
        return

    delivery = _announce(announcer, handoff.removed_change(request.container_id, "deleted"))
    faults.reach(request, "del:after-announce")
    with DirectoryStore(conf.data_dir) as store:
        store.release(request.container_id, request.ifname)
    faults.reach(request, "del:after-release")
    logger.info("DEL %s/%s: %s, released %s, announced to %s",
                request.container_id, request.ifname, found, held.address, delivery.target)


def check(request: Request, conf: NetConf) -> None:
    """Verify that the container still has what ADD gave it, as prevResult describes."""
    expected = wanted.from_previous_result(request, conf)
    with DirectoryStore(conf.data_dir) as store:
        held = store.owned_by(request.container_id, request.ifname)
    if held is None:
        raise CniError(CHECK_FAILED, Message("cni.check.no_address", container_id=request.container_id, ifname=request.ifname))
    if held.address != expected.address.ip:
        raise CniError(CHECK_FAILED, Message(
            "cni.check.other_address", container_id=request.container_id, held=held.address, expected=expected.address.ip
        ))

    with _sockets(request) as (host, container, _):
        link = netlink.find_link(container, request.ifname)
        if link is None:
            raise CniError(CHECK_FAILED, Message("cni.check.interface_missing", ifname=request.ifname, netns=request.netns))
        if expected.mac and link.mac.lower() != expected.mac.lower():
            raise CniError(CHECK_FAILED, Message("cni.check.other_mac", ifname=request.ifname, mac=link.mac, expected=expected.mac))
        present = netlink.addresses(container, link)
        if expected.address not in present:
            if present:
                found = Message("cni.check.addresses_found", addresses=", ".join(map(str, present)))
            else:
                found = Message("cni.check.no_address_found")
            raise CniError(
                CHECK_FAILED,
                Message("cni.check.address_missing", ifname=request.ifname, netns=request.netns, address=expected.address),
                found,
            )
        if not netlink.has_route(container, DEFAULT_ROUTE, conf.gateway, link):
            raise CniError(CHECK_FAILED, Message(
                "cni.check.route_missing", gateway=conf.gateway, ifname=request.ifname, netns=request.netns
            ))

        bridge = netlink.find_link(host, conf.bridge)
        if bridge is None or bridge.kind != "bridge":
            raise CniError(CHECK_FAILED, Message("cni.check.bridge_missing", bridge=conf.bridge))
        peer = netlink.link_by_index(host, link.peer_index) if link.peer_index else None
        if peer is None or peer.master != bridge.index:
            raise CniError(CHECK_FAILED, Message("cni.check.peer_not_attached", ifname=request.ifname, bridge=conf.bridge))
        if expected.host_veth and peer.name != expected.host_veth:
            raise CniError(CHECK_FAILED, Message(
                "cni.check.other_peer", ifname=request.ifname, peer=peer.name, expected=expected.host_veth
            ))


def gc(request: Request, conf: NetConf, announcer: Announcer) -> None:
    """Free the reservations of every attachment the runtime no longer lists as valid.

    Their namespaces are assumed gone, as the specification allows. GC goes on
    past a failure and reports every failure at the end.
    """
    valid = wanted.valid_attachments(request.config)
    with DirectoryStore(conf.data_dir) as store:
        stale = [
            reservation for reservation in store.reserved().values()
            if reservation.container_id and (reservation.container_id, reservation.ifname) not in valid
        ]

    problems = []
    for reservation in stale:
        try:
            _announce(announcer, handoff.removed_change(reservation.container_id, "gc"))
            with DirectoryStore(conf.data_dir) as store:
                store.release(reservation.container_id, reservation.ifname)
        except (OSError, CniError) as error:
            problems.append(Message(
                "cni.gc.problem",
                attachment=f"{reservation.container_id}/{reservation.ifname}",
                address=reservation.address,
                error=error.message if isinstance(error, CniError) else error,
            ))
            continue
        logger.info("GC %s/%s: released %s", reservation.container_id, reservation.ifname, reservation.address)
    if problems:
        raise CniError(IO_FAILURE, Message("cni.gc.partial", freed=len(stale) - len(problems), stale=len(stale)), Joined(problems))


def status(conf: NetConf) -> None:
    """Succeed when an ADD could be served now: the data directory works and an address is free."""
    try:
        with DirectoryStore(conf.data_dir) as store:
            reserved = store.reserved()
    except OSError as error:
        raise CniError(PLUGIN_NOT_AVAILABLE, Message("cni.status.data_dir_unusable", data_dir=conf.data_dir, error=error)) from None
    size = int(conf.range_end) - int(conf.range_start) + 1
    taken = sum(1 for address in reserved if conf.range_start <= address <= conf.range_end)
    gateway_inside = conf.range_start <= conf.gateway <= conf.range_end
    if taken + gateway_inside >= size:
        raise CniError(
            PLUGIN_NOT_AVAILABLE,
            Message("cni.alloc.exhausted", start=conf.range_start, end=conf.range_end, subnet=conf.subnet),
            Message("cni.status.exhausted_hint"),
        )

