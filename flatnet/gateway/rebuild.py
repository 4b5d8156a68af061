"""Rebuilding the view at start-up: the newest snapshot, then the events after it.

Folding is CPU-bound Python, so a long backlog is folded by several processes
at once: the view depends only on each origin's own events, so each process
folds its share of the origins and the parent takes over their results. The
children are forked, so they start with the parent's snapshot state and
modules, and only their results cross a pipe. A child that fails is
replaced by the parent folding its share itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import pickle
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from flatnet.events import snapshot as snapshots
from flatnet.events.log import EventLog, LogError, OriginFailed
from flatnet.logs import log as logger
from flatnet.registry import View, ViewStateError

# Below this many bytes of backlog a fork costs more than it saves.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024
# Below this many bytes of backlog (about 10,000 records) the indexes are kept
# up per event: rebuilding them for the whole view would cost more.
DEFERRED_INDEX_MIN_BYTES = 4 * 1024 * 1024


@dataclasses.dataclass
class Rebuilt:
    """A view rebuilt from disk, and how."""

    view: View
    snapshot: snapshots.Snapshot | None
    events: int
    processes: int


def load_snapshot_view(data_dir: Path) -> tuple[View, snapshots.Snapshot | None]:
    """Load the view of the newest snapshot that passes its checks, or return an empty view.

    The snapshot comes back without its view state, which the view now holds.
    """
    for path in reversed(snapshots.list_snapshots(snapshots.snapshot_dir(data_dir))):
        try:
            with gc_paused():
                snapshot = snapshots.load_snapshot(path)
                view = View.from_state(snapshot.view, snapshot.vector)
            # The parsed state is as big as the view: let it go before the fold.
            return view, dataclasses.replace(snapshot, view={})
        except (snapshots.SnapshotError, ViewStateError) as error:
            logger.error("skipped snapshot %s: %s; trying an older one", path, error)
    return View(), None


def rebuild(
    log: EventLog,
    view: View,
    snapshot: snapshots.Snapshot | None = None,
    *,
    tombstone_cutoff: str = "",
    processes: int | None = None,
) -> Rebuilt:
    """Fold every working origin's events after ``view`` (loaded from ``snapshot``, or empty) into it.

    Every record after the snapshot is read and checked here, so ``log`` may
    be opened with ``tail_only``. An origin whose log fails while it is read
    stops there, and the log records the failure. Its events up to that point
    stay in the view.
    """
    if tombstone_cutoff:
        view.prune_tombstones(tombstone_cutoff)
    origins = [origin for origin in log.origins() if origin not in log.failures]
    _refold_origins_without_aliases(view, log, origins)
    processes = processes or os.cpu_count() or 1
    backlog = {origin: _backlog_bytes(log, origin, view.vector.get(origin, 0)) for origin in origins}

    total = sum(backlog.values())
    indexes = view.deferred_indexes() if total >= DEFERRED_INDEX_MIN_BYTES else contextlib.nullcontext()
    with gc_paused(), indexes:
        groups = _split(origins, backlog, processes) if total >= PARALLEL_MIN_BYTES else [origins]
        if len(groups) > 1 and threading.active_count() == 1:
            events = _fold_in_processes(view, log, groups)
        else:
            groups = [origins]
            events = _fold_origins(view, log, origins)
    # The rebuilt view lives as long as the gateway: keep the collector from
    # scanning it again and again.
    gc.freeze()
    return Rebuilt(view, snapshot, events, len(groups))


def _refold_origins_without_aliases(view: View, log: EventLog, origins: list[int]) -> None:
    """Drop the snapshot's part of each origin whose containers lack aliases, when its whole log is still there.

    Such a part comes from a snapshot written before the view kept aliases.
    Dropping it makes the fold read that origin from seq 1, which restores
    the aliases. Where retention deleted the first events (or the log is
    missing or stopped), the part stays, and its containers have no aliases
    until they are announced again.
    """
    for origin in sorted(view.origins_without_aliases):
        if origin in origins and log.origin(origin).compacted_through == 0:
            dropped = view.drop_origin(origin)
            logger.info(
                "snapshot of origin %d was written before aliases were kept; folding its %d container(s) again from seq 1",
                origin, dropped,
            )
        else:
            logger.warning(
                "snapshot of origin %d was written before aliases were kept, and its log cannot be read from seq 1"
                " (retention deleted the first events, or the log is missing or stopped);"
                " its containers have no aliases until they are announced again",
                origin,
            )
    view.origins_without_aliases.clear()


def _fold_origins(view: View, log: EventLog, origins: list[int]) -> int:
    events = 0
    for origin in origins:
        try:
            events += view.fold_batches(log.origin(origin).read_batches(view.vector.get(origin, 0)))
        except LogError as error:
            logger.error("stopped folding origin %d: %s", origin, error)
    return events


def _fold_in_processes(view: View, log: EventLog, groups: list[list[int]]) -> int:
    children = []
    for group in groups[1:]:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _run_child(view, log, group, write_end)
        os.close(write_end)
        children.append((pid, read_end, group))

    events = _fold_origins(view, log, groups[0])
    for pid, read_end, group in children:
        with os.fdopen(read_end, "rb") as pipe:
            body = pipe.read()
        _, status = os.waitpid(pid, 0)
        try:
            result = pickle.loads(body)
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            logger.warning(
                "fold process %d for origins %s failed (wait status %d, %s); folding them here",
                pid, group, status, error,
            )
            events += _fold_origins(view, log, group)
            continue
        events += result["events"]
        view.take_origins(result["state"])
        for origin, message in result["failures"].items():
            log.origin(origin).failure = LogError(message)
            logger.error("stopped folding origin %d: %s", origin, message)
    return events


def _run_child(view: View, log: EventLog, group: list[int], write_end: int) -> None:
    # A forked child: it folds its origins, sends the result and exits
    # without running the parent's cleanup (atexit handlers, open files).
    # The parent's signal handlers would wake the parent's event loop through
    # the inherited wakeup descriptor, so a signal simply ends the child.
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    status = 1
    try:
        failures = {}
        events = 0
        for origin in group:
            try:
                events += view.fold_batches(log.origin(origin).read_batches(view.vector.get(origin, 0)))
            except LogError as error:
                failures[origin] = str(error)
        body = pickle.dumps(
            {"events": events, "state": view.give_origins(group), "failures": failures},
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(body)
        status = 0
    finally:
        os._exit(status)


def _backlog_bytes(log: EventLog, origin: int, after: int) -> int:
    try:
        return log.origin(origin).bytes_after(after)
    except OriginFailed:
        return 0


def _split(origins: list[int], weights: dict[int, int], parts: int) -> list[list[int]]:
    """Split ``origins`` into at most ``parts`` groups of about equal weight (largest first, greedy)."""
    groups: list[list[int]] = [[] for _ in range(parts)]
    totals = [0] * parts
    for origin in sorted(origins, key=lambda origin: weights[origin], reverse=True):
        smallest = totals.index(min(totals))
        groups[smallest].append(origin)
        totals[smallest] += weights[origin]
    return [group for group in groups if group]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the body.

    A fold, a replay or a verify makes millions of objects and no reference
    cycles, so collecting while it runs costs a third of the fold's time and frees nothing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
