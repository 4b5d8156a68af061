"""The outbox: changes a plugin recorded while the gateway could not be reached.

One file per change, written under a temporary name, fsynced, then renamed, so
concurrent plugins never collide and a reader never sees half a file. File
names start with the time in nanoseconds, so sorting them gives the oldest first.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from flatnet.events.record import Change, check_data, check_schema


class OutboxError(Exception):
    """An outbox file that cannot be read as a change; the message names the file."""


def outbox_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "outbox"


def write_change(data_dir: Path | str, change: Change) -> Path:
    """Store ``change`` durably in the outbox and return its path."""
    directory = outbox_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{change.id}.json"
    temporary = directory / f".{name}.tmp"
    body = orjson.dumps({"id": change.id, "type": change.type, "v": change.v, "ts": change.ts, "data": change.data})

    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    final = directory / name
    os.rename(temporary, final)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def pending(data_dir: Path | str) -> list[Path]:
    """The outbox files waiting to be drained, oldest first."""
    directory = outbox_dir(data_dir)
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if path.suffix == ".json" and not path.name.startswith("."))


def read_change(path: Path) -> Change:
    """Parse one outbox file, validating every field."""
    try:
        fields = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as error:
        raise OutboxError(f"outbox file {path} is not valid JSON: {error}") from None
    if not isinstance(fields, dict):
        raise OutboxError(f"outbox file {path} holds a JSON {type(fields).__name__}, expected an object")

    for name, kind, description in (
        ("id", str, "a non-empty string"),
        ("type", str, "a non-empty string"),
        ("v", int, "an integer"),
        ("ts", str, "a non-empty string"),
        ("data", dict, "an object"),
    ):
        value = fields.get(name)
        # The log's reader rejects true as an integer and "" as a string, so a
        # change accepted with either would make the log unreadable once appended.
        if not isinstance(value, kind) or isinstance(value, bool) or value == "":
            raise OutboxError(f"outbox file {path}: field {name!r} must be {description}, got {value!r}")
    try:
        check_schema(fields["type"], fields["v"])
        check_data(fields["type"], fields["data"])
    except ValueError as error:
        raise OutboxError(f"outbox file {path}: {error}") from None
    return Change(id=fields["id"], type=fields["type"], data=fields["data"], ts=fields["ts"], v=fields["v"])
