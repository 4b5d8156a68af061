"""Decision records and access lines: why each proxied request went where it went.

The request path only appends a record to a list. Once the event loop has run
the callbacks that are ready, the list is encoded (the records, one access
line each) and counted in the metrics on the loop's thread. The encoded
records go to one writer thread, at most every WRITE_INTERVAL_SECONDS unless
``BATCH_RECORDS`` are waiting, which appends them to the rolling decision log
and the access log. The request path therefore never waits on the disk.
Without an access log file the access lines go to the ``flatnet.access``
logger instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime
import enum
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

import orjson

from flatnet.logs import access as access_logger
from flatnet.logs import proxy as logger

BATCH_RECORDS = 2048
# While the writer thread waits for the GIL, every GIL release of the loop's
# thread (uvloop releases it around each poll and callback) wakes it with a
# futex call. Handing over every 10 ms cost about 10% more CPU per proxied
# request than every 50 ms (bench/proxy.py, 2 processes on a 2-core VM).
WRITE_INTERVAL_SECONDS = 0.05
# Batches queued for the writer thread before new ones are dropped: a disk
# that stalls for this long (64 x 50 ms) costs records, never requests.
MAX_QUEUED_BATCHES = 64
# The vector's keys are origins (ints); each record ends its line.
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


class Decision(str, enum.Enum):
    """The route the proxy chose for a request, or the reason it responded itself."""

    LOCAL = "local"
    PEER = "peer"
    NOT_FOUND = "not-found"
    STALE_RETRY = "stale-retry"
    LOOP = "loop"
    EXPIRED = "expired"
    BAD_REQUEST = "bad-request"


@dataclasses.dataclass(slots=True)
class DecisionRecord:
    """One request's record; filled in as the request goes and written once it ends.

    It is written as one JSON object with these field names (orjson encodes
    the dataclass itself); docs/design.md describes each field.
    """

    ts: float
    request_id: str
    client: str
    method: str
    host: str
    name: str | None = None
    decision: Decision = Decision.BAD_REQUEST
    target: str | None = None
    owner: int | None = None
    container_id: str | None = None
    vector: dict[int, int] | None = None
    expired: tuple[int, ...] = ()
    stale_policy: str | None = None
    owner_silent_seconds: float | None = None
    retried_from: int | None = None
    hop: int | None = None
    status: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    duration_ms: float = 0.0

    def access_line(self) -> str:
        """Format the access log line, as documented in docs/design.md."""
        line = (
            f'client={self.client} method={self.method} host="{_quoted(self.host)}" name={self.name or "-"}'
            f" decision={self.decision.value} target={self.target or '-'}"
            f" owner={self.owner if self.owner is not None else '-'} status={self.status}"
            f" bytes={self.bytes_sent} duration_ms={self.duration_ms:.1f} request_id={self.request_id}"
        )
        if self.hop is not None:
            line += f" hop={self.hop}"
        if self.stale_policy is not None:
            line += f" stale={self.stale_policy}:{self.owner_silent_seconds:.1f}"
        if self.retried_from is not None:
            line += f" retried_from={self.retried_from}"
        return line


def _quoted(value: str) -> str:
    # A Host header is the client's text: keep the access line one parseable line.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


class DecisionLog:
    """The rolling decision log of one process, ``<data_dir>/decisions/<file_name>``.

    When the file reaches ``max_bytes`` it is renamed to ``<file_name>.1`` (the
    older ones move up to ``.2`` and so on), and the oldest beyond ``keep_files``
    is deleted.
    """

    def __init__(
        self, data_dir: Path, *, file_name: str = "decisions.jsonl", max_bytes: int = 64 << 20, keep_files: int = 4,
        access_log: Path | None = None,
    ):
        self.directory = data_dir / "decisions"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / file_name
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self._file = open(self.path, "ab")
        self._size = self._file.tell()
        try:
            self._access = open(access_log, "ab") if access_log is not None else None
        except OSError as error:
            self._file.close()
            raise OSError(error.errno, f"cannot open access_log {access_log}: {error.strerror}") from None
        # Called on the loop's thread with each batch as it goes to the writer (metrics use it).
        self.observers: list[Callable[[list[DecisionRecord]], None]] = []
        self._pending: list[DecisionRecord] = []
        self._futures: list[concurrent.futures.Future] = []
        # Encoded records (and access lines) not yet handed to the writer thread.
        self._records: list[bytes] = []
        self._lines: list[bytes] = []
        self._unlogged: list[DecisionRecord] = []
        self._encoded = 0
        self._encode_handle: asyncio.Handle | None = None
        self._hand_over_handle: asyncio.TimerHandle | None = None
        self._last_hand_over = 0.0
        self._dropped = 0
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="decision-log")
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, record: DecisionRecord) -> None:
        """Queue ``record`` for the writer thread; this does no I/O."""
        self._pending.append(record)
        if self._encode_handle is None:
            # In CPython 3.11 asyncio.get_running_loop() makes a getpid() system call.
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            self._encode_handle = loop.call_soon(self._encode_and_schedule)

    def _encode_and_schedule(self) -> None:
        self._encode_handle = None
        self._encode()

        # Each hand-over wakes the writer thread, so under load they are spaced out.
        loop = self._loop
        due = self._last_hand_over + WRITE_INTERVAL_SECONDS
        if loop.time() >= due or self._encoded >= BATCH_RECORDS:
            self._hand_over()
        elif self._hand_over_handle is None:
            self._hand_over_handle = loop.call_at(due, self._hand_over)

    def _encode(self) -> None:
        # Encoding on the loop's thread, once the ready callbacks have run,
        # keeps the writer thread from holding the GIL while requests wait.
        batch, self._pending = self._pending, []
        if not batch or self._closed:
            return
        self._records.append(b"".join(orjson.dumps(record, option=_JSON_OPTIONS) for record in batch))
        if self._access is not None:
            self._lines.append("".join(f"{_iso(record.ts)} {record.access_line()}\n" for record in batch).encode())
        else:
            self._unlogged.extend(batch)
        self._encoded += len(batch)
        for observer in self.observers:
            observer(batch)

    def flush(self) -> None:
        """Hand every waiting record to the writer thread now."""
        if self._encode_handle is not None:
            self._encode_handle.cancel()
            self._encode_handle = None
        self._encode()
        self._hand_over()

    def _hand_over(self) -> None:
        if self._hand_over_handle is not None:
            self._hand_over_handle.cancel()
            self._hand_over_handle = None
        if not self._encoded:
            return
        records, lines, unlogged = b"".join(self._records), b"".join(self._lines), self._unlogged
        count = self._encoded
        self._records, self._lines, self._unlogged, self._encoded = [], [], [], 0
        with contextlib.suppress(RuntimeError):
            self._last_hand_over = asyncio.get_running_loop().time()

        self._futures = [future for future in self._futures if not self._finished(future)]
        if len(self._futures) >= MAX_QUEUED_BATCHES:
            self._dropped += count
            logger.warning(
                "decision log %s is %d batches behind; dropped %d records so far", self.path, len(self._futures), self._dropped,
            )
            return
        self._futures.append(self._writer.submit(self._write, records, lines or None, unlogged or None))

    def _finished(self, future: concurrent.futures.Future) -> bool:
        """Tell whether a batch's write is over, logging its error if it failed."""
        if not future.done():
            return False
        error = future.exception()
        if error is not None:
            logger.error("failed to write decision records to %s: %s; later records are still tried", self.path, error)
        return True

    def _write(self, records: bytes, lines: bytes | None, unlogged: list[DecisionRecord] | None) -> None:
        if self._size + len(records) > self.max_bytes and self._size > 0:
            self._roll()
        self._file.write(records)
        self._file.flush()
        self._size += len(records)

        if lines is not None:
            self._access.write(lines)
            self._access.flush()
        elif unlogged is not None and access_logger.isEnabledFor(logging.INFO):
            for record in unlogged:
                _log_access(record)

    def _roll(self) -> None:
        self._file.close()
        oldest = self.path.with_name(f"{self.path.name}.{self.keep_files}")
        if oldest.exists():
            oldest.unlink()
        for index in range(self.keep_files - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = open(self.path, "ab")
        self._size = 0

    def close(self) -> None:
        """Write what is still waiting, then stop the writer thread."""
        self.flush()
        self._closed = True
        self._writer.shutdown(wait=True)
        for future in self._futures:
            self._finished(future)
        self._file.close()
        if self._access is not None:
            self._access.close()
        if self._dropped:
            logger.warning("decision log %s dropped %d records in all", self.path, self._dropped)


@functools.lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    return datetime.datetime.fromtimestamp(second, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _iso(ts: float) -> str:
    """Return ``ts`` as an ISO 8601 UTC time with milliseconds, like 2026-12-04T21:30:00.123Z."""
    second = int(ts)
    return f"{_iso_second(second)}.{int((ts - second) * 1000):03d}Z"


def _log_access(record: DecisionRecord) -> None:
    # The line carries the request's own time, not the time the batch was written.
    entry = access_logger.makeRecord(access_logger.name, logging.INFO, __file__, 0, record.access_line(), None, None)
    entry.created = record.ts
    entry.msecs = (record.ts - int(record.ts)) * 1000
    entry.fields = dataclasses.asdict(record)
    access_logger.handle(entry)
