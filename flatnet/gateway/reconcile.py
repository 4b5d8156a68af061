"""The own-host check at start: containers of this host that are gone from the kernel.

After a reboot or a crash no runtime sends DEL for the containers that were
running, so the view would keep them and the address store would keep their
addresses. At start the gateway checks each container of its own host against
the kernel. A container whose network namespace is gone, or whose namespace no
longer has its interface with its address, gets a ``container.removed`` with
reason ``gone``, and its address reservation is freed.

The namespace of a container comes from its reservation in
``<data_dir>/ipam/``, where ADD records it. A container without a reservation
that names one is left alone, because nothing tells where to look. So is one
whose reservation is younger than the grace period: its ADD may still be
setting up the interface. Everything happens under the address store's lock,
so no plugin reserves or frees an address meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid

from flatnet.cni import netlink
from flatnet.cni.store import DirectoryStore, Reservation
from flatnet.events.record import CONTAINER_REMOVED, Change
from flatnet.gateway.journal import Journal
from flatnet.logs import registry as logger
from flatnet.registry import Container, format_time

GONE_REASON = "gone"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One container of this host and the result of its kernel check."""

    container: Container
    reservation: Reservation | None
    gone: bool
    detail: str


@dataclasses.dataclass
class Report:
    removed: list[Finding] = dataclasses.field(default_factory=list)
    unchecked: list[Finding] = dataclasses.field(default_factory=list)
    live: int = 0


def check_container(container: Container, reservation: Reservation | None, *, now: float, grace: float, store: DirectoryStore) -> Finding:
    """Tell whether ``container``'s namespace or interface is gone, or why that cannot be decided."""
    if reservation is None or not reservation.netns:
        return Finding(container, reservation, False, "its address reservation names no network namespace")
    if str(reservation.address) != container.ip:
        return Finding(container, reservation, False, f"its reservation holds {reservation.address}, not {container.ip}")
    try:
        age = now - os.stat(store.directory / str(reservation.address)).st_mtime
    except FileNotFoundError:
        age = grace
    if age < grace:
        return Finding(container, reservation, False, f"its address was reserved {age:.0f} s ago; its ADD may still run")

    if not os.path.exists(reservation.netns):
        return Finding(container, reservation, True, f"network namespace {reservation.netns} is gone")
    try:
        ipr = netlink.open_route_socket(reservation.netns)
    except netlink.NetnsGone:
        return Finding(container, reservation, True, f"network namespace {reservation.netns} is gone")
    except netlink.NetlinkFailure as error:
        return Finding(container, reservation, False, f"network namespace {reservation.netns} cannot be checked: {error}")
    try:
        link = netlink.find_link(ipr, container.ifname)
        if link is None:
            return Finding(container, reservation, True, f"interface {container.ifname} is gone from {reservation.netns}")
        held = [str(address.ip) for address in netlink.addresses(ipr, link)]
    except netlink.NetlinkFailure as error:
        return Finding(container, reservation, False, f"interface {container.ifname} in {reservation.netns} cannot be checked: {error}")
    finally:
        ipr.close()
    if container.ip not in held:
        return Finding(
            container, reservation, True,
            f"interface {container.ifname} in {reservation.netns} no longer has {container.ip} (it has {', '.join(held) or 'none'})",
        )
    return Finding(container, reservation, False, "live")


def _check_all(containers: list[Container], store: DirectoryStore, grace: float) -> list[Finding]:
    # In a worker thread: entering a namespace changes only the calling
    # thread, and pyroute2's blocking socket cannot run on the event loop.
    owners = {(r.container_id, r.ifname): r for r in store.reserved().values() if r.container_id}
    now = time.time()
    return [
        check_container(container, owners.get((container.id, container.ifname)), now=now, grace=grace, store=store)
        for container in sorted(containers, key=lambda c: c.id)
    ]


async def reconcile_own_host(journal: Journal, *, grace: float) -> Report:
    """Remove this host's containers that are gone from the kernel and free their addresses."""
    report = Report()
    containers = journal.view.origin_containers(journal.own_origin)
    if not containers:
        return report

    # The lock is held across the appends on purpose, so a plugin waiting
    # for it finds the reservations as this check left them.
    with DirectoryStore(journal.data_dir) as store:
        findings = await asyncio.to_thread(_check_all, containers, store, grace)
        for finding in findings:
            if finding.gone:
                await _remove(journal, finding, store)
                report.removed.append(finding)
            elif finding.detail == "live":
                report.live += 1
            else:
                report.unchecked.append(finding)

    if report.unchecked:
        logger.warning(
            "left %d containers of this host unchecked: %s",
            len(report.unchecked),
            "; ".join(f"{finding.container.id[:12]} ({finding.detail})" for finding in report.unchecked[:10]),
        )
    logger.info(
        "own-host check: %d live, %d gone and removed, %d unchecked",
        report.live, len(report.removed), len(report.unchecked),
    )
    return report


async def _remove(journal: Journal, finding: Finding, store: DirectoryStore) -> None:
    container = finding.container
    # createdAt names the instance, so the removal cannot touch a newer one
    # that reuses the id.
    change = Change(
        id=str(uuid.uuid4()),
        type=CONTAINER_REMOVED,
        data={"id": container.id, "reason": GONE_REASON, "createdAt": container.created_at},
        ts=format_time(time.time()),
    )
    event, _ = await journal.record_own(change)
    released = store.release(container.id, container.ifname)
    logger.info(
        "removed container %s (%s, %s) as seq %s: %s; freed %s",
        container.id[:12], container.hostname, container.ip, event.seq if event else "-", finding.detail,
        ", ".join(str(reservation.address) for reservation in released) or "no address",
    )
