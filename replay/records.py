"""Decision records as replay reads them: cut at byte markers into shared keys, parsed only when needed.

The gateway writes each record with orjson, fields in the order of
:class:`flatnet.gateway.decisions.DecisionRecord`. The bytes from ``"host"``
to ``"container_id"`` and from ``"expired"`` to ``"status"`` are the routing
fields. Many records share them, so they are a dictionary key, parsed once.
The vector's bytes are another key. A record laid out otherwise is parsed in
full and keyed the same way.
"""

from __future__ import annotations

import array
import bisect
import collections
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from flatnet.replay.datadir import DataDir, DecisionFile, LineBlocks

# Record fields that decide a request's route and its result, besides the vector.
SHAPE_FIELDS = (
    "host", "name", "decision", "target", "owner", "container_id",
    "expired", "stale_policy", "owner_silent_seconds", "retried_from", "hop", "status",
)
# The byte markers of a record written by the gateway (orjson, fields in DecisionRecord's order).
TS_MARKER = b'{"ts":'
HOST_MARKER = b',"host":'
VECTOR_MARKER = b',"vector":'
EXPIRED_MARKER = b',"expired":'
BYTES_SENT_MARKER = b',"bytes_sent":'


@dataclasses.dataclass(frozen=True, slots=True)
class RecordKeys:
    """A decision record cut into the keys replay works with, without parsing the whole record."""

    file: DecisionFile
    number: int
    ts: float
    shape_key: Any
    vector_key: bytes
    line: bytes


def scan_records(data_dir: DataDir) -> Iterator[RecordKeys]:
    """Yield every readable decision record of ``data_dir``, file by file in :meth:`DataDir.decision_files` order."""
    for file in data_dir.decision_files():
        reader = LineBlocks(file.path, file.path.stat().st_size)
        for first_number, lines, _ in reader.blocks():
            for number, line in enumerate(lines, first_number):
                keys = split_record(line)
                if keys is not None:
                    yield RecordKeys(file, number, *keys, line)


def split_record(line: bytes) -> tuple[float, Any, bytes] | None:
    """Cut a record line into (ts, shape key, vector key); None for a blank or unreadable line."""
    comma = line.find(b",", 6)
    host = line.find(HOST_MARKER, comma)
    vector_at = line.find(VECTOR_MARKER, host)
    expired_at = line.find(EXPIRED_MARKER, vector_at)
    sent_at = line.find(BYTES_SENT_MARKER, expired_at)
    if line[:6] == TS_MARKER and comma > 0 and host > 0 and vector_at > 0 and expired_at > 0 and sent_at > 0:
        try:
            return float(line[6:comma]), (line[host:vector_at], line[expired_at:sent_at]), line[vector_at + 10:expired_at]
        except ValueError:
            pass
    try:
        fields = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(fields, dict) or type(fields.get("ts")) not in (int, float):
        return None
    key = ("other", orjson.dumps({name: fields.get(name) for name in SHAPE_FIELDS}))
    return float(fields["ts"]), key, orjson.dumps(fields.get("vector"), option=orjson.OPT_NON_STR_KEYS)


def shape_fields(key: Any) -> dict[str, Any] | None:
    """Return the routing fields in a shape key, or None when they are not valid JSON."""
    try:
        if key[0] == "other":
            return orjson.loads(key[1])
        return orjson.loads(b"{" + key[0][1:] + key[1] + b"}")
    except orjson.JSONDecodeError:
        return None


def parse_vector(key: bytes) -> dict[int, int] | None:
    """Parse a record's version vector from its JSON bytes; None when it is not a map of origin to seq."""
    try:
        raw = orjson.loads(key)
    except orjson.JSONDecodeError:
        return None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        return None
    values = raw.values()
    # Checked with builtins over the whole vector: this runs once per distinct vector.
    if not set(map(type, values)) <= {int} or min(values, default=0) < 0:
        return None
    try:
        seqs = dict(zip(map(int, raw), values))
    except ValueError:
        return None
    if min(seqs, default=1) < 1:
        return None
    return seqs


def scan_shapes(data_dir: DataDir) -> list[tuple[dict[str, Any], int]]:
    """Return the routing fields of every decision record with how many records share them, for inferring settings."""
    counts: collections.Counter[Any] = collections.Counter()
    for keys in scan_records(data_dir):
        counts[keys.shape_key] += 1
    shapes = []
    for key, count in sorted(counts.items(), key=lambda item: repr(item[0])):
        fields = shape_fields(key)
        if fields is not None:
            shapes.append((fields, count))
    return shapes


@dataclasses.dataclass
class RecordIndex:
    """Every decision record to audit, as ids of shared keys, in file order.

    Record ``i`` has time ``ts[i]``, routing fields ``shape_keys[shapes[i]]``
    and version vector ``vector_keys[vectors[i]]``, and is line
    ``numbers[i]`` of the file whose entry in ``files`` starts at or before ``i``.
    """

    shape_keys: list[Any] = dataclasses.field(default_factory=list)
    vector_keys: list[bytes] = dataclasses.field(default_factory=list)
    ts: array.array = dataclasses.field(default_factory=lambda: array.array("d"))
    shapes: array.array = dataclasses.field(default_factory=lambda: array.array("l"))
    vectors: array.array = dataclasses.field(default_factory=lambda: array.array("l"))
    numbers: array.array = dataclasses.field(default_factory=lambda: array.array("l"))
    files: list[tuple[int, DecisionFile]] = dataclasses.field(default_factory=list)
    # Lines that are not decision records: (file, line number, what is wrong).
    unreadable: list[tuple[DecisionFile, int, str]] = dataclasses.field(default_factory=list)
    # Files that end in a line without its newline.
    partial: list[DecisionFile] = dataclasses.field(default_factory=list)
    # Routing fields parsed so far, by shape key: settings inference and the audit parse each once.
    parsed: dict[Any, dict[str, Any] | None] = dataclasses.field(default_factory=dict)

    def fields(self, key: Any) -> dict[str, Any] | None:
        """Return the routing fields of shape ``key`` (None when they are not valid JSON), parsing them once."""
        if key not in self.parsed:
            self.parsed[key] = shape_fields(key)
        return self.parsed[key]

    def locate(self, position: int) -> tuple[DecisionFile, int]:
        """Return the file and line number of record ``position``."""
        starts = [start for start, _ in self.files]
        return self.files[bisect.bisect_right(starts, position) - 1][1], self.numbers[position]


def index_records(
    files: list[tuple[DecisionFile, int]], *, since: float, until: float, request_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> RecordIndex:
    """Cut every record of ``files`` (each read up to its size) into a RecordIndex.

    Records outside [since, until], or whose ``request_id`` field is not ``request_id`` (when given), are left out.
    """
    needle = orjson.dumps(request_id) if request_id is not None else None
    index = RecordIndex()
    shape_ids: dict[Any, int] = {}
    vector_ids: dict[bytes, int] = {}
    shape_keys, vector_keys = index.shape_keys, index.vector_keys
    add_ts, add_shape, add_vector, add_number = index.ts.append, index.shapes.append, index.vectors.append, index.numbers.append
    done_before = 0
    for file, size in files:
        index.files.append((len(index.ts), file))
        reader = LineBlocks(file.path, size)
        for first_number, lines, done in reader.blocks():
            for number, line in enumerate(lines, first_number):
                # The same cut as split_record, written out: this runs once per record.
                comma = line.find(b",", 6)
                host = line.find(HOST_MARKER, comma)
                vector_at = line.find(VECTOR_MARKER, host)
                expired_at = line.find(EXPIRED_MARKER, vector_at)
                sent_at = line.find(BYTES_SENT_MARKER, expired_at)
                ts = None
                if line[:6] == TS_MARKER and comma > 0 and host > 0 and vector_at > 0 and expired_at > 0 and sent_at > 0:
                    try:
                        ts = float(line[6:comma])
                    except ValueError:
                        pass
                    key = (line[host:vector_at], line[expired_at:sent_at])
                    vector_key = line[vector_at + 10:expired_at]
                if ts is None:
                    if not line.strip():
                        continue
                    parsed = split_record(line)
                    if parsed is None:
                        index.unreadable.append((file, number, "not valid JSON, or not a decision record (no numeric 'ts')"))
                        continue
                    ts, key, vector_key = parsed

                if ts < since or ts > until:
                    continue
                if needle is not None and not has_request_id(line, comma, needle, request_id):
                    continue
                shape = shape_ids.get(key)
                if shape is None:
                    shape = shape_ids[key] = len(shape_keys)
                    shape_keys.append(key)
                vector = vector_ids.get(vector_key)
                if vector is None:
                    vector = vector_ids[vector_key] = len(vector_keys)
                    vector_keys.append(vector_key)
                add_ts(ts)
                add_shape(shape)
                add_vector(vector)
                add_number(number)
            if progress is not None:
                progress(done_before + done)
        done_before += size
        if reader.partial:
            index.partial.append(file)
    return index


def has_request_id(line: bytes, comma: int, needle: bytes, request_id: str) -> bool:
    """Tell whether a record's ``request_id`` field is ``request_id``, whose JSON encoding is ``needle``.

    Another field (a name, a Host) can hold the same string, so a byte match
    is only a pre-filter. The gateway writes ``request_id`` right after
    ``ts``, so in a line that starts with ``{"ts":``, a match at ``comma``
    (the first comma, which ends the number) is the field itself. Any other
    line with the bytes is parsed and its field compared.
    """
    if needle not in line:
        return False
    if line.startswith(TS_MARKER) and comma > 0 and line.startswith(b',"request_id":' + needle + b",", comma):
        return True
    try:
        fields = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(fields, dict) and fields.get("request_id") == request_id
