"""The gateway's side of the log: sequencing own changes, storing replicas,
keeping the view current, snapshots and retention, and waking the streams
that wait for new events.

Own changes are deduplicated by event id, so a change that arrives from the
outbox and directly is appended once. Replica events are deduplicated by seq.
Own appends go through group commit: concurrent changes share one fsync, and
each is applied to the view and offered to streams only once it is durable.

Start-up loads the newest snapshot and folds the events after it. A snapshot
is written every ``snapshot_every_events`` events or ``snapshot_every_seconds``
seconds (whichever comes first) and on a clean close. After each one,
tombstones older than the tombstone retention are dropped. Segments that the
oldest kept snapshot covers and that are older than ``retention`` are deleted.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from flatnet.events import outbox
from flatnet.events import snapshot as snapshots
from flatnet.events.commit import GroupCommit
from flatnet.events.log import DEFAULT_SEGMENT_BYTES, EventLog, LogError, OriginFailed
from flatnet.events.record import Change, Event
from flatnet.gateway.rebuild import load_snapshot_view, rebuild
from flatnet.logs import log as logger
from flatnet.registry import Outcome, View, format_time

# Events a stream may fall behind before it is closed; the follower then
# reconnects and catches up from the log on disk.
SUBSCRIBER_QUEUE_EVENTS = 10_000
# Duplicates come from a change posted directly and also written to the
# outbox (a post that timed out late), which the gateway drains within
# seconds. So ids older than the last this many own events are forgotten.
DEDUPE_WINDOW_EVENTS = 20_000
# Snapshots kept besides the newest: start-up falls back to one of them if the
# newest cannot be read, so retention keeps what they need too.
SNAPSHOTS_KEPT = 2


@dataclasses.dataclass(frozen=True)
class NodeIdentity:
    """This gateway's id and start count, written into every own event."""

    node: str
    epoch: int


@dataclasses.dataclass(frozen=True)
class JournalPolicy:
    """When the journal writes snapshots and what it keeps; times in seconds."""

    snapshot_every_events: int = 10_000
    snapshot_every_seconds: float = 300.0
    retention: float = 7 * 24 * 3600.0
    tombstone_retention: float = 24 * 3600.0
    segment_bytes: int = DEFAULT_SEGMENT_BYTES


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

    def __init__(self, data_dir: Path, own_origin: int, identity: NodeIdentity, policy: JournalPolicy = JournalPolicy()):
        self.data_dir = data_dir
        self.own_origin = own_origin
        self.identity = identity
        self.policy = policy
        started = time.monotonic()
        view, snapshot = load_snapshot_view(data_dir)
        # The fold below reads and checks every record after the snapshot, so
        # opening needs to check only each origin's tail.
        self.log = EventLog(data_dir, segment_bytes=policy.segment_bytes, tail_only=True)
        self._subscriptions: set[Subscription] = set()
        # Called with every event appended and what it did to the view (metrics use it).
        self.listeners: list[Callable[[Event, Outcome], None]] = []

        for origin, error in self.log.failures.items():
            logger.error("origin %d is stopped and is not folded: %s", origin, error)
        for origin in self.log.origins():
            self._report_repair(origin)

        cutoff = format_time(time.time() - policy.tombstone_retention)
        rebuilt = rebuild(self.log, view, snapshot, tombstone_cutoff=cutoff)
        self.view: View = rebuilt.view
        self.snapshot = _without_view(rebuilt.snapshot)
        logger.info(
            "view rebuilt in %.2f s: snapshot %s, then %d events folded in %d process(es); %d containers",
            time.monotonic() - started,
            rebuilt.snapshot.path.name if rebuilt.snapshot else "none",
            rebuilt.events, rebuilt.processes, len(self.view.containers),
        )
        self._check_own_log_is_complete()

        self._events_since_snapshot = rebuilt.events
        self._last_snapshot_time = time.monotonic()
        self._snapshot_task: asyncio.Task | None = None
        self._snapshot_lock = threading.Lock()
        # Snapshots are numbered as prepared, and only a newer one than the newest stored is written.
        self._snapshots_prepared = 0
        self._newest_stored = 0

        self._own_ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._draining: set[Path] = set()
        self._reported_outbox_stuck = False
        self._sequenced = 0
        self._committer: GroupCommit | None = None
        if own_origin not in self.log.failures:
            own = self.log.origin(own_origin)
            self._sequenced = own.head
            self._committer = GroupCommit(own, self._on_own_durable)
            self._load_own_ids(own.head)

    def _report_repair(self, origin: int) -> None:
        try:
            repair = self.log.origin(origin).repair
        except OriginFailed:
            return
        if repair is not None:
            logger.warning(
                "cut %d bytes off the tail of %s at byte offset %d: %s",
                repair.dropped_bytes, repair.path, repair.offset, repair.reason,
            )

    def _check_own_log_is_complete(self) -> None:
        # A snapshot ahead of the own log means the log lost events that
        # peers already have; appending would reuse their seqs.
        if self.own_origin in self.log.failures:
            return
        own = self.log.origin(self.own_origin)
        applied = self.view.vector.get(self.own_origin, 0)
        if own.head < applied:
            own.failure = LogError(
                f"the log of this host (origin {self.own_origin}) ends at seq {own.head}, "
                f"but the snapshot already covers seq {applied}; restore the log's missing segments"
            )
            logger.error("origin %d is stopped: %s", self.own_origin, own.failure)

    def _load_own_ids(self, head: int) -> None:
        own = self.log.origin(self.own_origin)
        after = max(0, head - DEDUPE_WINDOW_EVENTS, own.first_seq - 1)
        try:
            for batch in own.read_batches(after):
                for fields in batch:
                    self._remember_own_id(fields["id"])
        except LogError as error:
            logger.error("origin %d is stopped: %s", self.own_origin, error)

    def _remember_own_id(self, event_id: str) -> None:
        self._own_ids[event_id] = None
        if len(self._own_ids) > DEDUPE_WINDOW_EVENTS:
            self._own_ids.popitem(last=False)

    # Heads and failures

    def head(self, origin: int) -> int:
        """Return the last seq stored of ``origin``, or for a stopped origin the last one folded into the view."""
        try:
            log = self.log.origin(origin)
        except OriginFailed:
            return self.view.vector.get(origin, 0)
        return log.head if log.failure is None else self.view.vector.get(origin, 0)

    @property
    def failures(self) -> dict[int, str]:
        """Stopped origins and why, for health reports."""
        return {origin: str(error) for origin, error in self.log.failures.items()}

    def is_stopped(self, origin: int) -> bool:
        return origin in self.log.failures

    # Own changes

    async def record_own(self, change: Change) -> tuple[Event | None, bool]:
        """Append ``change`` to the own log after anything waiting in the outbox,
        and return once it is durable: the event and whether it is new.

        Draining first keeps a host's changes in the order they happened: an
        ADD that went to the outbox is never appended after its own DEL.
        """
        self._sequence_outbox()
        event, durable = self._sequence(change)
        await durable
        return event, event is not None

    async def drain_outbox(self) -> int:
        """Append every change waiting in the outbox, oldest first; return how many were new.

        While this host's log is stopped the changes stay in the outbox, and
        that is logged once.
        """
        if self.is_stopped(self.own_origin) or self._committer is None:
            if not self._reported_outbox_stuck and outbox.pending(self.data_dir):
                self._reported_outbox_stuck = True
                logger.error(
                    "outbox changes stay in %s: the log of this host is stopped: %s",
                    outbox.outbox_dir(self.data_dir), self.failures.get(self.own_origin),
                )
            return 0
        sequenced = self._sequence_outbox()
        if sequenced:
            await asyncio.gather(*(durable for _, durable in sequenced), return_exceptions=True)
        return sum(1 for event, durable in sequenced if event is not None and not _failed(durable))

    def _sequence(self, change: Change) -> tuple[Event | None, asyncio.Future[None]]:
        """Give ``change`` the next own seq and hand it to group commit; a duplicate gets None
        and waits for its first copy instead."""
        inflight = self._inflight.get(change.id)
        if inflight is not None:
            return None, inflight
        if change.id in self._own_ids:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return None, done
        if self._committer is None or self._committer.log.failure is not None:
            raise OriginFailed(self.own_origin, self.log.failures.get(self.own_origin) or LogError("no writer"))

        self._sequenced += 1
        event = Event(
            origin=self.own_origin,
            seq=self._sequenced,
            ts=change.ts,
            node=self.identity.node,
            epoch=self.identity.epoch,
            id=change.id,
            type=change.type,
            v=change.v,
            data=change.data,
        )
        durable = self._committer.submit(event)
        self._inflight[change.id] = durable
        durable.add_done_callback(lambda future, event=event: self._settle(event, future))
        return event, durable

    def _settle(self, event: Event, durable: asyncio.Future[None]) -> None:
        del self._inflight[event.id]
        if _failed(durable):
            # A failed batch fails every event queued after it too, so the
            # next seq follows what the log holds.
            self._sequenced = self._committer.log.head
            return
        self._remember_own_id(event.id)

    def _on_own_durable(self, events: Sequence[Event]) -> None:
        for event in events:
            self._publish(event)

    def _sequence_outbox(self) -> list[tuple[Event | None, asyncio.Future[None]]]:
        """Sequence the outbox changes not yet handed to group commit, oldest first.

        Each file is deleted once its change is durable. A file that cannot be
        read is moved aside to ``outbox/rejected/`` and reported: dropping it
        would lose a change, retrying it would block the rest.
        """
        sequenced = []
        for path in outbox.pending(self.data_dir):
            if path in self._draining:
                continue
            try:
                change = outbox.read_change(path)
            except outbox.OutboxError as error:
                rejected = path.parent / "rejected"
                rejected.mkdir(exist_ok=True)
                path.rename(rejected / path.name)
                logger.error("moved unreadable outbox file to %s: %s", rejected / path.name, error)
                continue
            event, durable = self._sequence(change)
            self._draining.add(path)
            durable.add_done_callback(lambda future, path=path, change=change, event=event: self._drained(path, change, event, future))
            sequenced.append((event, durable))
        return sequenced

    def _drained(self, path: Path, change: Change, event: Event | None, durable: asyncio.Future[None]) -> None:
        self._draining.discard(path)
        if _failed(durable):
            error = "cancelled" if durable.cancelled() else durable.exception()
            logger.error("outbox change %s stays in %s: appending it failed: %s", change.id, path, error)
            return
        if event is not None:
            logger.info("appended outbox change %s (%s) as seq %d", change.id, change.type, event.seq)
        path.unlink(missing_ok=True)

    # Replicas

    def store_replica(self, event: Event) -> Outcome:
        """Append a peer's event to its replica; an event already stored is skipped."""
        replica = self.log.origin(event.origin)
        if event.seq <= replica.head:
            return Outcome.UNCHANGED
        replica.append(event)
        return self._publish(event)

    def store_replica_batch(self, events: list[Event]) -> None:
        """Append a peer's consecutive events to its replica with one fsync, then apply them in order.

        Events already stored are skipped, as by :meth:`store_replica`.
        """
        if not events:
            return
        replica = self.log.origin(events[0].origin)
        fresh = [event for event in events if event.seq > replica.head]
        if not fresh:
            return
        replica.append_batch(fresh)
        for event in fresh:
            self._publish(event)

    def _publish(self, event: Event) -> Outcome:
        outcome = self.view.apply(event)
        for listener in self.listeners:
            listener(event, outcome)
        for subscription in list(self._subscriptions):
            if subscription.origin == event.origin:
                subscription.offer(event)
        self._events_since_snapshot += 1
        if self._events_since_snapshot >= self.policy.snapshot_every_events:
            self.schedule_snapshot()
        return outcome

    def reset_replica(self, origin: int) -> tuple[Path | None, int]:
        """Start ``origin``'s replica over, for a peer that responded with a reset.

        The old replica is archived, its containers leave the view, and a
        snapshot is written at once, so that a restart cannot bring the old
        incarnation back from an older snapshot. Returns the archive and how
        many containers left.
        """
        archived = self.log.archive_origin(origin)
        dropped = self.view.drop_origin(origin)
        self.write_snapshot_now()
        return archived, dropped

    def adopt_snapshot(self, origin: int, head: int, state: object) -> int:
        """Replace ``origin``'s replica and view with a peer's snapshot at seq ``head``.

        For a replica too far behind to catch up from events the peer has
        compacted away. The view is checked first, so a bad snapshot changes
        nothing; a snapshot of our own view is written after, so a restart
        starts from the adopted state. Returns how many containers it holds.
        """
        scratch = View()
        scratch.replace_origin(origin, state, head)
        held = self.view.replace_origin(origin, state, head)
        self.log.restart_origin_after(origin, head)
        self.write_snapshot_now()
        return held

    def subscribe(self, origin: int, limit: int = SUBSCRIBER_QUEUE_EVENTS) -> Subscription:
        subscription = Subscription(origin, limit)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    # Snapshots and retention

    def snapshot_due(self) -> bool:
        """Tell whether events arrived since the last snapshot and the snapshot interval has passed."""
        return (
            self._events_since_snapshot > 0
            and time.monotonic() - self._last_snapshot_time >= self.policy.snapshot_every_seconds
        )

    def schedule_snapshot(self) -> None:
        """Start writing a snapshot in the background, unless one is being written.

        Without a running event loop nothing starts: close() writes one then.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._snapshot_task is None or self._snapshot_task.done():
            self._snapshot_task = loop.create_task(self._write_snapshot_logged(), name="snapshot")

    async def _write_snapshot_logged(self) -> None:
        try:
            await self.write_snapshot()
        except (OSError, snapshots.SnapshotError) as error:
            logger.error("failed to write a snapshot: %s; retrying after the next %d events", error, self.policy.snapshot_every_events)

    async def write_snapshot(self) -> snapshots.Snapshot:
        """Write a snapshot of the view as it is now, then apply retention.

        Returns the snapshot written, or the newer one that made it unnecessary.
        """
        generation, prepared = self._prepare_snapshot()
        written = await asyncio.to_thread(self._store_snapshot, generation, prepared)
        if written is None:
            return self.snapshot
        self._after_snapshot(written)
        return written

    def write_snapshot_now(self) -> snapshots.Snapshot:
        """Write a snapshot and apply retention without an event loop (on a clean close)."""
        written = self._store_snapshot(*self._prepare_snapshot())
        if written is None:
            return self.snapshot
        self._after_snapshot(written)
        return written

    def _prepare_snapshot(self) -> tuple[int, snapshots.Snapshot]:
        # Taken on the loop thread, so the state matches the vector exactly.
        now = time.time()
        dropped = self.view.prune_tombstones(format_time(now - self.policy.tombstone_retention))
        if dropped:
            logger.info("dropped %d tombstones older than %.0f s", dropped, self.policy.tombstone_retention)
        self._events_since_snapshot = 0
        self._last_snapshot_time = time.monotonic()
        self._snapshots_prepared += 1
        return self._snapshots_prepared, snapshots.Snapshot(
            vector=dict(self.view.vector),
            view=self.view.export_state(),
            digest="",
            origin=self.own_origin,
            node=self.identity.node,
            created_at=format_time(now),
        )

    def _store_snapshot(self, generation: int, prepared: snapshots.Snapshot) -> snapshots.Snapshot | None:
        """Write ``prepared`` as the newest snapshot, or return None if a later-prepared one is already stored.

        The background snapshot runs in a worker thread while a reset or a
        close can write one on the loop's thread, so writers take turns. A
        snapshot stored after a later-prepared one would become the newest
        file with an older view, which after a reset still contains the old
        incarnation's containers.
        """
        prepared = dataclasses.replace(prepared, digest=snapshots.compute_digest(prepared.vector, prepared.view))
        directory = snapshots.snapshot_dir(self.data_dir)
        with self._snapshot_lock:
            if generation < self._newest_stored:
                logger.debug("skipped snapshot at vector %s: a later one is already stored", prepared.vector)
                return None
            written = snapshots.write_snapshot(directory, prepared)
            snapshots.prune_snapshots(directory, SNAPSHOTS_KEPT)
            self._newest_stored = generation
        return written

    def _after_snapshot(self, written: snapshots.Snapshot) -> None:
        self.snapshot = _without_view(written)
        logger.info("wrote snapshot %s at vector %s", written.path, written.vector)
        self.compact()

    def compact(self) -> dict[int, int]:
        """Delete segments that every kept snapshot covers and that are older than the retention.

        Returns how many segments each origin lost.
        """
        directory = snapshots.snapshot_dir(self.data_dir)
        kept = snapshots.list_snapshots(directory)
        if not kept:
            return {}
        try:
            oldest = snapshots.load_snapshot(kept[0])
        except snapshots.SnapshotError as error:
            logger.error("retention skipped: %s", error)
            return {}
        older_than = time.time() - self.policy.retention
        deleted = {}
        for origin, covered in oldest.vector.items():
            try:
                removed = self.log.origin(origin).compact(covered, older_than)
            except (OriginFailed, OSError) as error:
                logger.error("retention skipped origin %d: %s", origin, error)
                continue
            if removed:
                deleted[origin] = len(removed)
                logger.info(
                    "retention deleted %d segments of origin %d up to seq %d",
                    len(removed), origin, self.log.origin(origin).compacted_through,
                )
        return deleted

    async def close_async(self) -> None:
        """Wait for own appends in flight and any snapshot being written, then close."""
        if self._committer is not None:
            await self._committer.flush()
        if self._snapshot_task is not None:
            await asyncio.gather(self._snapshot_task, return_exceptions=True)
        self.close()

    def close(self) -> None:
        """Write a last snapshot if anything changed since the one before, and close the logs."""
        if self._events_since_snapshot > 0 and (self._snapshot_task is None or self._snapshot_task.done()):
            try:
                self.write_snapshot_now()
            except OSError as error:
                logger.error("failed to write the closing snapshot: %s; the next start folds the log instead", error)
        self.log.close()


def _without_view(snapshot: snapshots.Snapshot | None) -> snapshots.Snapshot | None:
    # The journal keeps a snapshot's vector and names. Its view state is as
    # big as the view itself and is not needed once loaded or written.
    return dataclasses.replace(snapshot, view={}) if snapshot is not None else None


def _failed(future: asyncio.Future[None]) -> bool:
    return future.cancelled() or future.exception() is not None
