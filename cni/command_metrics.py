"""Run counts and durations of the plugin's commands, and the file that carries the in-process ones to the gateway.

The gateway counts the commands it runs for the fast path in memory. A command
that the plugin runs in its own process is added to ``<dataDir>/plugin-metrics.json``,
and the gateway reads that file each time Prometheus scrapes ``/metrics``, as
node_exporter's textfile collector reads its files.

The file contains cumulative totals per command: runs by result and a histogram
of durations. Its size does not depend on how many commands ran, so a plugin
that runs for months without a gateway never grows it. The gateway only reads
the file, so totals outlive gateway restarts and no run is counted twice.

Plugins update the file under an flock on ``plugin-metrics.lock``: read, add,
write a temporary file, rename it over the old one. The gateway reads without
the lock and reads either the old or the new file whole, so a plugin never
waits on the gateway. Recording is best effort: a failure is logged and the
command's result stands.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import time
from pathlib import Path

from flatnet.cni.launcher import DEFAULT_DATA_DIR
from flatnet.logs import cni as logger

FILE_NAME = "plugin-metrics.json"
LOCK_NAME = "plugin-metrics.lock"
FORMAT = 1
# Upper bounds in seconds, for both paths: from a repeated ADD (under a
# millisecond) to a hung one. An in-process ADD includes importing pyroute2.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Only these become label values: anything else a runtime sends is not counted.
COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
RESULTS = ("ok", "error")
# Plugins hold the lock for one read and one write of about a kilobyte. A
# plugin that cannot take it within this bound drops its run instead of
# delaying the runtime.
LOCK_TIMEOUT_SECONDS = 0.5
_LOCK_POLL_SECONDS = 0.002


@dataclasses.dataclass
class CommandTotals:
    """Runs of one command: counts by result, and durations per bucket (not cumulative, the last one +Inf)."""

    results: dict[str, int]
    bucket_counts: list[int]
    seconds: float = 0.0


class Totals:
    """Cumulative run counts and durations per command, on one path."""

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS):
        self.bounds = tuple(bounds)
        self.commands: dict[str, CommandTotals] = {}

    def observe(self, command: str, ok: bool, seconds: float) -> None:
        totals = self.commands.get(command)
        if totals is None:
            totals = self.commands[command] = CommandTotals({result: 0 for result in RESULTS}, [0] * (len(self.bounds) + 1))
        totals.results["ok" if ok else "error"] += 1
        bucket = next((index for index, bound in enumerate(self.bounds) if seconds <= bound), len(self.bounds))
        totals.bucket_counts[bucket] += 1
        totals.seconds += seconds

    def to_document(self) -> dict:
        return {
            "format": FORMAT,
            "buckets": list(self.bounds),
            "commands": {
                command: {**totals.results, "sum": totals.seconds, "buckets": totals.bucket_counts}
                for command, totals in sorted(self.commands.items())
            },
        }

    @classmethod
    def from_document(cls, document: object) -> Totals:
        """Build totals from the file's JSON document; raise ValueError naming what is invalid."""
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"not a format {FORMAT} document")
        bounds = document.get("buckets")
        if (
            not isinstance(bounds, list) or not bounds
            or not all(isinstance(bound, (int, float)) and math.isfinite(bound) for bound in bounds)
            or sorted(set(bounds)) != bounds
        ):
            raise ValueError(f"invalid buckets {bounds!r}: must be increasing finite numbers")
        commands = document.get("commands")
        if not isinstance(commands, dict):
            raise ValueError("missing commands")
        totals = cls(tuple(bounds))
        for command, entry in commands.items():
            if command not in COMMANDS:
                raise ValueError(f"unknown command {command!r}")
            if not isinstance(entry, dict):
                raise ValueError(f"invalid entry of {command}")
            results = {result: entry.get(result) for result in RESULTS}
            counts = entry.get("buckets")
            seconds = entry.get("sum")
            if not all(_is_count(value) for value in results.values()):
                raise ValueError(f"invalid result counts of {command}: {results!r}")
            if not isinstance(counts, list) or len(counts) != len(bounds) + 1 or not all(map(_is_count, counts)):
                raise ValueError(f"invalid bucket counts of {command}: {counts!r}")
            if sum(counts) != sum(results.values()):
                raise ValueError(f"the bucket counts of {command} do not add up to its runs")
            if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"invalid sum of {command}: {seconds!r}")
            totals.commands[command] = CommandTotals(results, counts, float(seconds))
        return totals


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def data_dir_of(stdin: bytes) -> Path | None:
    """Return the data directory the network config names (``dataDir``, by default /var/lib/flatnet), or None if it names none."""
    try:
        config = json.loads(stdin)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(config, dict):
        return None
    data_dir = config.get("dataDir", DEFAULT_DATA_DIR)
    if not isinstance(data_dir, str) or not data_dir.startswith("/"):
        return None
    return Path(data_dir)


def read(data_dir: Path) -> Totals | None:
    """Return the in-process totals kept in ``data_dir``, or None before its first recorded run.

    Raise OSError when the file cannot be read and ValueError when it is invalid.
    """
    try:
        text = (data_dir / FILE_NAME).read_bytes()
    except FileNotFoundError:
        return None
    return Totals.from_document(json.loads(text))


def record(data_dir: Path, command: str, ok: bool, seconds: float) -> None:
    """Add one in-process run to the totals in ``data_dir``; log any failure (an Exception) and return."""
    if command not in COMMANDS:
        return
    try:
        _add(data_dir, command, ok, seconds)
    except Exception as error:  # noqa: BLE001 - a failure to count a run must never fail the run
        logger.warning("failed to record the in-process %s in %s, so /metrics will not count it (the %s itself is unaffected): %s: %s; "
                       "make it a writable regular file, or remove it",
                       command, data_dir / FILE_NAME, command, type(error).__name__, error)


def _add(data_dir: Path, command: str, ok: bool, seconds: float) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _take_lock(lock, data_dir / LOCK_NAME)
        path = data_dir / FILE_NAME
        totals = _read_for_update(path)
        totals.observe(command, ok, seconds)
        _replace(path, json.dumps(totals.to_document(), separators=(",", ":")).encode())
    finally:
        # Closing the descriptor releases the flock.
        os.close(lock)


def _take_lock(fd: int, path: Path) -> None:
    deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {LOCK_TIMEOUT_SECONDS} s waiting for the lock on {path}, held by another plugin") from None
            time.sleep(_LOCK_POLL_SECONDS)


def _read_for_update(path: Path) -> Totals:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return Totals()
    try:
        totals = Totals.from_document(json.loads(text))
    except ValueError as error:
        # Left as it is, an invalid file would stop all counting for good.
        logger.warning("starting the in-process metrics in %s over: the file is invalid: %s", path, error)
        return Totals()
    if totals.bounds != DURATION_BUCKETS:
        logger.info("starting the in-process metrics in %s over: its duration buckets %s differ from %s",
                    path, list(totals.bounds), list(DURATION_BUCKETS))
        return Totals()
    return totals


def _replace(path: Path, content: bytes) -> None:
    # NOTE: not fsynced. After a power loss the newest runs may be missing, or
    # the file may be empty, and the next plugin then starts the totals over.
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(temporary, path)
