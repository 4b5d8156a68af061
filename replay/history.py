"""The history of every container name: which containers held it, in each origin, after each event.

The registry view depends only on each origin's own events in their order, so
the view at any version vector is the union, over origins, of each origin's
view at its seq in the vector. This module folds each origin's log once, with
the registry's own fold (:meth:`flatnet.registry.View.fold_batches`) on a view
of that origin alone, and keeps, per name and origin, the list of containers
holding the name after every event that changed it. Looking a name up at any
vector is then one binary search per origin that ever held the name, in any
order of vectors: no view is folded again per decision.
"""

from __future__ import annotations

import bisect
import dataclasses
import operator
from collections.abc import Iterable
from typing import Any, NamedTuple

from flatnet.events import snapshot as snapshots
from flatnet.events.record import CONTAINER_ADDED
from flatnet.gateway.rebuild import gc_paused
from flatnet.registry import Container, View, state_entry
from flatnet.replay.datadir import DataDir, OriginFiles
from flatnet.replay.times import event_seconds


class Change(NamedTuple):
    """One event that changed which containers of its origin hold a name."""

    origin: int
    seq: int
    ts: str
    seconds: float
    # The latest ts among this origin's events up to this one: from then on,
    # by its own log, the origin had made this change.
    known: float
    type: str
    container_id: str
    reason: str | None
    # The instance the event removed or replaced, and the one it added.
    before: Container | None
    after: Container | None


class Steps:
    """The containers called one name in one origin, after each change to them, oldest first.

    ``states[i]`` is in force from seq ``seqs[i]`` on, ranked as the view
    ranks them. Before ``seqs[0]`` the origin held no container of that name.
    """

    __slots__ = ("origin", "seqs", "states", "known", "changes")

    def __init__(self, origin: int):
        self.origin = origin
        self.seqs: list[int] = []
        self.states: list[tuple[Container, ...]] = []
        self.known: list[float] = []
        self.changes: list[Change | None] = []

    def index_at(self, seq: int) -> int:
        """Return the index of the state in force at ``seq``, or -1 when none is."""
        return bisect.bisect_right(self.seqs, seq) - 1

    def state_at(self, seq: int) -> tuple[Container, ...]:
        index = bisect.bisect_right(self.seqs, seq) - 1
        return self.states[index] if index >= 0 else ()


class NameHistory:
    """Every origin's steps for one name, in origin order."""

    __slots__ = ("name", "steps", "single")

    def __init__(self, name: str):
        self.name = name
        self.steps: list[Steps] = []
        # The one origin's steps when only one origin ever held the name, the usual case.
        self.single: Steps | None = None

    def finish(self) -> None:
        self.steps.sort(key=lambda steps: steps.origin)
        self.single = self.steps[0] if len(self.steps) == 1 else None


@dataclasses.dataclass
class OriginSpan:
    """The part of one origin's log that replay can rebuild views from."""

    origin: int
    # Views of this origin are known from seq ``base`` to seq ``head``. A base
    # above 0 is a snapshot's seq, because retention deleted what came before.
    base: int
    head: int
    failure: str | None = None
    # When the snapshot that the history starts from was written; -inf for a history from seq 1.
    base_time: float = float("-inf")
    torn_tail: bool = False
    # For every seq from base + 1 to head, the origin's latest ts up to it (POSIX time),
    # and the names whose holders the event changed.
    known: list[float] = dataclasses.field(default_factory=list)
    touched: list[tuple[str, ...]] = dataclasses.field(default_factory=list)

    def seq_known_by(self, seconds: float) -> int:
        """Return the last seq this origin's log held at time ``seconds`` (by its events' ts), at least ``base``."""
        return self.base + bisect.bisect_right(self.known, seconds)


class History:
    """Every name's history, and what each origin's log covers."""

    def __init__(self) -> None:
        self.names: dict[str, NameHistory] = {}
        self.spans: dict[int, OriginSpan] = {}
        self.changes: list[Change] = []

    def new_steps(self, name: str, origin: int) -> Steps:
        """Start the steps of ``name`` in ``origin``; each origin is folded once, so each pair starts once."""
        history = self.names.get(name)
        if history is None:
            history = self.names[name] = NameHistory(name)
        steps = Steps(origin)
        history.steps.append(steps)
        return steps

    def holders(self, name: str, vector: dict[int, int]) -> tuple[Container, ...]:
        """Return every live container called ``name`` at ``vector``, expired origins included, ranked as the view ranks them."""
        history = self.names.get(name)
        if history is None:
            return ()
        if history.single is not None:
            return history.single.state_at(vector.get(history.single.origin, 0))
        found: list[Container] = []
        for steps in history.steps:
            found += steps.state_at(vector.get(steps.origin, 0))
        return rank(name, found)


def rank(name: str, containers: list[Container]) -> tuple[Container, ...]:
    """Rank containers of several origins that share ``name`` with the registry view's own rule.

    The containers are put in a throwaway view and looked up there, so the
    winner is whatever :meth:`flatnet.registry.View.named` picks.
    """
    if len(containers) < 2:
        return tuple(containers)
    state = {
        "containers": [state_entry(container) for container in containers],
        "tombstones": [],
        "tombstoneCutoff": "",
    }
    vector: dict[int, int] = {}
    for container in containers:
        vector[container.origin] = max(vector.get(container.origin, 0), container.seq)
    return tuple(View.from_state(state, vector).named(name))


def build_history(data_dir: DataDir, snapshot_list: list[snapshots.Snapshot] | None = None) -> History:
    """Fold every origin's log of ``data_dir`` into a History.

    An origin whose first events retention deleted starts from the oldest
    snapshot that covers the deletion. An origin whose log is damaged is
    rebuilt up to the damage, and ``failure`` names where that is.
    """
    if snapshot_list is None:
        snapshot_list, _ = data_dir.load_snapshots()
    history = History()
    with gc_paused():
        for files in data_dir.origins():
            _fold_origin(history, data_dir, files, snapshot_list)
        for named in history.names.values():
            named.finish()
        history.changes.sort(key=operator.attrgetter("seconds", "origin", "seq"))
    return history


def _fold_origin(history: History, data_dir: DataDir, files: OriginFiles, snapshot_list: list[snapshots.Snapshot]) -> None:
    origin = files.origin
    view, base = origin_base(origin, files, snapshot_list)
    span = history.spans[origin] = OriginSpan(origin, base, base)
    if base > 0:
        span.base_time = min(
            (event_seconds(snapshot.created_at) for snapshot in snapshot_list if snapshot.vector.get(origin, 0) == base),
            default=float("-inf"),
        )
    if view is None:
        span.failure = (
            f"retention deleted the events of origin {origin} up to seq {files.compacted_through},"
            f" and no snapshot covers them"
        )
        span.base = span.head = files.compacted_through
        return

    local: dict[str, Steps] = {}
    for name in sorted({name for container in view.origin_containers(origin) for name in container.names}):
        steps = local[name] = history.new_steps(name, origin)
        steps.seqs.append(base)
        steps.states.append(tuple(view.named(name)))
        steps.known.append(float("-inf"))
        steps.changes.append(None)

    # NOTE: the gateway prunes tombstones older than its tombstone_retention as it
    # goes, but this fold keeps them. A container re-added more than that long after
    # its removal would stay out here; snapshots' tombstoneCutoff would allow
    # pruning at the same points.
    reader = data_dir.read_origin(files, base)
    _fold_records(history, span, view, local, reader.batches())
    span.head = max(reader.head, base)
    span.failure = reader.failure
    span.torn_tail = reader.torn_tail


def origin_base(origin: int, files: OriginFiles, snapshot_list: list[snapshots.Snapshot]) -> tuple[View | None, int]:
    """The view of ``origin`` alone that its history starts from, and that view's seq.

    It is empty at seq 0 unless retention deleted the first events. Then it is
    the oldest snapshot's part for ``origin`` that covers the deletion, or
    None when no snapshot does.
    """
    if files.compacted_through == 0:
        return View(), 0
    for snapshot in snapshot_list:
        seq = snapshot.vector.get(origin, 0)
        if seq >= files.compacted_through:
            view_state = snapshot.view
            state = {
                "containers": [entry for entry in view_state.get("containers", []) if entry[7] == origin],
                "tombstones": [entry for entry in view_state.get("tombstones", []) if entry[1] == origin],
                "tombstoneCutoff": view_state.get("tombstoneCutoff", ""),
            }
            return View.from_state(state, {origin: seq}), seq
    return None, files.compacted_through


def _fold_records(
    history: History, span: OriginSpan, view: View, local: dict[str, Steps], batches: Iterable[list[dict[str, Any]]],
) -> None:
    origin = span.origin
    fold = view.fold_batches
    # With indexes on, the view keeps this dict for good (only deferred_indexes replaces it).
    by_id = view.containers
    named = view.named
    known, touched = span.known, span.touched
    latest = float("-inf")
    changes = history.changes
    for batch in batches:
        for fields in batch:
            data = fields["data"]
            container_id = data["id"]
            before = by_id.get(container_id)
            # One record at a time, so the change each event made can be seen.
            fold(((fields,),))
            after = by_id.get(container_id)

            seconds = event_seconds(fields["ts"])
            if seconds > latest:
                latest = seconds
            known.append(latest)
            if before is after:
                touched.append(())
                continue
            change = Change(
                origin, fields["seq"], fields["ts"], seconds, latest, fields["type"], container_id,
                data.get("reason") if fields["type"] != CONTAINER_ADDED else None, before, after,
            )
            changes.append(change)
            # Every name, hostname or alias, that the container had before or has after.
            if before is None:
                names: tuple[str, ...] = after.names
            elif after is None:
                names = before.names
            else:
                names = before.names + tuple(name for name in after.names if name not in before.names)
            touched.append(names)
            for name in names:
                steps = local.get(name)
                if steps is None:
                    steps = local[name] = history.new_steps(name, origin)
                steps.seqs.append(change.seq)
                steps.states.append(tuple(named(name)))
                steps.known.append(latest)
                steps.changes.append(change)
