"""`flatnet replay verify`: check every segment's records and every snapshot against the log.

Per origin, every record's CRC, envelope and schema are checked with the
log's own decoder, seqs must follow one another across segment names and
files, and only the last segment may end mid-record. Unlike the gateway's
reader, verify goes on past a bad record, so one run lists every problem.

Each snapshot must load (format, digest) and describe a valid view. For every
origin it covers, its containers and tombstones must equal the fold of that
origin's events up to the snapshot's seq, with the registry's own fold.
Tombstones are compared after the snapshot's tombstone cutoff, as the gateway
pruned them. An origin whose early events retention deleted is folded from
the oldest snapshot that covers the deletion, and that snapshot's part for
that origin is counted as not checkable.

Origins are independent, so a large log is checked by forked processes, one
share of the origins each (as the gateway's start-up fold does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import orjson

from flatnet.events import record
from flatnet.events import snapshot as snapshots
from flatnet.gateway.rebuild import gc_paused
from flatnet.registry import View, ViewStateError, canonical_time
from flatnet.replay.datadir import DataDir, OriginFiles
from flatnet.replay.output import Progress

# Below this many bytes of log, forking costs more than it saves.
PARALLEL_MIN_BYTES = 16 * 1024 * 1024
# Records decoded and folded at a time.
_FOLD_LINES = 512
# Problems listed per origin before the rest are only counted.
MAX_PROBLEMS_PER_ORIGIN = 50


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong in the log or a snapshot, named precisely enough to find it."""

    kind: str
    path: str
    message: str
    origin: int | None = None
    seq: int | None = None
    offset: int | None = None


@dataclasses.dataclass(frozen=True)
class OriginSummary:
    origin: int
    segments: int
    first_seq: int
    head: int
    records: int
    compacted_through: int


@dataclasses.dataclass(frozen=True)
class SnapshotSummary:
    path: str
    vector: dict[int, int]
    # Origins whose part was compared with the fold, and those retention made uncheckable.
    checked: tuple[int, ...]
    unchecked: tuple[int, ...]


@dataclasses.dataclass
class VerifyReport:
    data_dir: Path
    origins: list[OriginSummary] = dataclasses.field(default_factory=list)
    snapshots: list[SnapshotSummary] = dataclasses.field(default_factory=list)
    problems: list[Problem] = dataclasses.field(default_factory=list)
    # Problems beyond the listed ones, per origin.
    unlisted: dict[int, int] = dataclasses.field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(origin.records for origin in self.origins)

    @property
    def exit_status(self) -> int:
        return 1 if self.problems else 0


@dataclasses.dataclass
class _Checkpoint:
    """One snapshot's part for one origin: what the fold must equal at ``seq``."""

    snapshot: int
    path: str
    seq: int
    containers: list[list[Any]]
    tombstones: list[list[Any]]
    cutoff: str


@dataclasses.dataclass
class _OriginResult:
    summary: OriginSummary
    problems: list[Problem]
    unlisted: int
    # Snapshot indexes whose part for this origin was compared, or could not be.
    checked: list[int]
    unchecked: list[int]


def verify(data_dir: DataDir, *, processes: int | None = None, progress_label: str = "verify") -> VerifyReport:
    """Check ``data_dir``'s logs and snapshots; the report lists every problem found."""
    report = VerifyReport(data_dir.path)
    origin_files = data_dir.origins()
    loaded = _load_snapshots(data_dir, report)
    parts = [_split_by_origin(snapshot) for _, snapshot in loaded]
    plans = {files.origin: _plan_origin(files, loaded, parts, report) for files in origin_files}
    for index, (path, snapshot) in enumerate(loaded):
        _check_snapshot_origins(index, path, snapshot, {files.origin: files for files in origin_files}, report)

    sizes = {files.origin: sum(path.stat().st_size for path in files.segments) for files in origin_files}
    progress = Progress(progress_label, sum(sizes.values()))
    try:
        with gc_paused():
            processes = processes or os.cpu_count() or 1
            if processes > 1 and sum(sizes.values()) >= PARALLEL_MIN_BYTES and len(origin_files) > 1:
                results = _check_in_processes(origin_files, plans, sizes, processes, progress)
            else:
                results = []
                done = 0
                for files in origin_files:
                    results.append(_check_origin(files, plans[files.origin]))
                    done += sizes[files.origin]
                    progress.update(done)
    finally:
        progress.close()

    checked: dict[int, list[int]] = {index: [] for index in range(len(loaded))}
    unchecked: dict[int, list[int]] = {index: [] for index in range(len(loaded))}
    for result in sorted(results, key=lambda result: result.summary.origin):
        report.origins.append(result.summary)
        report.problems += result.problems
        if result.unlisted:
            report.unlisted[result.summary.origin] = result.unlisted
        for index in result.checked:
            checked[index].append(result.summary.origin)
        for index in result.unchecked:
            unchecked[index].append(result.summary.origin)
    differing = {problem.path for problem in report.problems if problem.kind == "snapshot-fold"}
    for index, (path, snapshot) in enumerate(loaded):
        report.snapshots.append(SnapshotSummary(str(path), dict(sorted(snapshot.vector.items())), tuple(checked[index]), tuple(unchecked[index])))
        # A snapshot whose every part equals the fold's export is a valid view.
        # Any other is checked entry by entry, to name what is wrong in it.
        if set(parts[index]) - set(checked[index]) or str(path) in differing:
            _check_view(path, snapshot, report)
    return report


def _load_snapshots(data_dir: DataDir, report: VerifyReport) -> list[tuple[Path, snapshots.Snapshot]]:
    loaded = []
    for path in data_dir.snapshot_paths():
        try:
            snapshot = snapshots.load_snapshot(path)
        except snapshots.SnapshotError as error:
            report.problems.append(Problem("snapshot-unreadable", str(path), str(error)))
            continue
        loaded.append((path, snapshot))
    return loaded


def _check_view(path: Path, snapshot: snapshots.Snapshot, report: VerifyReport) -> None:
    """Check that a snapshot describes a valid view (entry kinds, duplicates, seqs within its vector)."""
    try:
        View.from_state(snapshot.view, snapshot.vector)
    except ViewStateError as error:
        report.problems.append(Problem("snapshot-invalid", str(path), f"snapshot {path} does not describe a valid view: {error}"))


def _split_by_origin(snapshot: snapshots.Snapshot) -> dict[Any, tuple[list[list[Any]], list[list[Any]]]]:
    """Group a snapshot's containers and tombstones by origin; malformed entries go under None."""
    parts: dict[Any, tuple[list, list]] = {}
    view = snapshot.view
    for slot, key, position in ((0, "containers", 7), (1, "tombstones", 1)):
        entries = view.get(key)
        for entry in entries if isinstance(entries, list) else ():
            origin = entry[position] if type(entry) is list and len(entry) > position and type(entry[position]) is int else None
            part = parts.get(origin)
            if part is None:
                part = parts[origin] = ([], [])
            part[slot].append(entry)
    return parts


def _check_snapshot_origins(
    index: int, path: Path, snapshot: snapshots.Snapshot, origins: dict[int, OriginFiles], report: VerifyReport,
) -> None:
    for origin, seq in sorted(snapshot.vector.items()):
        if seq > 0 and origin not in origins:
            report.problems.append(Problem(
                "snapshot-ahead", str(path),
                f"snapshot {path} covers seq {seq} of origin {origin}, but there is no log of origin {origin}",
                origin, seq,
            ))


@dataclasses.dataclass
class _Plan:
    """The fold of one origin: where it starts, and the snapshot parts to compare on the way."""

    base_seq: int
    base_view: View | None
    checkpoints: list[_Checkpoint]
    unchecked: list[int]


def _plan_origin(
    files: OriginFiles, loaded: list[tuple[Path, snapshots.Snapshot]], by_origin: list[dict], report: VerifyReport,
) -> _Plan:
    origin = files.origin
    parts = []
    for index, (path, snapshot) in enumerate(loaded):
        containers, tombstones = by_origin[index].get(origin, ([], []))
        cutoff = snapshot.view.get("tombstoneCutoff", "")
        parts.append(_Checkpoint(index, str(path), snapshot.vector.get(origin, 0), containers, tombstones, cutoff))
    if files.compacted_through == 0:
        return _Plan(0, View(), sorted(parts, key=lambda part: (part.seq, part.snapshot)), [])

    # Retention deleted the first events: start from the oldest snapshot that covers them.
    covering = [part for part in parts if part.seq >= files.compacted_through]
    if not covering:
        return _Plan(files.compacted_through, None, [], [part.snapshot for part in parts])
    base = min(covering, key=lambda part: (part.seq, part.snapshot))
    state = {"containers": base.containers, "tombstones": base.tombstones, "tombstoneCutoff": base.cutoff}
    try:
        view = View.from_state(state, {origin: base.seq})
    except ViewStateError as error:
        report.problems.append(Problem("snapshot-invalid", base.path, f"snapshot {base.path} does not describe a valid view: {error}", origin))
        return _Plan(files.compacted_through, None, [], [part.snapshot for part in parts])
    later = [part for part in parts if part.seq >= base.seq and part is not base]
    earlier = [part.snapshot for part in parts if part.seq < base.seq]
    return _Plan(base.seq, view, sorted(later, key=lambda part: (part.seq, part.snapshot)), earlier + [base.snapshot])


def _check_in_processes(
    origin_files: list[OriginFiles], plans: dict[int, _Plan], sizes: dict[int, int], processes: int, progress: Progress,
) -> list[_OriginResult]:
    groups: list[list[OriginFiles]] = [[] for _ in range(processes)]
    totals = [0] * processes
    for files in sorted(origin_files, key=lambda files: (-sizes[files.origin], files.origin)):
        smallest = totals.index(min(totals))
        groups[smallest].append(files)
        totals[smallest] += sizes[files.origin]
    groups = [group for group in groups if group]

    children = []
    for group in groups[1:]:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _run_child(group, plans, write_end)
        os.close(write_end)
        children.append((pid, read_end, group))

    results = []
    done = 0
    for files in groups[0]:
        results.append(_check_origin(files, plans[files.origin]))
        done += sizes[files.origin]
        progress.update(done)
    for pid, read_end, group in children:
        with os.fdopen(read_end, "rb") as pipe:
            body = pipe.read()
        _, status = os.waitpid(pid, 0)
        try:
            results += pickle.loads(body)
        except (pickle.UnpicklingError, EOFError, ValueError):
            # The child died (out of memory, a signal): check its share here instead.
            results += [_check_origin(files, plans[files.origin]) for files in group]
        done += sum(sizes[files.origin] for files in group)
        progress.update(done)
    return results


def _run_child(group: list[OriginFiles], plans: dict[int, _Plan], write_end: int) -> None:
    # A forked child checks its origins, sends the results and exits without
    # running the parent's cleanup (atexit handlers, open files).
    status = 1
    try:
        body = pickle.dumps([_check_origin(files, plans[files.origin]) for files in group], protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(body)
        status = 0
    finally:
        os._exit(status)


class _OriginCheck:
    """The check of one origin: its records in order, the fold, and the problems found."""

    def __init__(self, files: OriginFiles, plan: _Plan):
        self.files = files
        self.origin = files.origin
        self.plan = plan
        self.problems: list[Problem] = []
        self.unlisted = 0
        self.records = 0
        self.head = files.compacted_through
        self.view = plan.base_view
        self.pending = list(plan.checkpoints)
        self.checked: list[int] = []
        self.unchecked: list[int] = list(plan.unchecked)
        # The fold stops at the first damaged record; snapshots past it cannot be checked.
        self.fold_broken = plan.base_view is None
        self._fold_error: str | None = None

    def problem(self, kind: str, path: Path, message: str, seq: int | None = None, offset: int | None = None) -> None:
        if len(self.problems) >= MAX_PROBLEMS_PER_ORIGIN:
            self.unlisted += 1
            return
        self.problems.append(Problem(kind, str(path), message, self.origin, seq, offset))

    def run(self) -> _OriginResult:
        files = self.files
        if files.problem is not None:
            self.problem("compacted-marker" if "compacted" in files.problem else "segment-name", files.directory, files.problem)
            self.fold_broken = True
        segments = [path for path in files.segments if path.stem.isdigit()]
        # Snapshot parts at the base seq compare with the view before any event.
        while self.view is not None and self.pending and self.pending[0].seq <= self.plan.base_seq:
            self._compare(self.pending.pop(0))
        # The fold keeps no indexes: export_state reads only each origin's containers and tombstones.
        indexes = self.view.deferred_indexes() if self.view is not None else contextlib.nullcontext()
        with indexes:
            expected = self._check_segments(segments, files.compacted_through + 1)
        self.head = expected - 1

        for checkpoint in self.pending:
            if checkpoint.seq > self.head:
                self.problem(
                    "snapshot-ahead", Path(checkpoint.path),
                    f"snapshot {checkpoint.path} covers seq {checkpoint.seq} of origin {self.origin}, "
                    f"but its log ends at seq {self.head}",
                    checkpoint.seq,
                )
            else:
                self.unchecked.append(checkpoint.snapshot)
        first_seq = int(segments[0].stem) if segments else self.head + 1
        summary = OriginSummary(self.origin, len(files.segments), first_seq, self.head, self.records, files.compacted_through)
        return _OriginResult(summary, self.problems, self.unlisted, sorted(self.checked), sorted(self.unchecked))

    def _check_segments(self, segments: list[Path], expected: int) -> int:
        """Check every segment in order; return the seq expected after the last one."""
        for index, path in enumerate(segments):
            first = int(path.stem)
            if first != expected:
                where = "before the first segment" if index == 0 else f"after {segments[index - 1].name}"
                self.problem(
                    "missing-segment", path,
                    f"seq gap {where}: expected seq {expected}, but {path.name} starts at seq {first}; a segment is missing",
                    expected,
                )
                self.fold_broken = True
                expected = first
            expected = self._check_segment(path, expected, is_last=index == len(segments) - 1)
        return expected

    def _check_segment(self, path: Path, expected: int, *, is_last: bool) -> int:
        with open(path, "rb") as segment:
            data = segment.read()
        lines = data.split(b"\n")
        partial = lines.pop()

        offsets = _LineOffsets(lines)
        # Folded a chunk at a time, so the records are still in the CPU cache when folded.
        for start in range(0, len(lines), _FOLD_LINES):
            chunk = lines[start:start + _FOLD_LINES]
            decoded = _decode_sound(chunk, self.origin, expected)
            if decoded is not None and self._fold_or_break(decoded, expected):
                self.records += len(decoded)
                expected += len(decoded)
            else:
                expected = self._check_lines(path, lines, start, start + len(chunk), expected, offsets)

        if partial:
            offset = len(data) - len(partial)
            if is_last:
                self.problem(
                    "torn-tail", path,
                    f"torn record in {path} at byte offset {offset}: {len(partial)} bytes without a newline, as a crash"
                    f" mid-write leaves them (never acknowledged) or a write in progress shows them; the gateway cuts"
                    f" a crash's off at its next start",
                    expected, offset,
                )
            else:
                self.problem(
                    "torn-record", path,
                    f"torn record in {path} at byte offset {offset}: only the last segment may end mid-record",
                    expected, offset,
                )
                self.fold_broken = True
        return expected

    def _fold_or_break(self, decoded: list[dict[str, Any]], first_seq: int) -> bool:
        """Fold records that passed the quick checks; False (and the fold stopped) when the fold rejects one."""
        try:
            self._fold(decoded, first_seq)
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            # The view may hold part of the segment now, so nothing more is folded;
            # the record-by-record check below names the record.
            self.fold_broken = True
            self._fold_error = f"{type(error).__name__}: {error}"
            return False
        return True

    def _check_lines(self, path: Path, lines: list[bytes], start: int, stop: int, expected: int, offsets: "_LineOffsets") -> int:
        """Check ``lines[start:stop]`` with the log's full decoder, reporting each bad record; return the next seq."""
        problems_before = len(self.problems) + self.unlisted
        while start < stop:
            chunk = lines[start:stop]
            try:
                decoded = record.decode_lines(chunk, self.origin, expected)
            except record.BadLine as error:
                decoded = record.decode_lines(chunk[:error.index], self.origin, expected) if error.index else []
                self._fold(decoded, expected)
                self.records += len(decoded)
                expected += len(decoded)
                bad = start + error.index
                expected = self._bad_line(path, lines[bad], offsets.at(bad), expected, error)
                start = bad + 1
                continue
            self._fold(decoded, expected)
            self.records += len(decoded)
            expected += len(decoded)
            start += len(chunk)
        if self._fold_error is not None and len(self.problems) + self.unlisted == problems_before:
            self.problem("fold-failed", path, f"the registry's fold rejected a record of {path}: {self._fold_error}")
        self._fold_error = None
        return expected

    def _bad_line(self, path: Path, line: bytes, offset: int, expected: int, error: record.BadLine) -> int:
        """Report a bad record; return the seq expected after it."""
        self.fold_broken = True
        if error.cause is None:
            # A valid record out of place: another origin's, or a seq gap.
            found = record.decode(line)
            if found.origin != self.origin:
                self.problem("wrong-origin", path, f"record of origin {found.origin} in the log of origin {self.origin}: {path} at byte offset {offset}", expected, offset)
                return expected + 1
            self.problem("seq-gap", path, f"seq gap in {path} at byte offset {offset}: expected seq {expected}, found seq {found.seq}", expected, offset)
            return found.seq + 1
        kind = "unknown-type" if isinstance(error.cause, record.UnknownEventType) else "corrupt-record"
        self.problem(kind, path, f"unreadable record in {path} at byte offset {offset}, where seq {expected} was expected: {error}", expected, offset)
        return expected + 1

    def _fold(self, decoded: list[dict[str, Any]], first_seq: int) -> None:
        """Fold ``decoded`` (seq ``first_seq`` on), comparing each snapshot part on the way."""
        if self.fold_broken or not self.pending or not decoded:
            return
        fold = self.view.fold_batches
        last_seq = first_seq + len(decoded) - 1
        position = 0
        while self.pending and self.pending[0].seq <= last_seq:
            stop = self.pending[0].seq - first_seq + 1
            if stop > position:
                fold([decoded[position:stop]])
                position = stop
            self._compare(self.pending.pop(0))
        if self.pending and position < len(decoded):
            fold([decoded[position:]])

    def _compare(self, checkpoint: _Checkpoint) -> None:
        # The view folds without indexes (see run): export_state reads only the
        # containers and tombstones of each origin, which the fold keeps.
        state = self.view.export_state()
        expected_tombstones = [
            entry for entry in state["tombstones"]
            if not (checkpoint.cutoff and _is_before(entry[4], checkpoint.cutoff))
        ]
        self.checked.append(checkpoint.snapshot)
        folded = state["containers"]
        if checkpoint.containers and all(type(entry) is list and len(entry) == _FIELDS_WITHOUT_ALIASES for entry in checkpoint.containers):
            # A snapshot written before the view kept aliases: its entries end before the aliases field.
            folded = [entry[:_FIELDS_WITHOUT_ALIASES] for entry in folded]
        differences = _differences(folded, checkpoint.containers, "container")
        differences += _differences(expected_tombstones, checkpoint.tombstones, "tombstone")
        if differences:
            shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
            self.problem(
                "snapshot-fold", Path(checkpoint.path),
                f"snapshot {checkpoint.path} differs from the fold of origin {self.origin}'s events up to"
                f" seq {checkpoint.seq}: {shown}",
                checkpoint.seq,
            )


def _check_origin(files: OriginFiles, plan: _Plan) -> _OriginResult:
    return _OriginCheck(files, plan).run()


# A record as record.encode writes it: the CRC first (keys sorted), and the
# rest of the line, after the opening brace, is exactly the bytes it covers.
_CRC_PREFIX = b'{"crc":'
_OPEN_BRACE_CRC = zlib.crc32(b"{")


def _decode_sound(lines: list[bytes], origin: int, first_seq: int) -> list[dict[str, Any]] | None:
    """Decode ``lines`` if each is a record with a matching CRC, of ``origin``, in seq order from ``first_seq``,
    of a known type and version; otherwise return None, and the full decoder finds and explains the bad record.

    A matching CRC means the bytes are the ones the gateway appended after
    validating them, so the payload's fields are not checked one by one here;
    a payload the fold cannot take still stops it (see _fold_or_break).
    """
    crc32 = zlib.crc32
    loads = orjson.loads
    known = record.KNOWN_VERSIONS
    decoded: list[dict[str, Any]] = []
    append = decoded.append
    expected = first_seq
    try:
        for line in lines:
            comma = line.find(b",", 7)
            if line[:7] != _CRC_PREFIX or crc32(line[comma + 1:], _OPEN_BRACE_CRC) != int(line[7:comma]):
                return None
            fields = loads(line)
            if fields["seq"] != expected or fields["origin"] != origin or fields["v"] not in known[fields["type"]]:
                return None
            append(fields)
            expected += 1
    except (ValueError, KeyError, TypeError):
        return None
    return decoded


class _LineOffsets:
    """Byte offsets of lines, summed only as far as asked."""

    def __init__(self, lines: list[bytes]):
        self.lines = lines
        self.known = [0]

    def at(self, index: int) -> int:
        while len(self.known) <= index:
            self.known.append(self.known[-1] + len(self.lines[len(self.known) - 1]) + 1)
        return self.known[index]


# Fields of a container entry in snapshots written before the view kept aliases.
_FIELDS_WITHOUT_ALIASES = 9


def _differences(folded: list[list[Any]], stored: list[list[Any]], kind: str) -> list[str]:
    if folded == stored:
        return []
    by_id_folded = {entry[0]: entry for entry in folded}
    by_id_stored = {entry[0]: entry for entry in stored}
    differences = []
    for key in sorted(set(by_id_folded) | set(by_id_stored)):
        mine, theirs = by_id_folded.get(key), by_id_stored.get(key)
        if mine == theirs:
            continue
        if theirs is None:
            differences.append(f"{kind} {key} is in the fold but not in the snapshot")
        elif mine is None:
            differences.append(f"{kind} {key} is in the snapshot but not in the fold")
        else:
            differences.append(f"{kind} {key} is {theirs} in the snapshot but {mine} in the fold")
    if not differences:
        differences.append(f"the {kind}s are listed in another order than the gateway lists them")
    return differences


def _is_before(earlier: str, later: str) -> bool:
    first, second = canonical_time(earlier), canonical_time(later)
    return first is not None and second is not None and first < second


