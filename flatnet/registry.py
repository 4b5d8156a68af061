"""The registry view: a pure fold of events into the containers of the fleet.

``View.apply`` does no I/O and reads no clock, so replay can rebuild any past
view from the log alone. Liveness (which origins are silent past the TTL) is
kept apart in :class:`Liveness`, with the time passed in by the caller.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Event


@dataclasses.dataclass(frozen=True, slots=True)
class Container:
    """One container as the view knows it."""

    id: str
    ip: str
    hostname: str
    ports: tuple[int, ...]
    host_id: int
    created_at: str
    ifname: str
    origin: int
    seq: int


class Outcome(enum.Enum):
    """What applying one event did to the view."""

    ADDED = "added"
    REPLACED = "replaced"
    REMOVED = "removed"
    UNCHANGED = "unchanged"


class View:
    """Containers keyed by id, and the version vector of the events applied."""

    def __init__(self) -> None:
        self.containers: dict[str, Container] = {}
        self.vector: dict[int, int] = {}

    def apply(self, event: Event) -> Outcome:
        """Fold ``event`` into the view; an event already applied changes nothing."""
        if event.seq <= self.vector.get(event.origin, 0):
            return Outcome.UNCHANGED
        # The vector moves only after the change succeeded, so an event that
        # raises leaves the view exactly as it was.
        outcome = self._change(event)
        self.vector[event.origin] = event.seq
        return outcome

    def _change(self, event: Event) -> Outcome:
        data = event.data
        if event.type == CONTAINER_ADDED:
            container = Container(
                id=data["id"],
                ip=data["ip"],
                hostname=data["hostname"].lower(),
                ports=tuple(data.get("ports", ())),
                host_id=data["hostId"],
                created_at=data.get("createdAt", event.ts),
                ifname=data.get("ifname", "eth0"),
                origin=event.origin,
                seq=event.seq,
            )
            previous = self.containers.get(container.id)
            self.containers[container.id] = container
            return Outcome.REPLACED if previous else Outcome.ADDED

        if event.type == CONTAINER_REMOVED:
            current = self.containers.get(data["id"])
            # Only the origin that added a container can remove it.
            if current is not None and current.origin == event.origin:
                del self.containers[data["id"]]
                return Outcome.REMOVED
            return Outcome.UNCHANGED

        raise ValueError(f"view cannot apply event type {event.type!r}")

    def apply_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.apply(event)

    def named(self, hostname: str, *, expired_origins: frozenset[int] = frozenset()) -> list[Container]:
        """Live containers called ``hostname``, the one that wins first.

        Of two live containers with one name, the most recently created wins;
        origin and id break ties so that every gateway picks the same one.
        """
        matches = [
            container
            for container in self.containers.values()
            if container.hostname == hostname and container.origin not in expired_origins
        ]
        matches.sort(key=lambda c: (c.created_at, c.origin, c.id), reverse=True)
        return matches

    def conflicts(self, *, expired_origins: frozenset[int] = frozenset()) -> dict[str, list[Container]]:
        """Names held by more than one live container."""
        by_name: dict[str, list[Container]] = {}
        for container in self.containers.values():
            if container.origin not in expired_origins:
                by_name.setdefault(container.hostname, []).append(container)
        return {name: self.named(name, expired_origins=expired_origins) for name, held in by_name.items() if len(held) > 1}


class Liveness:
    """When each origin was last heard from, on the receiver's monotonic clock."""

    def __init__(self, own_origin: int, ttl: float):
        self.own_origin = own_origin
        self.ttl = ttl
        self.last_heard: dict[int, float] = {}

    def heard(self, origin: int, now: float) -> bool:
        """Record a frame from ``origin``; return True if it had expired before."""
        was_expired = self.is_expired(origin, now)
        self.last_heard[origin] = now
        return was_expired

    def remaining(self, origin: int, now: float) -> float:
        """Seconds until ``origin`` expires; the own origin always has the full TTL."""
        if origin == self.own_origin:
            return self.ttl
        last = self.last_heard.get(origin)
        if last is None:
            return 0.0
        return max(0.0, self.ttl - (now - last))

    def is_expired(self, origin: int, now: float) -> bool:
        return origin != self.own_origin and self.remaining(origin, now) <= 0

    def expired(self, origins: Iterable[int], now: float) -> frozenset[int]:
        return frozenset(origin for origin in origins if self.is_expired(origin, now))
