"""Group commit: concurrent appends to one origin's log share one write and one fsync.

An appender hands its event to :meth:`GroupCommit.append` and waits. A batch
is written and fsynced in a worker thread, so the event loop keeps running.
Events that arrive meanwhile queue up and all go into the next batch. Under load the
fsync cost is spread over the whole batch instead of paid per event. With one
appender at a time a batch contains one event and nothing is delayed.

An append is acknowledged (its call returns) only after the fsync of its batch
returned. ``on_durable`` runs first, on the event loop thread, with the batch
in seq order: the journal applies the events to the view and wakes the streams
there, so nothing reaches a peer before it is on disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from flatnet.events.log import LogError, OriginLog
from flatnet.events.record import Event

# Bounds the memory and the latency of one batch; under heavier load the next
# batch starts right after.
MAX_BATCH_EVENTS = 4096


class GroupCommit:
    """The single writer of one origin's log, batching concurrent appends."""

    def __init__(self, log: OriginLog, on_durable: Callable[[Sequence[Event]], None] | None = None):
        self.log = log
        self.on_durable = on_durable
        self._pending: list[tuple[Event, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0

    def submit(self, event: Event) -> asyncio.Future[None]:
        """Queue ``event``, the next seq after every event submitted before it; the future
        completes once it is durable, or fails with the batch's error."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches(), name=f"group-commit-{self.log.origin}")
        return future

    async def append(self, event: Event) -> None:
        """Append ``event`` and wait until it is durable."""
        await self.submit(event)

    async def _write_batches(self) -> None:
        while self._pending:
            batch = self._pending[:MAX_BATCH_EVENTS]
            del self._pending[:MAX_BATCH_EVENTS]
            events = [event for event, _ in batch]
            try:
                await asyncio.to_thread(self.log.append_batch, events)
            except (LogError, OSError) as error:
                # Every later event was sequenced after this batch, so none of
                # them can follow it into the log either.
                failed = batch + self._pending
                self._pending = []
                for _, future in failed:
                    if not future.done():
                        future.set_exception(error)
                return
            self.batches += 1
            try:
                if self.on_durable is not None:
                    self.on_durable(events)
            except Exception as error:  # noqa: BLE001 - handed to every appender of the batch
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def flush(self) -> None:
        """Wait until every event handed in so far is written (or has failed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
