"""A gateway's data directory as replay reads it: logs, snapshots, decision files, node identity.

Replay opens nothing for writing. The gateway's own ``EventLog`` is not used
here, because opening it repairs a torn tail in place and creates missing
directories. This module reads the same files with the same record decoder
(:func:`flatnet.events.record.decode_lines`) and leaves them as they are.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from flatnet import i18n
from flatnet.events import record
from flatnet.events import snapshot as snapshots
from flatnet.events.log import COMPACTED_FILE

i18n.define({
    "replay.no_data_dir": (
        "data directory {path} not found; give a gateway's data_dir with --data-dir, or its config with --config",
        "データディレクトリー {path} が見つかりません。--data-dir でゲートウェイの data_dir を、または --config で設定ファイルを指定してください",
    ),
    "replay.data_dir_not_directory": (
        "data directory {path} is not a directory. Give a gateway's data_dir with --data-dir, or its config with --config",
        "データディレクトリー {path} はディレクトリーではありません。--data-dir でゲートウェイの data_dir を、または --config で設定ファイルを指定してください",
    ),
    "replay.not_data_dir": (
        "{path} is not a gateway's data directory: it has no log/ folder; give the data_dir of a gateway's config",
        "{path} はゲートウェイのデータディレクトリーではありません（log/ フォルダーがありません）。ゲートウェイ設定の data_dir を指定してください",
    ),
})

# The current decision file of the gateway is decisions.jsonl, a proxy worker's
# decisions-w<N>.jsonl; rolled-over files add .1 (newest) to .<keep> (oldest).
_DECISION_FILE = re.compile(r"decisions(?:-w(\d+))?\.jsonl(?:\.(\d+))?")
# How many records of a segment are decoded at once while reading.
_BATCH_LINES = 4096


class DataDirError(Exception):
    """A path that is not a readable gateway data directory; the message names what to give instead."""


@dataclasses.dataclass(frozen=True)
class OriginFiles:
    """The segments of one origin's log, oldest first, and how far retention deleted it."""

    origin: int
    directory: Path
    segments: tuple[Path, ...]
    compacted_through: int
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class DecisionFile:
    """One decision file: the process that wrote it (0 for the gateway, N for worker N) and its age rank."""

    path: Path
    worker: int
    rolled: int


class OriginReader:
    """The records of one origin after a seq, read in batches, and where reading stopped.

    Reading stops at the first record that is damaged or out of place, as the
    gateway's reader does: ``failure`` then names the file, the byte offset
    and the reason, and the batches hold what came before it. A last line
    without its newline is a record still being written (or cut short by a
    crash): it is left out and flagged in ``torn_tail``. ``head`` is the last
    seq read without a problem.
    """

    def __init__(self, files: OriginFiles, after: int):
        self.files = files
        self.after = after
        self.head = files.compacted_through
        self.failure: str | None = files.problem
        self.torn_tail = False

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        if self.failure is not None:
            return
        files = self.files
        expected = files.compacted_through + 1
        for index, path in enumerate(files.segments):
            first = int(path.stem)
            if first != expected:
                self.failure = f"seq gap before {path}: expected seq {expected}, but the segment starts at seq {first}"
                return
            lines, partial = _segment_lines(path)
            if partial and index + 1 < len(files.segments):
                offset = sum(len(line) + 1 for line in lines)
                self.failure = f"torn record in {path} at byte offset {offset}: only the last segment may end mid-record"
                return
            self.torn_tail = bool(partial)
            skip = max(0, self.after + 1 - first)
            for start in range(skip, len(lines), _BATCH_LINES):
                batch = lines[start:start + _BATCH_LINES]
                try:
                    decoded = record.decode_lines(batch, files.origin, first + start)
                except record.BadLine as error:
                    bad = start + error.index
                    offset = sum(len(line) + 1 for line in lines[:bad])
                    what = "unreadable record" if error.cause is not None else "seq gap"
                    self.failure = f"{what} in {path} at byte offset {offset}, where seq {first + bad} was expected: {error}"
                    if error.index:
                        self.head = first + bad - 1
                        yield record.decode_lines(batch[:error.index], files.origin, first + start)
                    return
                self.head = first + start + len(decoded) - 1
                yield decoded
            expected = first + len(lines)
            self.head = expected - 1


class DataDir:
    """Read-only access to the files one gateway keeps under its data_dir."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_dir():
            key = "replay.data_dir_not_directory" if self.path.exists() else "replay.no_data_dir"
            raise DataDirError(i18n.text(key, path=self.path))
        if not (self.path / "log").is_dir():
            raise DataDirError(i18n.text("replay.not_data_dir", path=self.path))
        self.log_root = self.path / "log"

    # The event log

    def origins(self) -> list[OriginFiles]:
        """Return every origin with a log folder, in origin order, with its segment files."""
        found = []
        for entry in sorted(self.log_root.iterdir(), key=lambda entry: entry.name):
            if entry.is_dir() and entry.name.isdigit():
                found.append(self.origin_files(int(entry.name), entry))
        return sorted(found, key=lambda files: files.origin)

    def origin_files(self, origin: int, directory: Path) -> OriginFiles:
        segments = sorted(path for path in directory.iterdir() if path.suffix == ".jsonl" and not path.name.startswith("."))
        problem = None
        compacted = 0
        marker = directory / COMPACTED_FILE
        if marker.exists():
            text = marker.read_text(errors="replace")
            if text.strip().isdigit():
                compacted = int(text)
            else:
                problem = f"{marker} holds {text[:40]!r}; expected the last seq deleted by retention, a whole number"
        for path in segments:
            if not path.stem.isdigit():
                problem = problem or f"segment file name {path.name!r} is not '<first seq, 20 digits>.jsonl'"
        return OriginFiles(origin, directory, tuple(segments), compacted, problem)

    def read_origin(self, files: OriginFiles, after: int = 0) -> OriginReader:
        """Return a reader of the records of ``files.origin`` with seq greater than ``after``."""
        return OriginReader(files, after)

    # Snapshots

    def snapshot_paths(self) -> list[Path]:
        return snapshots.list_snapshots(snapshots.snapshot_dir(self.path))

    def load_snapshots(self) -> tuple[list[snapshots.Snapshot], list[str]]:
        """Load every snapshot that loads and matches its digest, oldest first; return them and the others' errors."""
        loaded, errors = [], []
        for path in self.snapshot_paths():
            try:
                loaded.append(snapshots.load_snapshot(path))
            except snapshots.SnapshotError as error:
                errors.append(str(error))
        return loaded, errors

    # Decisions and identity

    def decision_files(self) -> list[DecisionFile]:
        """Return the decision files, the gateway's first and then each worker's, each process's oldest first."""
        directory = self.path / "decisions"
        if not directory.is_dir():
            return []
        files = []
        for path in directory.iterdir():
            match = _DECISION_FILE.fullmatch(path.name)
            if match is not None and path.is_file():
                files.append(DecisionFile(path, int(match.group(1) or 0), int(match.group(2) or 0)))
        return sorted(files, key=lambda file: (file.worker, -file.rolled))

    def node(self) -> str | None:
        """Return the node id in ``node.json``, or None when it is missing or unreadable."""
        try:
            stored = orjson.loads((self.path / "node.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        node = stored.get("node") if isinstance(stored, dict) else None
        return node if isinstance(node, str) else None


def _segment_lines(path: Path) -> tuple[list[bytes], bytes]:
    with open(path, "rb") as segment:
        data = segment.read()
    lines = data.split(b"\n")
    partial = lines.pop()
    return lines, partial


class LineBlocks:
    """The whole lines of a file up to a size, read in blocks.

    ``size`` caps what is read: the size the file had when replay listed it,
    so records a live gateway appends meanwhile are left out. A last line
    without its newline (a record being written, or cut by a crash) is not
    yielded, and ``partial`` tells whether there was one.
    """

    def __init__(self, path: Path, size: int, block_bytes: int = 8 << 20):
        self.path = path
        self.size = size
        self.block_bytes = block_bytes
        self.partial = False

    def blocks(self) -> Iterator[tuple[int, list[bytes], int]]:
        """Yield (number of the block's first line, counting from 1; the lines; bytes read so far)."""
        number = 1
        done = 0
        rest = b""
        with open(self.path, "rb") as file:
            while done < self.size:
                block = file.read(min(self.block_bytes, self.size - done))
                if not block:
                    break
                done += len(block)
                lines = (rest + block).split(b"\n")
                rest = lines.pop()
                yield number, lines, done
                number += len(lines)
        self.partial = bool(rest)
