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

from flatnet.cni.config import NetConf
from flatnet.cni.spec import ADDRESS_UNAVAILABLE, ADDRESSES_EXHAUSTED, CniError
from flatnet.cni.store import Reservation, ReservationStore


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
                    f"container {container_id} already holds {reservation.address}, not the requested {requested}",
                    "remove the container's network (DEL) before asking for another address",
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
        f"no free address in range {conf.range_start}-{conf.range_end} of {conf.subnet}",
        f"all {len(reserved)} addresses are reserved; remove containers or widen rangeStart/rangeEnd",
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
        raise CniError(ADDRESS_UNAVAILABLE, f"requested address {requested} is not in this host's subnet {conf.subnet}")
    if requested == conf.gateway:
        raise CniError(ADDRESS_UNAVAILABLE, f"requested address {requested} is the gateway of {conf.subnet}")
    if not conf.range_start <= requested <= conf.range_end:
        raise CniError(
            ADDRESS_UNAVAILABLE,
            f"requested address {requested} is outside the range {conf.range_start}-{conf.range_end}",
            "ask for an address inside rangeStart-rangeEnd; the addresses below are kept for the host",
        )
    owner = reserved.get(requested)
    if owner is not None or not store.reserve(reservation):
        holder = owner.container_id if owner and owner.container_id else "another container"
        raise CniError(ADDRESS_UNAVAILABLE, f"requested address {requested} is already held by {holder}")
    return reservation
