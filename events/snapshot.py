"""Snapshots: the whole view at one version vector, with a digest.

A snapshot file ``<data_dir>/snapshots/<number, 20 digits>.json`` contains one
JSON object::

    {"format": "flatnet-snapshot", "v": 1, "origin": 1, "node": "<uuid>",
     "createdAt": "2026-12-04T10:00:00.000Z", "vector": {"1": 41, "2": 17},
     "digest": "sha256:<hex>", "view": {...}}

``view`` is the registry view's state, which this module treats as opaque
JSON. ``digest`` is the SHA-256 of ``{"vector": ..., "view": ...}`` serialized
with sorted keys, so two gateways whose views are equal compute the same
digest, and a file changed on disk fails to load. Numbers only grow: the
highest number is the newest snapshot. A file is written under a temporary
name, fsynced and renamed, so a crash never leaves half a snapshot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import orjson

from flatnet.events.log import fsync_directory

FORMAT = "flatnet-snapshot"
VERSION = 1
SUFFIX = ".json"


class SnapshotError(Exception):
    """A snapshot that cannot be used; the message names the file and the broken rule."""


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One snapshot: the view's state at ``vector``, as written by gateway ``node`` of host ``origin``."""

    vector: dict[int, int]
    view: dict[str, Any]
    digest: str
    origin: int
    node: str
    created_at: str
    path: Path | None = None

    @property
    def number(self) -> int:
        return _number(self.path) if self.path is not None else 0


def snapshot_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "snapshots"


def compute_digest(vector: dict[int, int], view: dict[str, Any]) -> str:
    """Compute the digest of a view state at ``vector``; equal views give equal digests."""
    canonical = orjson.dumps(
        {"vector": {str(origin): seq for origin, seq in vector.items()}, "view": view},
        option=orjson.OPT_SORT_KEYS,
    )
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def to_bytes(snapshot: Snapshot) -> bytes:
    """Serialize ``snapshot`` as the file (and the API) carries it."""
    return orjson.dumps({
        "format": FORMAT,
        "v": VERSION,
        "origin": snapshot.origin,
        "node": snapshot.node,
        "createdAt": snapshot.created_at,
        "vector": {str(origin): seq for origin, seq in sorted(snapshot.vector.items())},
        "digest": snapshot.digest,
        "view": snapshot.view,
    })


def from_bytes(body: bytes, source: str) -> Snapshot:
    """Parse and check a snapshot; ``source`` names where it came from in errors."""
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise SnapshotError(f"snapshot {source} is not valid JSON: {error}") from None
    if not isinstance(fields, dict):
        raise SnapshotError(f"snapshot {source} is a JSON {type(fields).__name__}, expected an object")
    if fields.get("format") != FORMAT:
        raise SnapshotError(f"snapshot {source} has format {fields.get('format')!r}, expected {FORMAT!r}")
    if fields.get("v") != VERSION:
        raise SnapshotError(
            f"snapshot {source} has version {fields.get('v')!r}; this reader knows version {VERSION} only"
        )
    for name, kind in (("origin", int), ("node", str), ("createdAt", str), ("digest", str), ("view", dict), ("vector", dict)):
        value = fields.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SnapshotError(f"snapshot {source} field {name!r} must be a {kind.__name__}, got {value!r:.80}")

    vector = {}
    for key, seq in fields["vector"].items():
        if not key.isdigit() or not 1 <= int(key) <= 254 or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise SnapshotError(
                f"snapshot {source} vector entry {key!r}: {seq!r} must map an origin 1-254 to a seq >= 0"
            )
        vector[int(key)] = seq
    digest = compute_digest(vector, fields["view"])
    if digest != fields["digest"]:
        raise SnapshotError(
            f"snapshot {source} does not match its digest: stored {fields['digest']}, content gives {digest}"
        )
    return Snapshot(
        vector=vector,
        view=fields["view"],
        digest=digest,
        origin=fields["origin"],
        node=fields["node"],
        created_at=fields["createdAt"],
    )


def list_snapshots(directory: Path) -> list[Path]:
    """List the snapshot files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(
        path for path in directory.iterdir()
        if path.suffix == SUFFIX and path.stem.isdigit() and not path.name.startswith(".")
    )


def write_snapshot(directory: Path, snapshot: Snapshot) -> Snapshot:
    """Store ``snapshot`` durably as the newest file in ``directory`` and return it with its path."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = list_snapshots(directory)
    number = _number(existing[-1]) + 1 if existing else 1
    path = directory / f"{number:020d}{SUFFIX}"
    temporary = directory / f".{path.name}.tmp"

    body = to_bytes(snapshot)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(body)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, path)
    fsync_directory(directory)
    return dataclasses.replace(snapshot, path=path)


def load_snapshot(path: Path) -> Snapshot:
    """Read and check the snapshot at ``path``."""
    try:
        body = path.read_bytes()
    except OSError as error:
        raise SnapshotError(f"snapshot {path} cannot be read: {error.strerror}") from None
    return dataclasses.replace(from_bytes(body, str(path)), path=path)


def load_newest(directory: Path) -> tuple[Snapshot | None, list[SnapshotError]]:
    """Load the newest snapshot that checks out; return it and the errors of newer ones skipped."""
    skipped = []
    for path in reversed(list_snapshots(directory)):
        try:
            return load_snapshot(path), skipped
        except SnapshotError as error:
            skipped.append(error)
    return None, skipped


def prune_snapshots(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` snapshot files; return the deleted ones."""
    old = list_snapshots(directory)[:-keep] if keep > 0 else list_snapshots(directory)
    for path in old:
        path.unlink()
    if old:
        fsync_directory(directory)
    return old


def _number(path: Path) -> int:
    return int(path.stem)
