"""`flatnet replay decisions`: decide every recorded request again and classify the decision.

For each decision record, the view is rebuilt as the gateway had it (the
events up to the record's version vector, with the expired origins the record
lists) and the proxy's Router decides again. The decision is:

- ``consistent`` when the Router returns the recorded result, and the owners'
  own logs, as they stood when the request came in, lead to that result too;
- ``stale`` when the Router returns the recorded result but an owner had
  already changed the name in its own log (removed, moved or added the
  container) before the request, and the gateway had not yet received that
  event. A request that an owner turned away with "not here" is stale too;
- ``divergent`` when the same evidence leads to another result: a bug, or a
  record that was changed after it was written.

Records whose result cannot be rebuilt are skipped and counted. These are
requests rejected for something the record does not keep (a repeated Host
header, an invalid hop header, a loop seen in Via), and views made of events
that retention has deleted. Unreadable records, events a decision saw that the
log lacks, and damaged logs are reported as corrupt.

Speed: decisions with the same routing fields share one parsed shape, and
each shape's result is computed once per state of its name (see history.py),
so most records cost a few byte searches and dictionary lookups.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import math
import operator
from pathlib import Path
from typing import Any

from flatnet.gateway.decisions import Decision
from flatnet.replay import settings as replay_settings
from flatnet.replay.datadir import DataDir, DecisionFile
from flatnet.replay.history import Change, History, NameHistory, build_history, gc_paused, rank
from flatnet.replay.output import Progress
from flatnet.replay.report import AuditOptions, AuditReport, Evidence, Finding, Skip, Verdict, conclude, with_request_ids
from flatnet.replay.records import RecordIndex, index_records, parse_vector
from flatnet.replay.routing import Result, Replayer, Request, quiet_proxy_logger
from flatnet.replay.settings import ReplaySettings

_DECISIONS = frozenset(decision.value for decision in Decision)
# The status the proxy records when the client went away before the response.
CLIENT_GONE = 499


class Shape:
    """The routing fields many records share, parsed once, with the results computed for them."""

    __slots__ = ("fields", "request", "request_id", "recorded", "name", "state", "memo", "truth", "problem", "counts")

    def __init__(self, fields: dict[str, Any], problem: str | None):
        self.fields = fields
        self.problem = problem
        self.request: Request | None = None
        # Shapes with equal requests share replayed results: the id of this one's request.
        self.request_id = -1
        self.recorded: Result | None = None
        self.name: str | None = None
        self.state: NameState | None = None
        # State key of the name -> Outcome, and state keys of the owners' logs -> the result there.
        self.memo: dict[int, Outcome] = {}
        self.truth: dict[Any, Result] = {}
        # Records per verdict: consistent, stale, divergent.
        self.counts = [0, 0, 0]


class NameState:
    """A name's history, and the state of it in force at the vector being replayed.

    ``key`` is None while not known for the current vector. Once known, it
    comes with that state's holders (ranked) and ``threshold``: the time from
    which an owner's log had already changed the name again.
    """

    __slots__ = ("history", "key", "ids", "holders", "threshold")

    def __init__(self, history: NameHistory):
        self.history = history
        self.key: int | None = None
        # Tuples of per-origin step indexes, for names several origins held, as small ints.
        self.ids: dict[tuple[int, ...], int] = {}
        self.holders: tuple = ()
        self.threshold = math.inf


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """The replayed result of a shape in one state of its name, and when the owners' logs changed that state next."""

    replayed: Result | None
    verdict: Verdict | None
    skip: Skip | None
    # Decisions at or after this time may be stale: an owner had changed the name by then.
    threshold: float


@dataclasses.dataclass(frozen=True, slots=True)
class VectorInfo:
    """A record's version vector, and why no view can be rebuilt at it (both None when one can)."""

    seqs: dict[int, int]
    skip: Skip | None = None
    missing: tuple[int, int, int] | None = None


_VERDICT_INDEX = {Verdict.CONSISTENT: 0, Verdict.STALE: 1, Verdict.DIVERGENT: 2}
# Records classified between two progress updates.
_CHUNK_RECORDS = 65536


class Auditor:
    """Classifies the records of a RecordIndex against a History.

    Records are taken in file order. Between two records whose vectors
    differ, only the names that the events in between touched are marked
    unknown (see ``_move``). Every other name keeps its state, so the view
    moves with the records instead of being rebuilt for each.
    """

    def __init__(self, data_dir: DataDir, history: History, settings: ReplaySettings, index: RecordIndex, options: AuditOptions):
        self.data_dir = data_dir
        self.history = history
        self.index = index
        self.replayer = Replayer(settings.settings)
        self.report = AuditReport(data_dir.path, settings.settings.host_id, settings.config)
        self.settings = settings
        self.name_states: dict[str, NameState] = {}
        # (request, holders) -> the Router's result, shared by shapes that differ only in what was recorded.
        self._results: dict[tuple[int, tuple], Result] = {}
        self._requests: dict[Request, int] = {}
        # Origins whose history starts at a snapshot, and every origin's last seq read.
        self._bases = [(origin, span.base) for origin, span in sorted(history.spans.items()) if span.base > 0]
        self._heads = {origin: span.head for origin, span in history.spans.items()}
        self.shapes = [self._shape(key) for key in index.shape_keys]
        self.vectors = [self._vector(key) for key in index.vector_keys]
        self.seqs: dict[int, int] = {}
        self.spans = sorted(history.spans.items())
        # (record position, finding without its request id) until the ids are read at the end.
        self._findings: list[tuple[int, Finding]] = []
        name = options.name.lower() if options.name is not None else None
        self._excluded = {sid for sid, shape in enumerate(self.shapes) if name is not None and shape.name != name}

    def run(self, progress: Progress | None = None) -> AuditReport:
        index = self.index
        total = len(index.ts)
        with quiet_proxy_logger():
            for start in range(0, total, _CHUNK_RECORDS):
                stop = min(total, start + _CHUNK_RECORDS)
                self._classify_range(start, stop)
                if progress is not None:
                    progress.update(stop)
        self.replayer.close()
        self._finish()
        return self.report

    def _classify_range(self, start: int, stop: int) -> None:
        index = self.index
        shapes, vectors = self.shapes, self.vectors
        excluded = self._excluded
        current = -1
        bad: VectorInfo | None = None
        consistent = Verdict.CONSISTENT
        for position, ts, sid, vid in zip(range(start, stop), index.ts[start:stop], index.shapes[start:stop], index.vectors[start:stop]):
            if vid != current:
                bad = self._move(vectors[vid])
                current = vid
            if excluded and sid in excluded:
                continue
            shape = shapes[sid]
            if shape.problem is not None or bad is not None:
                self._unusable(shape, bad, position)
                continue
            state = shape.state
            if state is None:
                key = 0
            else:
                key = state.key
                if key is None:
                    key = self._state_key(state)
            outcome = shape.memo.get(key)
            if outcome is None:
                outcome = shape.memo[key] = self._decide(shape)
            if outcome.verdict is consistent and ts < outcome.threshold:
                shape.counts[0] += 1
                continue
            self._classify(shape, outcome, ts, position)

    # Moving between vectors

    def _move(self, vector: VectorInfo) -> VectorInfo | None:
        """Make ``vector`` the current one; return it when no view can be rebuilt there."""
        if vector.skip is not None or vector.missing is not None:
            return vector
        new, old = vector.seqs, self.seqs
        if new is old:
            return None
        states = self.name_states
        for origin, span in self.spans:
            before, after = old.get(origin, 0), new.get(origin, 0)
            if before == after:
                continue
            low, high = (before, after) if before < after else (after, before)
            for names in span.touched[max(low - span.base, 0):high - span.base]:
                for name in names:
                    state = states.get(name)
                    if state is not None:
                        state.key = None
        self.seqs = new
        return None

    def _state_key(self, state: NameState) -> int:
        history, seqs = state.history, self.seqs
        single = history.single
        if single is not None:
            key = single.index_at(seqs.get(single.origin, 0))
            state.holders = single.states[key] if key >= 0 else ()
            following = key + 1
            state.threshold = single.known[following] if following < len(single.seqs) else math.inf
        else:
            indexes = tuple(steps.index_at(seqs.get(steps.origin, 0)) for steps in history.steps)
            key = state.ids.get(indexes)
            if key is None:
                key = state.ids[indexes] = len(state.ids)
            found: list = []
            threshold = math.inf
            for steps, index in zip(history.steps, indexes):
                if index >= 0:
                    found += steps.states[index]
                if index + 1 < len(steps.seqs) and steps.known[index + 1] < threshold:
                    threshold = steps.known[index + 1]
            state.holders = rank(history.name, found)
            state.threshold = threshold
        state.key = key
        return key

    # Shapes and vectors

    def _shape(self, key: Any) -> Shape:
        fields = self.index.fields(key)
        if fields is None:
            return Shape({}, "its routing fields are not valid JSON")
        shape = make_shape(fields)
        if shape.problem is not None:
            return shape
        shape.request_id = self._requests.setdefault(shape.request, len(self._requests))
        named = self.history.names.get(shape.name) if shape.name is not None else None
        if named is not None:
            state = self.name_states.get(shape.name)
            if state is None:
                state = self.name_states[shape.name] = NameState(named)
            shape.state = state
        return shape

    def _vector(self, key: bytes) -> VectorInfo:
        seqs = parse_vector(key)
        if seqs is None:
            return VectorInfo({}, None, (0, 0, 0))
        for origin, base in self._bases:
            if seqs.get(origin, 0) < base:
                return VectorInfo(seqs, Skip.BEFORE_HISTORY)
        heads = self._heads
        # One pass in builtins over the vector: this runs once per distinct vector.
        if any(map(operator.gt, seqs.values(), map(heads.get, seqs, itertools.repeat(0)))):
            beyond = [origin for origin, seq in seqs.items() if seq > heads.get(origin, 0)]
            origin = min(beyond)
            return VectorInfo(seqs, None, (origin, seqs[origin], heads.get(origin, 0)))
        return VectorInfo(seqs)

    # Outcomes

    def _decide(self, shape: Shape) -> Outcome:
        state = shape.state
        holders = state.holders if state is not None else ()
        replayed = self._replay(shape, holders, self.seqs)
        recorded = shape.recorded
        threshold = state.threshold if state is not None else math.inf
        if same_result(recorded, replayed):
            # A request the owner turned away with "not here" was routed on a stale view.
            verdict = Verdict.STALE if shape.request.retried_from is not None else Verdict.CONSISTENT
            return Outcome(replayed, verdict, None, threshold)
        if recorded.decision == Decision.BAD_REQUEST.value or (
            recorded.decision == Decision.LOOP.value and shape.request.retried_from is None
        ):
            # The record does not keep what made this request invalid or a loop.
            return Outcome(replayed, None, Skip.UNREPLAYABLE, math.inf)
        return Outcome(replayed, Verdict.DIVERGENT, None, math.inf)

    def _replay(self, shape: Shape, holders: tuple, seqs: dict[int, int]) -> Result:
        # A retried request's result depends on its first attempt (the seed), so it is not shared.
        if shape.request.retried_from is not None:
            return self.replayer.decide(shape.request, holders, seqs, seed=shape.recorded)
        key = (shape.request_id, holders)
        result = self._results.get(key)
        if result is None:
            result = self._results[key] = self.replayer.decide(shape.request, holders, seqs)
        return result

    def _unusable(self, shape: Shape, vector: VectorInfo | None, position: int) -> None:
        if shape.problem is not None:
            file, number = self.index.locate(position)
            self.report.corrupt.append(f"{file.path.name}:{number}: unreadable decision record: {shape.problem}")
        elif vector.skip is not None:
            self.report.skipped[vector.skip] += 1
        else:
            origin, seq, head = vector.missing
            known = self.report.missing.get(origin)
            if known is None or seq > known[0]:
                self.report.missing[origin] = (seq, head)

    def _classify(self, shape: Shape, outcome: Outcome, ts: float, position: int) -> None:
        if outcome.skip is not None:
            self.report.skipped[outcome.skip] += 1
            return
        seqs = self.seqs
        if outcome.verdict is Verdict.DIVERGENT:
            self._found(shape, Verdict.DIVERGENT, outcome.replayed, None, None, (), ts, position)
            return
        if outcome.verdict is Verdict.STALE:
            evidence = self._not_here_evidence(shape, seqs, ts)
            self._found(shape, Verdict.STALE, outcome.replayed, None, "not-here", evidence, ts, position)
            return
        expected, evidence = self._owners_result(shape, seqs, ts)
        if expected is None or same_route(shape.recorded, expected):
            shape.counts[0] += 1
            return
        change = describe_change(shape.recorded, expected)
        self._found(shape, Verdict.STALE, outcome.replayed, expected, change, evidence, ts, position)

    def _owners_result(self, shape: Shape, seqs: dict[int, int], ts: float) -> tuple[Result | None, tuple[Evidence, ...]]:
        """Route the request on the view of the owners' own logs at ``ts``; return the result and the events the gateway lacked."""
        if shape.state is None:
            return None, ()
        history = shape.state.history
        truth = dict(seqs)
        evidence: list[Change] = []
        key = []
        for steps in history.steps:
            index = steps.index_at(seqs.get(steps.origin, 0))
            # Steps after the view's: those the origin's log had by the decision's time.
            # NOTE: event times come from the owner's clock and the decision's from the
            # gateway's. When the clocks are further apart than the replication lag,
            # decisions near that margin are classified by the clocks.
            last = bisect.bisect_right(steps.known, ts, index + 1) - 1
            key.append(last)
            if last > index:
                truth[steps.origin] = steps.seqs[last]
                evidence += [change for change in steps.changes[index + 1:last + 1] if change is not None]
        if not evidence:
            return None, ()
        cache_key = tuple(key)
        expected = shape.truth.get(cache_key)
        if expected is None:
            holders = self.history.holders(shape.name, truth)
            expected = shape.truth[cache_key] = self.replayer.decide(shape.request, holders, truth, seed=shape.recorded)
        return expected, tuple(_evidence(change, ts) for change in sorted(evidence, key=_change_order))

    def _not_here_evidence(self, shape: Shape, seqs: dict[int, int], ts: float) -> tuple[Evidence, ...]:
        """Return the event of the peer that turned the request away: its last change to the name the view had."""
        peer = shape.request.retried_from
        if shape.state is None:
            return ()
        for steps in shape.state.history.steps:
            if steps.origin != peer:
                continue
            index = steps.index_at(seqs.get(peer, 0))
            change = steps.changes[index] if index >= 0 else None
            return (_evidence(change, ts),) if change is not None else ()
        return ()

    def _found(
        self, shape: Shape, verdict: Verdict, replayed: Result, expected: Result | None, change: str | None,
        evidence: tuple[Evidence, ...], ts: float, position: int,
    ) -> None:
        shape.counts[_VERDICT_INDEX[verdict]] += 1
        lag = None
        if evidence:
            owner = shape.recorded.owner if shape.request.retried_from is None else shape.request.retried_from
            # An origin is the host id that wrote the log, so the owner's own events are those of its origin.
            owned = [item for item in evidence if item.origin == owner]
            lag = max(item.lag for item in (owned or evidence))
        file, number = self.index.locate(position)
        finding = Finding(
            verdict, ts, "", shape.name, shape.request.host, shape.recorded, replayed, expected, change,
            evidence, lag, f"{file.path.name}:{number}",
        )
        self._findings.append((position, finding))

    # Totals

    def _finish(self) -> None:
        report, index = self.report, self.index
        for file, number, problem in index.unreadable:
            report.corrupt.append(f"{file.path.name}:{number}: unreadable decision record: {problem}")
        for file in index.partial:
            report.skipped[Skip.INCOMPLETE] += 1
            report.notes.append(f"{file.path.name} ends in a line without a newline (a record being written); it was left out")
        for shape in self.shapes:
            if shape.problem is not None or not any(shape.counts):
                continue
            owner = f"h{shape.recorded.owner}" if shape.recorded.owner is not None else "-"
            for table, key in ((report.by_name, shape.name or "-"), (report.by_owner, owner)):
                counter = table.setdefault(key, collections.Counter())
                for verdict, count in zip(_VERDICT_INDEX, shape.counts):
                    if count:
                        counter[verdict] += count
                        if table is report.by_name:
                            report.counts[verdict] += count
        if index.ts:
            report.first_ts, report.last_ts = min(index.ts), max(index.ts)
        report.findings = with_request_ids(self._findings, index)


def make_shape(fields: dict[str, Any]) -> Shape:
    """Check a record's routing fields and turn them into a Shape (with ``problem`` set when they are invalid)."""
    problem = _check_fields(fields)
    shape = Shape(fields, problem)
    if problem is not None:
        return shape
    silent = fields["owner_silent_seconds"] if fields["stale_policy"] is not None else None
    shape.request = Request(
        host=fields["host"], method="GET", hop=fields["hop"], expired=frozenset(fields["expired"]),
        owner_silent=float(silent) if silent is not None else None, retried_from=fields["retried_from"],
    )
    shape.recorded = Result(fields["decision"], fields["owner"], fields["container_id"], fields["target"], fields["status"])
    shape.name = fields["name"].lower() if isinstance(fields["name"], str) else None
    return shape


_FIELD_KINDS = {
    "host": (str,), "name": (str, type(None)), "decision": (str,), "target": (str, type(None)),
    "owner": (int, type(None)), "container_id": (str, type(None)), "expired": (list,),
    "stale_policy": (str, type(None)), "owner_silent_seconds": (int, float, type(None)),
    "retried_from": (int, type(None)), "hop": (int, type(None)), "status": (int,),
}


# The same kinds as sets of exact types: bool is not taken for int.
_FIELD_TYPES = {name: frozenset(kinds) for name, kinds in _FIELD_KINDS.items()}
_ABSENT = object()


def _check_fields(fields: dict[str, Any]) -> str | None:
    if not all(type(fields.get(name, _ABSENT)) in allowed for name, allowed in _FIELD_TYPES.items()):
        return _field_problem(fields)
    if fields["decision"] not in _DECISIONS:
        return f"field 'decision' is {fields['decision']!r:.40}; expected one of {', '.join(sorted(_DECISIONS))}"
    if not all(type(origin) is int for origin in fields["expired"]):
        return f"field 'expired' must list origins (integers), got {fields['expired']!r:.60}"
    return None


def _field_problem(fields: dict[str, Any]) -> str | None:
    for name, allowed in _FIELD_KINDS.items():
        value = fields.get(name)
        if name not in fields or isinstance(value, bool) or not isinstance(value, allowed):
            expected = " or ".join("null" if kind is type(None) else kind.__name__ for kind in allowed)
            return f"field {name!r} must be {expected}, got {value!r:.60}"
    return None


def same_route(recorded: Result, replayed: Result) -> bool:
    """Tell whether two results send the request to the same place (or give the same page)."""
    return (
        recorded.decision == replayed.decision and recorded.owner == replayed.owner
        and recorded.container_id == replayed.container_id and recorded.target == replayed.target
    )


def same_result(recorded: Result, replayed: Result) -> bool:
    """Tell whether a replayed result is the recorded one, including the status of a page the gateway wrote."""
    if not same_route(recorded, replayed):
        return False
    return replayed.status is None or recorded.status in (replayed.status, CLIENT_GONE)


def describe_change(recorded: Result, expected: Result) -> str:
    """Name what the owners had done that the gateway did not know: removed, moved, added or replaced."""
    if recorded.owner is not None and expected.owner is not None and recorded.owner != expected.owner:
        return "moved"
    if recorded.owner is not None and (expected.owner is None or expected.decision == Decision.NOT_FOUND.value):
        return "removed"
    if recorded.owner is None and expected.owner is not None:
        return "added"
    return "replaced"


def _evidence(change: Change, ts: float) -> Evidence:
    return Evidence(change.origin, change.seq, change.ts, change.type, change.container_id, change.reason, round(ts - change.seconds, 3))


def _change_order(change: Change) -> tuple[float, int, int]:
    return (change.seconds, change.origin, change.seq)


def audit(
    data_dir: DataDir, config: Path | None, options: AuditOptions, *, processes: int | None = None,
    progress_label: str = "decisions",
) -> AuditReport:
    """Audit every decision file of ``data_dir``, with the settings of ``config`` or, without one, inferred.

    With more than one process (by default, one per core for large decision
    logs), each forked process audits a share of the files against its own
    copy of the history. Their reports add up to the same report.
    """
    files = [(file, file.path.stat().st_size) for file in data_dir.decision_files()]
    # The files' sizes are taken before the log is read: every record up to
    # them saw only events the log already holds.
    snapshot_list, _ = data_dir.load_snapshots()
    from flatnet.replay import shares

    job = shares.Job(data_dir, config, options, snapshot_list)
    progress = Progress(progress_label, sum(size for _, size in files) * 2)
    try:
        with gc_paused(), quiet_proxy_logger():
            parts, history = shares.run(job, files, processes, progress)
    finally:
        progress.close()
    return conclude(parts, history, job.settings)


def audit_share(job: Any, files: list[tuple[DecisionFile, int]], settings_for: Any, progress: Progress | None) -> tuple[AuditReport, History]:
    """Audit one share of the decision files: fold the history, index the records, classify them.

    ``settings_for`` turns the index into settings, which may mean asking the
    other processes (see shares.py).
    """
    history = build_history(job.data_dir, job.snapshot_list)
    total = sum(size for _, size in files)
    update = progress.update if progress is not None else None
    options = job.options
    index = index_records(files, since=options.since, until=options.until, request_id=options.request_id, progress=update)
    settings = settings_for(index)
    auditor = Auditor(job.data_dir, history, settings, index, job.options)
    scaled = _Scaled(progress, total, total / max(len(index.ts), 1)) if progress is not None else None
    return auditor.run(scaled), history


class _Scaled:
    """Progress of the second pass (records), shown after the first (bytes)."""

    def __init__(self, progress: Progress, offset: float, scale: float):
        self.progress, self.offset, self.scale = progress, offset, scale

    def update(self, done: float) -> None:
        self.progress.update(self.offset + done * self.scale)


def shape_counts(index: RecordIndex) -> dict[Any, int]:
    """Count the records of ``index`` per shape key, which is what settings are inferred from."""
    counts = collections.Counter(index.shapes)
    return {key: counts[sid] for sid, key in enumerate(index.shape_keys)}


def infer_settings(data_dir: DataDir, snapshot_list: list, counts: dict[Any, int], index: RecordIndex) -> ReplaySettings:
    """Infer the settings from the shapes in ``counts``, parsed through ``index`` (which keeps them)."""
    shapes = []
    for key, count in sorted(counts.items(), key=lambda item: repr(item[0])):
        fields = index.fields(key)
        if fields is not None:
            shapes.append((fields, count))
    return replay_settings.infer(data_dir, snapshot_list, shapes)
