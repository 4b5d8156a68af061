"""The per-origin append-only event log.

Layout: ``<data_dir>/log/<origin>/<first seq, 20 digits>.jsonl``, one record per
line, a new segment once the current one passes ``segment_bytes``. One writer
per origin: the gateway for its own host, the follower for a peer's replica.

Opening a log reads every record of the last segment. A torn or corrupt tail
(a crash mid-write) is cut off and reported once with its file and offset, so
the next append never glues onto a partial line. A gap in ``seq`` is an error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

from flatnet.events import record
from flatnet.events.record import Event

DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024


class LogError(Exception):
    """A log that cannot be trusted as it is on disk; the message names the place."""


@dataclasses.dataclass(frozen=True, slots=True)
class TailRepair:
    """What recovery cut off the end of a segment."""

    path: Path
    offset: int
    dropped_bytes: int
    reason: str


class OriginLog:
    """The segments of one origin, with appends fsynced before they return."""

    def __init__(self, directory: Path, origin: int, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES):
        self.directory = directory
        self.origin = origin
        self.segment_bytes = segment_bytes
        self.head = 0
        self.repair: TailRepair | None = None
        self._writer = None
        self._writer_size = 0
        self._open()

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob("*.jsonl"))

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        segments = self._segments()
        if not segments:
            return

        # Earlier segments were closed cleanly when the next one started; their
        # last seq follows from the next segment's name, checked on read.
        last = segments[-1]
        first_seq = _first_seq(last)
        expected = first_seq
        good_end = 0
        with open(last, "rb") as segment:
            data = segment.read()
        for line_start, line in _lines(data):
            if not line.endswith(b"\n"):
                self.repair = TailRepair(last, line_start, len(data) - line_start, "torn record without newline")
                break
            try:
                event = record.decode(line)
            except record.CorruptRecord as error:
                if line_start + len(line) == len(data):
                    self.repair = TailRepair(last, line_start, len(line), f"corrupt last record: {error}")
                    break
                raise LogError(
                    f"corrupt record in the middle of {last} at byte offset {line_start}: {error}"
                ) from None
            except record.UnknownEventType as error:
                # Cutting it would lose a valid record written by a newer version.
                raise LogError(f"unreadable record in {last} at byte offset {line_start}: {error}") from None
            self._check_continuity(event, expected, last, line_start)
            expected = event.seq + 1
            good_end = line_start + len(line)

        if self.repair is not None:
            with open(last, "r+b") as segment:
                segment.truncate(good_end)
                os.fsync(segment.fileno())
        self.head = expected - 1

    def _check_continuity(self, event: Event, expected: int, path: Path, offset: int) -> None:
        if event.origin != self.origin:
            raise LogError(f"record of origin {event.origin} in the log of origin {self.origin}: {path} offset {offset}")
        if event.seq != expected:
            raise LogError(
                f"seq gap in {path} at byte offset {offset}: expected seq {expected}, found seq {event.seq}"
            )

    def append(self, event: Event) -> None:
        """Write ``event`` as the next record and fsync it before returning."""
        if event.origin != self.origin:
            raise LogError(f"event of origin {event.origin} cannot go into the log of origin {self.origin}")
        if event.seq != self.head + 1:
            raise LogError(
                f"event seq {event.seq} does not follow head {self.head} of origin {self.origin}"
            )

        line = record.encode(event)
        writer = self._writer_for(event.seq)
        writer.write(line)
        writer.flush()
        os.fsync(writer.fileno())
        self._writer_size += len(line)
        self.head = event.seq

    def _writer_for(self, seq: int):
        if self._writer is not None and self._writer_size < self.segment_bytes:
            return self._writer
        if self._writer is not None:
            self._writer.close()
            self._writer = None

        segments = self._segments()
        if segments and segments[-1].stat().st_size < self.segment_bytes:
            path = segments[-1]
        else:
            path = self.directory / f"{seq:020d}.jsonl"
        new_file = not path.exists()
        self._writer = open(path, "ab")
        self._writer_size = self._writer.tell()
        if new_file:
            _fsync_directory(self.directory)
        return self._writer

    def read(self, after: int = 0) -> Iterator[Event]:
        """Yield the events with seq greater than ``after``, in order."""
        segments = self._segments()
        expected = after + 1
        for index, path in enumerate(segments):
            next_first = _first_seq(segments[index + 1]) if index + 1 < len(segments) else None
            if next_first is not None and next_first <= expected:
                continue
            with open(path, "rb") as segment:
                data = segment.read()
            for offset, line in _lines(data):
                if not line.endswith(b"\n"):
                    if index + 1 < len(segments):
                        raise LogError(
                            f"torn record in {path} at byte offset {offset}: only the last segment may end mid-record"
                        )
                    # A record still being written by the appender; not yet part of the log.
                    return
                try:
                    event = record.decode(line)
                except record.RecordError as error:
                    raise LogError(f"unreadable record in {path} at byte offset {offset}: {error}") from None
                if event.seq < expected:
                    continue
                self._check_continuity(event, expected, path, offset)
                expected += 1
                yield event

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class EventLog:
    """Every origin's log under one data directory."""

    def __init__(self, data_dir: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES):
        self.root = Path(data_dir) / "log"
        self.segment_bytes = segment_bytes
        self._origins: dict[int, OriginLog] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and entry.name.isdigit():
                self.origin(int(entry.name))

    def origin(self, origin: int) -> OriginLog:
        """The log of ``origin``, opened (and recovered) on first use."""
        log = self._origins.get(origin)
        if log is None:
            log = OriginLog(self.root / str(origin), origin, segment_bytes=self.segment_bytes)
            self._origins[origin] = log
        return log

    def origins(self) -> list[int]:
        return sorted(self._origins)

    def vector(self) -> dict[int, int]:
        """The head seq of every origin: the version vector of what is stored."""
        return {origin: log.head for origin, log in sorted(self._origins.items())}

    def close(self) -> None:
        for log in self._origins.values():
            log.close()


def _first_seq(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        raise LogError(f"segment file name {path.name!r} is not '<first seq, 20 digits>.jsonl'") from None


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        stop = len(data) if end == -1 else end + 1
        yield start, data[start:stop]
        start = stop


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
