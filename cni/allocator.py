"""Which address a container gets next, apart from how reservations are stored."""

from __future__ import annotations

import ipaddress

from flatnet.cni.config import NetConf
from flatnet.cni.spec import ADDRESS_UNAVAILABLE, ADDRESSES_EXHAUSTED, CniError
from flatnet.cni.store import Reservation, ReservationStore


def allocate(
    store: ReservationStore,
    conf: NetConf,
    container_id: str,
    ifname: str,
    requested: ipaddress.IPv4Address | None = None,
) -> Reservation:
    """Reserve an address for (container_id, ifname) and return the reservation.

    The caller holds the store's lock. An (id, ifname) that already holds an
    address gets that address again, so a repeated ADD never takes a second one.
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
        return _reserve_requested(store, conf, container_id, ifname, requested, reserved)

    address = conf.range_start
    while address <= conf.range_end:
        if address != conf.gateway and address not in reserved:
            reservation = Reservation(address, container_id, ifname)
            if store.reserve(reservation):
                return reservation
        address += 1
    raise CniError(
        ADDRESSES_EXHAUSTED,
        f"no free address in {conf.range_start}-{conf.range_end} of {conf.subnet}",
        f"all {len(reserved)} addresses are reserved; remove containers or widen rangeStart/rangeEnd",
    )


def _reserve_requested(
    store: ReservationStore,
    conf: NetConf,
    container_id: str,
    ifname: str,
    requested: ipaddress.IPv4Address,
    reserved: dict[ipaddress.IPv4Address, Reservation],
) -> Reservation:
    if requested not in conf.subnet or requested in (conf.subnet.network_address, conf.subnet.broadcast_address):
        raise CniError(ADDRESS_UNAVAILABLE, f"requested address {requested} is not a host address of {conf.subnet}")
    if requested == conf.gateway:
        raise CniError(ADDRESS_UNAVAILABLE, f"requested address {requested} is the gateway of {conf.subnet}")
    owner = reserved.get(requested)
    reservation = Reservation(requested, container_id, ifname)
    if owner is not None or not store.reserve(reservation):
        holder = owner.container_id if owner and owner.container_id else "another container"
        raise CniError(ADDRESS_UNAVAILABLE, f"requested address {requested} is already held by {holder}")
    return reservation
