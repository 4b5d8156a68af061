"""The gateway's side of the log: sequencing own changes, storing replicas,
keeping the view current and waking the streams that wait for new events.

Own changes are deduplicated by event id, so a change that arrives from the
outbox and directly is appended once. Replica events are deduplicated by seq.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from flatnet.events import outbox
from flatnet.events.log import EventLog, LogError
from flatnet.events.record import Change, Event
from flatnet.logs import log as logger
from flatnet.registry import Outcome, View

# Events a stream may fall behind before it is closed; the follower then
# reconnects and catches up from the log on disk.
SUBSCRIBER_QUEUE_EVENTS = 10_000


@dataclasses.dataclass(frozen=True)
class NodeIdentity:
    """This gateway's id and start count, written into every own event."""

    node: str
    epoch: int


def next_identity(data_dir: Path) -> NodeIdentity:
    """Load the node id from ``data_dir/node.json`` and count this start."""
    path = data_dir / "node.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            node, epoch = str(uuid.UUID(stored["node"])), int(stored["epoch"])
        except (ValueError, KeyError, TypeError) as error:
            raise LogError(f"node identity file {path} is unreadable ({error}); restore it or remove it to start as a new node") from None
    else:
        node, epoch = str(uuid.uuid4()), 0
    identity = NodeIdentity(node, epoch + 1)

    temporary = path.with_suffix(".tmp")
    with open(temporary, "w") as file:
        json.dump({"node": identity.node, "epoch": identity.epoch}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    return identity


class StreamOverrun(Exception):
    """A subscriber fell too far behind and must catch up from the log."""


class Subscription:
    def __init__(self, origin: int, limit: int = SUBSCRIBER_QUEUE_EVENTS):
        self.origin = origin
        self.queue: asyncio.Queue[Event] = asyncio.Queue(limit)
        self.overrun = False

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overrun = True


class Journal:
    """All origins' logs of one gateway, the view folded from them, and their subscribers."""

    def __init__(self, data_dir: Path, own_origin: int, identity: NodeIdentity):
        self.data_dir = data_dir
        self.own_origin = own_origin
        self.identity = identity
        self.log = EventLog(data_dir)
        self.view = View()
        self._own_ids: set[str] = set()
        self._subscriptions: set[Subscription] = set()
        # Called with every event appended and what it did to the view (metrics use it).
        self.listeners: list[Callable[[Event, Outcome], None]] = []
        self.write_lock = asyncio.Lock()

        for origin in self.log.origins():
            origin_log = self.log.origin(origin)
            if origin_log.repair is not None:
                repair = origin_log.repair
                logger.warning(
                    "cut %d bytes off the tail of %s at byte offset %d: %s",
                    repair.dropped_bytes, repair.path, repair.offset, repair.reason,
                )
            for event in origin_log.read(0):
                self.view.apply(event)
                if origin == own_origin:
                    self._own_ids.add(event.id)
        self.log.origin(own_origin)

    def head(self, origin: int) -> int:
        return self.log.origin(origin).head

    def record_own(self, change: Change) -> tuple[Event | None, bool]:
        """Append ``change`` to the own log; return the event and whether it is new."""
        if change.id in self._own_ids:
            return None, False
        own = self.log.origin(self.own_origin)
        event = Event(
            origin=self.own_origin,
            seq=own.head + 1,
            ts=change.ts,
            node=self.identity.node,
            epoch=self.identity.epoch,
            id=change.id,
            type=change.type,
            v=change.v,
            data=change.data,
        )
        own.append(event)
        self._own_ids.add(event.id)
        self._publish(event)
        return event, True

    def store_replica(self, event: Event) -> Outcome:
        """Append a peer's event to its replica; an event already stored is skipped."""
        replica = self.log.origin(event.origin)
        if event.seq <= replica.head:
            return Outcome.UNCHANGED
        replica.append(event)
        return self._publish(event)

    def _publish(self, event: Event) -> Outcome:
        outcome = self.view.apply(event)
        for listener in self.listeners:
            listener(event, outcome)
        for subscription in list(self._subscriptions):
            if subscription.origin == event.origin:
                subscription.offer(event)
        return outcome

    def subscribe(self, origin: int, limit: int = SUBSCRIBER_QUEUE_EVENTS) -> Subscription:
        subscription = Subscription(origin, limit)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def drain_outbox(self) -> int:
        """Append every change waiting in the outbox, oldest first; return how many were new.

        A file that cannot be read is moved aside to ``outbox/rejected/`` and
        reported: dropping it would lose a change, retrying it would block the rest.
        """
        appended = 0
        for path in outbox.pending(self.data_dir):
            try:
                change = outbox.read_change(path)
            except outbox.OutboxError as error:
                rejected = path.parent / "rejected"
                rejected.mkdir(exist_ok=True)
                path.rename(rejected / path.name)
                logger.error("moved unreadable outbox file to %s: %s", rejected / path.name, error)
                continue
            event, is_new = self.record_own(change)
            if is_new:
                appended += 1
                logger.info("appended outbox change %s (%s) as seq %d", change.id, change.type, event.seq)
            path.unlink()
        return appended

    def close(self) -> None:
        self.log.close()

