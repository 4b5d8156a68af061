"""Which address a container gets next, apart from how reservations are stored.

Allocation goes round-robin from the address reserved last (the store's
cursor), like host-local's ``last_reserved_ip``: a container that restarts in
a loop does not get the same address each time. An address released less than
``reuseDelay`` ago is skipped while any other address is free, because peers
may still route to it from a cached registry view. When only such addresses
are free, the one released longest ago is given out.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

from flatnet import i18n
from flatnet.cni.config import NetConf
from flatnet.cni.spec import ADDRESS_UNAVAILABLE, ADDRESSES_EXHAUSTED, CniError
from flatnet.cni.store import Reservation, ReservationStore
from flatnet.i18n import Message

i18n.define({
    "cni.alloc.already_holds": (
        "container {container_id} already holds {held}, not the requested {requested}",
        "コンテナー {container_id} はすでに {held} を持っています。要求された {requested} ではありません",
    ),
    "cni.alloc.already_holds_hint": (
        "remove the container's network (DEL) before asking for another address",
        "別のアドレスを要求する前に、コンテナーのネットワークを削除（DEL）してください",
    ),
    "cni.alloc.exhausted": ("no free address in range {start}-{end} of {subnet}", "{subnet} の範囲 {start}-{end} に空きアドレスがありません"),
    "cni.alloc.exhausted_hint": (
        "all {count} addresses are reserved; remove containers or widen rangeStart/rangeEnd",
        "{count} 個のアドレスがすべて予約済みです。コンテナーを削除するか、rangeStart/rangeEnd を広げてください",
    ),
    "cni.alloc.not_in_subnet": (
        "requested address {address} is not in this host's subnet {subnet}",
        "要求されたアドレス {address} はこのホストのサブネット {subnet} にありません",
    ),
    "cni.alloc.is_gateway": (
        "requested address {address} is the gateway of {subnet}",
        "要求されたアドレス {address} は {subnet} のゲートウェイです",
    ),
    "cni.alloc.outside_range": (
        "requested address {address} is outside the range {start}-{end}",
        "要求されたアドレス {address} は範囲 {start}-{end} の外です",
    ),
    "cni.alloc.outside_range_hint": (
        "ask for an address inside rangeStart-rangeEnd; the addresses below are kept for the host",
        "rangeStart-rangeEnd 内のアドレスを要求してください。それより下のアドレスはホスト用に確保されています",
    ),
    "cni.alloc.held": ("requested address {address} is already held by {holder}", "要求されたアドレス {address} はすでに {holder} が使っています"),
    "cni.alloc.another_container": ("another container", "別のコンテナー"),
})


def allocate(
    store: ReservationStore,
    conf: NetConf,
    container_id: str,
    ifname: str,
    requested: ipaddress.IPv4Address | None = None,
    *,
    netns: str = "",
    now: float | None = None,
) -> Reservation:
    """Reserve an address for (container_id, ifname) and return the reservation.

    The caller holds the store's lock. An (id, ifname) that already holds an
    address gets that address again, so a repeated ADD never takes a second one.
    A requested address is given exactly, or the call fails: never another one.
    """
    reserved = store.reserved()
    for reservation in reserved.values():
        if reservation.container_id == container_id and reservation.ifname == ifname:
            if requested is not None and reservation.address != requested:
                raise CniError(
                    ADDRESS_UNAVAILABLE,
                    Message("cni.alloc.already_holds", container_id=container_id, held=reservation.address, requested=requested),
                    Message("cni.alloc.already_holds_hint"),
                )
            return reservation

    if requested is not None:
        return _reserve_requested(store, conf, Reservation(requested, container_id, ifname, netns), reserved)

    now = time.time() if now is None else now
    released = store.released()
    fresh_since = now - conf.reuse_delay
    cooling = []
    for address in _round_robin(conf, store.cursor()):
        if address == conf.gateway or address in reserved:
            continue
        if released.get(address, float("-inf")) > fresh_since:
            cooling.append(address)
            continue
        reservation = Reservation(address, container_id, ifname, netns)
        if store.reserve(reservation):
            store.set_cursor(address)
            return reservation

    for address in sorted(cooling, key=lambda candidate: released[candidate]):
        reservation = Reservation(address, container_id, ifname, netns)
        if store.reserve(reservation):
            store.set_cursor(address)
            return reservation

    raise CniError(
        ADDRESSES_EXHAUSTED,
        Message("cni.alloc.exhausted", start=conf.range_start, end=conf.range_end, subnet=conf.subnet),
        Message("cni.alloc.exhausted_hint", count=len(reserved)),
    )


def _round_robin(conf: NetConf, cursor: ipaddress.IPv4Address | None) -> Iterator[ipaddress.IPv4Address]:
    """Yield every address of the range once, starting after ``cursor`` and wrapping around."""
    size = int(conf.range_end) - int(conf.range_start) + 1
    if cursor is None or not conf.range_start <= cursor <= conf.range_end:
        first = 0
    else:
        first = int(cursor) - int(conf.range_start) + 1
    for step in range(size):
        yield conf.range_start + (first + step) % size


def _reserve_requested(
    store: ReservationStore,
    conf: NetConf,
    reservation: Reservation,
    reserved: dict[ipaddress.IPv4Address, Reservation],
) -> Reservation:
    requested = reservation.address
    if requested not in conf.subnet:
        raise CniError(ADDRESS_UNAVAILABLE, Message("cni.alloc.not_in_subnet", address=requested, subnet=conf.subnet))
    if requested == conf.gateway:
        raise CniError(ADDRESS_UNAVAILABLE, Message("cni.alloc.is_gateway", address=requested, subnet=conf.subnet))
    if not conf.range_start <= requested <= conf.range_end:
        raise CniError(
            ADDRESS_UNAVAILABLE,
            Message("cni.alloc.outside_range", address=requested, start=conf.range_start, end=conf.range_end),
            Message("cni.alloc.outside_range_hint"),
        )
    owner = reserved.get(requested)
    if owner is not None or not store.reserve(reservation):
        holder = owner.container_id if owner and owner.container_id else Message("cni.alloc.another_container")
        raise CniError(ADDRESS_UNAVAILABLE, Message("cni.alloc.held", address=requested, holder=holder))
    return reservation
