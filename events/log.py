"""The per-origin append-only event log.

Layout: ``<data_dir>/log/<origin>/<first seq, 20 digits>.jsonl``, one record per
line, a new segment once the current one passes ``segment_bytes``. One writer
per origin: the gateway for its own host, the follower for a peer's replica.

Opening a log checks the last record of each segment. It also checks every
record of the last segment, unless the caller checks them itself
(``verified_through``, ``tail_only``). A torn or corrupt tail (a crash mid-write) is cut off and
reported once with its file and offset, so the next append never glues onto a
partial line. A gap in ``seq`` (a missing segment included) and a corrupt
record before the tail are errors that name the file, the offset and the seq,
found at open or when the record is read.

An error stops only its origin. :class:`EventLog` keeps the other origins
working and reports the stopped one in :attr:`EventLog.failures`. An origin
whose append or read fails stops the same way, because after a failed write
or fsync the file's contents are no longer known.

Retention: :meth:`OriginLog.compact` deletes the oldest segments once a
snapshot covers them. It records how far it deleted in ``compacted``, so a
log that starts after seq 1 on purpose is distinguished from one that lost its
first segment.
"""

from __future__ import annotations

import dataclasses
import datetime
import mmap
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from flatnet.events import record
from flatnet.events.record import Event

DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
COMPACTED_FILE = "compacted"
# The last record of a segment is found in its final bytes; a record longer
# than this is read in full instead.
_TAIL_PROBE_BYTES = 8192
# A verified_through above any seq: every record is left to reads but the last.
_EVERY_SEQ = 2**63
# Records per batch when reading: small enough that a batch is still in the
# CPU cache when it is folded (about a fifth faster than a batch per segment).
READ_BATCH_LINES = 256


class LogError(Exception):
    """A log that cannot be trusted as it is on disk; the message names the place."""


class OriginFailed(LogError):
    """An origin stopped by an earlier error; nothing is read from or appended to it."""

    def __init__(self, origin: int, cause: LogError):
        super().__init__(
            f"the log of origin {origin} is stopped: {cause}; "
            f"repair or remove its directory and restart the gateway"
        )
        self.origin = origin
        self.cause = cause


class LogCompacted(LogError):
    """A read from a seq whose events retention has already deleted."""

    def __init__(self, origin: int, after: int, first_seq: int):
        super().__init__(
            f"events of origin {origin} after seq {after} are gone: retention deleted seq "
            f"{after + 1} to {first_seq - 1}; start from a snapshot at or past seq {first_seq - 1}"
        )
        self.origin = origin
        self.after = after
        self.first_seq = first_seq


@dataclasses.dataclass(frozen=True, slots=True)
class TailRepair:
    """The bytes that recovery cut off the end of a segment."""

    path: Path
    offset: int
    dropped_bytes: int
    reason: str


class OriginLog:
    """The segments of one origin, with appends fsynced before they return."""

    def __init__(
        self, directory: Path, origin: int, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES, verified_through: int = 0
    ):
        """Open (and recover) the log of ``origin`` in ``directory``.

        ``verified_through`` is a seq whose records, and all before it, were
        checked before (a snapshot covers them): opening checks every record
        of the last segment after it, and the last one at least. The records
        it covers are checked again when they are read.
        """
        self.directory = directory
        self.origin = origin
        self.segment_bytes = segment_bytes
        self._verified_through = verified_through
        self.head = 0
        self.repair: TailRepair | None = None
        self.failure: LogError | None = None
        self.compacted_through = 0
        self._segments: list[Path] = []
        self._writer = None
        self._writer_size = 0
        self._open()

    # Opening and recovery

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.compacted_through = self._read_compacted()
        self._segments = self._list_segments()
        if not self._segments:
            self.head = self.compacted_through
            return

        first = _first_seq(self._segments[0])
        if first != self.compacted_through + 1:
            compacted = f"seq {self.compacted_through} was the last one deleted by retention" if self.compacted_through else "nothing was deleted by retention"
            raise LogError(
                f"seq gap before {self._segments[0]}: expected seq {self.compacted_through + 1}, "
                f"found seq {first}; a segment is missing ({compacted})"
            )
        # Earlier segments were complete when the next one started: check
        # that each one's last record leads to the next one's first seq.
        for path, following in zip(self._segments, self._segments[1:]):
            last_seq, offset = self._last_seq(path)
            if last_seq + 1 != _first_seq(following):
                raise LogError(
                    f"seq gap after {path} at byte offset {offset}: its last record is seq {last_seq}, so "
                    f"expected seq {last_seq + 1} next, but {following.name} starts at seq {_first_seq(following)}; "
                    f"a segment is missing"
                )
        last = self._segments[-1]
        if self._verified_through >= _first_seq(last) and last.stat().st_size > 0:
            self.head = self._recover_unverified_tail(last)
        else:
            self.head = self._recover_tail(last)

    def _recover_tail(self, last: Path) -> int:
        first = _first_seq(last)
        with open(last, "rb") as segment:
            data = segment.read()
        lines = data.split(b"\n")
        partial = lines.pop()
        try:
            record.decode_lines(lines, self.origin, first)
        except record.BadLine as error:
            offset = _offset_of(lines, error.index)
            where = f"{last} at byte offset {offset}"
            is_last_line = error.index == len(lines) - 1 and not partial
            if not (is_last_line and isinstance(error.cause, record.CorruptRecord)):
                # A record from a newer writer is valid data, and a seq out of
                # place is no crash artifact: neither may be cut.
                if isinstance(error.cause, record.CorruptRecord):
                    problem = f"corrupt record in the middle of {where}, where seq {first + error.index} was expected"
                elif error.cause is not None:
                    problem = f"unreadable record in {where}"
                else:
                    problem = f"seq gap in {where}"
                raise LogError(f"{problem}: {error}") from None
            self.repair = TailRepair(last, offset, len(data) - offset, f"corrupt last record: {error}")
            del lines[error.index:]
        else:
            if partial:
                offset = len(data) - len(partial)
                self.repair = TailRepair(last, offset, len(partial), "torn record without newline")

        if self.repair is not None:
            with open(last, "r+b") as segment:
                segment.truncate(self.repair.offset)
                os.fsync(segment.fileno())
        return first + len(lines) - 1

    def _recover_unverified_tail(self, last: Path) -> int:
        """Check the records of ``last`` after the verified seq, newest first, and cut a torn or corrupt end.

        Walking back from the end reads only the pages of the records checked,
        so a start from a snapshot does not read every origin's whole last segment.
        """
        with open(last, "rb") as segment, mmap.mmap(segment.fileno(), 0, access=mmap.ACCESS_READ) as data:
            size = len(data)
            end_of_lines = data.rfind(b"\n") + 1
            if end_of_lines == 0:
                return self._recover_tail(last)
            cut_at = end_of_lines if end_of_lines < size else None
            head = None
            later_seq, later_offset = None, None
            position = end_of_lines
            while position > 0:
                start = data.rfind(b"\n", 0, position - 1) + 1
                try:
                    event = record.decode(data[start:position - 1])
                except record.UnknownEventType as error:
                    raise LogError(f"unreadable record in {last} at byte offset {start}: {error}") from None
                except record.CorruptRecord as error:
                    if position == end_of_lines and cut_at is None:
                        # The last record, with nothing after it: a crash artifact.
                        cut_at = start
                        self.repair = TailRepair(last, start, size - start, f"corrupt last record: {error}")
                        position = start
                        continue
                    expected = f", where seq {later_seq - 1} was expected" if later_seq is not None else ""
                    raise LogError(f"corrupt record in the middle of {last} at byte offset {start}{expected}: {error}") from None
                if later_seq is not None:
                    self._check_continuity(event.origin, later_seq, event.seq + 1, last, later_offset)
                else:
                    self._check_continuity(event.origin, event.seq, event.seq, last, start)
                    head = event.seq
                later_seq, later_offset = event.seq, start
                if event.seq <= self._verified_through:
                    break
                position = start
            if later_seq is not None and (position == 0 or start == 0):
                self._check_continuity(self.origin, later_seq, _first_seq(last), last, 0)

        if cut_at is not None:
            if self.repair is None:
                self.repair = TailRepair(last, cut_at, size - cut_at, "torn record without newline")
            with open(last, "r+b") as segment:
                segment.truncate(cut_at)
                os.fsync(segment.fileno())
        return head if head is not None else _first_seq(last) - 1

    def _last_seq(self, path: Path) -> tuple[int, int]:
        """Return the seq of the last record of a complete segment, and its byte offset."""
        with open(path, "rb") as segment:
            size = segment.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_PROBE_BYTES)
            segment.seek(start)
            tail = segment.read()
            if not tail.endswith(b"\n"):
                torn_at = start + tail.rfind(b"\n") + 1
                raise LogError(
                    f"torn record in {path} at byte offset {torn_at}: only the last segment may end mid-record"
                )
            line_start = tail.rfind(b"\n", 0, len(tail) - 1) + 1
            if line_start == 0 and start > 0:
                segment.seek(0)
                tail, start = segment.read(), 0
                line_start = tail.rfind(b"\n", 0, len(tail) - 1) + 1
        offset = start + line_start
        try:
            event = record.decode(tail[line_start:])
        except record.RecordError as error:
            raise LogError(f"unreadable record in {path} at byte offset {offset}: {error}") from None
        self._check_continuity(event.origin, event.seq, event.seq, path, offset)
        return event.seq, offset

    def _check_continuity(self, origin: int, seq: int, expected: int, path: Path, offset: int) -> None:
        if origin != self.origin:
            raise LogError(f"record of origin {origin} in the log of origin {self.origin}: {path} offset {offset}")
        if seq != expected:
            raise LogError(f"seq gap in {path} at byte offset {offset}: expected seq {expected}, found seq {seq}")

    def _list_segments(self) -> list[Path]:
        segments = sorted(self.directory.glob("*.jsonl"))
        for path in segments:
            _first_seq(path)
        return segments

    def _read_compacted(self) -> int:
        path = self.directory / COMPACTED_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return 0
        if not text.strip().isdigit():
            raise LogError(f"{path} contains {text[:40]!r}, which is invalid; expected the last seq deleted by retention, a whole number")
        return int(text)

    # Appending

    @property
    def first_seq(self) -> int:
        """The oldest seq still stored; head + 1 when nothing is."""
        if self._segments:
            return _first_seq(self._segments[0])
        return self.head + 1

    def bytes_after(self, after: int) -> int:
        """Estimate the bytes of the records after seq ``after``, the cost of reading them.

        Whole segments count in full; the one that contains ``after`` counts in
        proportion to its records after it.
        """
        total = 0
        for path, following in zip(self._segments, self._segments[1:] + [None]):
            first = _first_seq(path)
            last = _first_seq(following) - 1 if following is not None else self.head
            if last <= after:
                continue
            size = path.stat().st_size
            if first > after:
                total += size
            else:
                total += size * (last - after) // (last - first + 1)
        return total

    def _check_usable(self) -> None:
        if self.failure is not None:
            raise OriginFailed(self.origin, self.failure)

    def append(self, event: Event) -> None:
        """Write ``event`` as the next record and fsync it before returning."""
        self.append_batch([event])

    def append_batch(self, events: Sequence[Event]) -> None:
        """Write ``events`` as the next records with one fsync per segment touched.

        Nothing of the batch counts as stored until this returns: a crash
        midway leaves a prefix of it, which the next open keeps or cuts.
        """
        self._check_usable()
        expected = self.head + 1
        for event in events:
            if event.origin != self.origin:
                raise LogError(f"event of origin {event.origin} cannot go into the log of origin {self.origin}")
            if event.seq != expected:
                raise LogError(f"event seq {event.seq} does not follow head {expected - 1} of origin {self.origin}")
            expected += 1

        pending: list[bytes] = []
        try:
            for event in events:
                if self._writer is None or self._writer_size >= self.segment_bytes:
                    self._sync_pending(pending)
                    self._open_writer(event.seq)
                line = record.encode(event)
                pending.append(line)
                self._writer_size += len(line)
            self._sync_pending(pending)
        except OSError as error:
            path = self._writer.name if self._writer is not None else self.directory
            self.failure = LogError(f"failed to write or fsync {path}: {error.strerror or error}")
            self._close_writer()
            raise self.failure from None
        if events:
            self.head = events[-1].seq

    def _sync_pending(self, pending: list[bytes]) -> None:
        if not pending:
            return
        self._writer.write(b"".join(pending))
        self._writer.flush()
        os.fsync(self._writer.fileno())
        pending.clear()

    def _open_writer(self, seq: int) -> None:
        self._close_writer()
        if self._segments and self._segments[-1].stat().st_size < self.segment_bytes:
            path = self._segments[-1]
        else:
            path = self.directory / f"{seq:020d}.jsonl"
        new_file = not path.exists()
        self._writer = open(path, "ab")
        self._writer_size = self._writer.tell()
        if new_file:
            fsync_directory(self.directory)
            self._segments.append(path)

    def _close_writer(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except OSError:
                # Only after a failed write, whose error the caller reports;
                # close() has released the descriptor all the same.
                pass

    # Reading

    def read(self, after: int = 0) -> Iterator[Event]:
        """Yield the events with seq greater than ``after``, in order."""
        for batch in self.read_batches(after):
            for fields in batch:
                yield record.event_from_fields(fields)

    def read_batches(self, after: int = 0) -> Iterator[list[dict[str, Any]]]:
        """Yield the records with seq greater than ``after`` as lists of fields, in order.

        The start-up fold reads this way: records are checked as
        :func:`flatnet.events.record.decode_lines` describes, without building
        an Event each. An error stops this origin and is raised naming the
        file, the byte offset and the seq.
        """
        self._check_usable()
        if after < self.head and after + 1 < self.first_seq:
            raise LogCompacted(self.origin, after, self.first_seq)
        try:
            yield from self._read_batches(after)
        except LogError as error:
            self.failure = error
            raise

    def _read_batches(self, after: int) -> Iterator[list[dict[str, Any]]]:
        segments = list(self._segments)
        expected = after + 1
        for index, path in enumerate(segments):
            is_last = index + 1 == len(segments)
            if not is_last and _first_seq(segments[index + 1]) <= expected:
                continue
            base, data = self._segment_from(path, expected)
            lines = data.split(b"\n")
            partial = lines.pop()
            if partial and not is_last:
                raise LogError(
                    f"torn record in {path} at byte offset {base + len(data) - len(partial)}: "
                    f"only the last segment may end mid-record"
                )
            # A partial last line of the last segment is a record still being
            # written by the appender: not yet part of the log.
            skip = max(0, expected - _first_seq(path)) if base == 0 else 0
            for start in range(skip, len(lines), READ_BATCH_LINES):
                try:
                    records = record.decode_lines(lines[start:start + READ_BATCH_LINES], self.origin, expected)
                except record.BadLine as error:
                    # The records before the bad one are valid: a fold keeps them.
                    if error.records:
                        yield error.records
                    offset = base + _offset_of(lines, start + error.index)
                    if isinstance(error.cause, record.CorruptRecord):
                        what = "corrupt record"
                    elif error.cause is not None:
                        what = "unreadable record"
                    else:
                        what = "seq gap"
                    raise LogError(
                        f"{what} in {path} at byte offset {offset}, where seq {expected + error.index} was expected: {error}"
                    ) from None
                expected += len(records)
                yield records

    def _segment_from(self, path: Path, expected: int) -> tuple[int, bytes]:
        """Return the bytes of ``path`` from the record of seq ``expected`` on, and their offset.

        Sometimes only the end of the segment is wanted: a start after a
        snapshot, or a stream that is nearly caught up. Then the record is
        found by walking back from the end one newline per record, so the
        rest is never read. Any
        doubt (a damaged last record) falls back to reading the whole segment,
        whose checks then name the damage.
        """
        first = _first_seq(path)
        with open(path, "rb") as segment:
            size = os.fstat(segment.fileno()).st_size
            if expected <= first or size == 0:
                return 0, segment.read()
            with mmap.mmap(segment.fileno(), 0, access=mmap.ACCESS_READ) as data:
                end = data.rfind(b"\n") + 1
                last_start = data.rfind(b"\n", 0, end - 1) + 1 if end else 0
                try:
                    last_seq = record.decode_fields(data[last_start:end - 1])["seq"] if end else first - 1
                except (record.RecordError, KeyError):
                    last_seq = None
                if type(last_seq) is not int or last_seq < first:
                    return 0, data[:]
                wanted = last_seq - expected + 1
                if wanted <= 0:
                    return end, data[end:]
                if 2 * wanted > last_seq - first + 1:
                    return 0, data[:]
                position = end
                for _ in range(wanted):
                    position = data.rfind(b"\n", 0, position - 1) + 1
                return position, data[position:]

    # Retention

    def compact(self, covered_seq: int, older_than: float) -> list[Path]:
        """Delete the oldest segments whose records are all at or below ``covered_seq``
        and that were last written before ``older_than`` (a POSIX time); return them.

        The segment being appended to is never deleted, and deleting stops at
        the first segment that must stay, so the log stays one unbroken range.
        """
        self._check_usable()
        deletable: list[Path] = []
        for path, following in zip(self._segments, self._segments[1:]):
            last_seq = _first_seq(following) - 1
            if last_seq > covered_seq or path.stat().st_mtime >= older_than:
                break
            deletable.append(path)
        if not deletable:
            return []

        through = _first_seq(self._segments[len(deletable)]) - 1
        # The marker is durable before any segment goes, so a crash midway
        # leaves a log that opens: its first segment is the marker's seq + 1
        # or an older one that was not deleted yet.
        marker = self.directory / COMPACTED_FILE
        temporary = self.directory / f".{COMPACTED_FILE}.tmp"
        with open(temporary, "w") as file:
            file.write(f"{through}\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, marker)
        for path in deletable:
            path.unlink()
        fsync_directory(self.directory)
        self.compacted_through = through
        self._segments = self._segments[len(deletable):]
        return deletable

    def close(self) -> None:
        self._close_writer()


class EventLog:
    """Every origin's log under one data directory."""

    def __init__(self, data_dir: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES, tail_only: bool = False):
        """Open every origin's log under ``data_dir``.

        With ``tail_only``, opening checks only the last record of each origin
        (cutting a torn or corrupt one) and leaves the rest to reads. It suits
        a caller that reads every record it has not checked before, as the
        gateway does at start, so that no record is decoded twice.
        """
        self.root = Path(data_dir) / "log"
        self.segment_bytes = segment_bytes
        self._verified_through = _EVERY_SEQ if tail_only else 0
        self._origins: dict[int, OriginLog] = {}
        # Origins that failed to open; the others keep working.
        self._open_failures: dict[int, LogError] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and entry.name.isdigit():
                try:
                    self.origin(int(entry.name))
                except OriginFailed:
                    pass

    def origin(self, origin: int) -> OriginLog:
        """Return the log of ``origin``, opened (and recovered) on first use.

        Raises OriginFailed for an origin whose log is stopped.
        """
        log = self._origins.get(origin)
        if log is not None:
            if log.failure is not None:
                raise OriginFailed(origin, log.failure)
            return log
        failure = self._open_failures.get(origin)
        if failure is None:
            try:
                log = OriginLog(
                    self.root / str(origin), origin,
                    segment_bytes=self.segment_bytes, verified_through=self._verified_through,
                )
            except LogError as error:
                self._open_failures[origin] = failure = error
        if failure is not None:
            raise OriginFailed(origin, failure)
        self._origins[origin] = log
        return log

    def origins(self) -> list[int]:
        """Return the origins that have a log here, stopped ones included."""
        return sorted(set(self._origins) | set(self._open_failures))

    @property
    def failures(self) -> dict[int, LogError]:
        """The stopped origins and the error that stopped each."""
        failures = dict(self._open_failures)
        for origin, log in self._origins.items():
            if log.failure is not None:
                failures[origin] = log.failure
        return dict(sorted(failures.items()))

    def restart_origin_after(self, origin: int, seq: int) -> OriginLog:
        """Archive ``origin``'s log and open an empty one whose next append is ``seq + 1``.

        For a replica rebuilt from a peer's snapshot at ``seq``: the events up
        to it are gone on the peer, so the new log records them as compacted.
        """
        self.archive_origin(origin)
        directory = self.root / str(origin)
        directory.mkdir(parents=True)
        marker = directory / COMPACTED_FILE
        with open(marker, "w") as file:
            file.write(f"{seq}\n")
            file.flush()
            os.fsync(file.fileno())
        fsync_directory(directory)
        return self.origin(origin)

    def archive_origin(self, origin: int) -> Path | None:
        """Move ``origin``'s log aside to ``<data_dir>/log-archive/`` and start it over empty.

        For a replica whose gateway started a new log under the same host id:
        the old one is kept for audit, never mixed with the new one.
        """
        log = self._origins.pop(origin, None)
        if log is not None:
            log.close()
        self._open_failures.pop(origin, None)
        directory = self.root / str(origin)
        if not directory.exists():
            return None
        archive = self.root.parent / "log-archive"
        archive.mkdir(exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = archive / f"{origin}-{stamp}"
        os.rename(directory, target)
        fsync_directory(self.root)
        return target

    def vector(self) -> dict[int, int]:
        """The head seq of every working origin: the version vector of what is stored."""
        return {origin: log.head for origin, log in sorted(self._origins.items()) if log.failure is None}

    def close(self) -> None:
        for log in self._origins.values():
            log.close()


def _first_seq(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        raise LogError(f"segment file name {path.name!r} is not '<first seq, 20 digits>.jsonl'") from None


def _offset_of(lines: list[bytes], index: int) -> int:
    """Return the byte offset of line ``index`` in the data that ``lines`` were split from at newlines."""
    return sum(len(line) + 1 for line in lines[:index])


def fsync_directory(path: Path) -> None:
    """Make the names created, renamed or removed in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
