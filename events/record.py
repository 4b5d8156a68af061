"""The event envelope: one frozen record type and the one place that turns
events into bytes and back.

A record is one JSON object on one line. ``crc`` is the CRC-32 of the record's
other fields serialized with sorted keys, so a line that was torn or changed
on disk fails to decode instead of being trusted.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from typing import Any

import orjson

CONTAINER_ADDED = "container.added"
CONTAINER_REMOVED = "container.removed"

# Schema versions this reader understands, per event type. A record of another
# type or version is rejected loudly: guessing would corrupt the view.
KNOWN_VERSIONS: dict[str, frozenset[int]] = {
    CONTAINER_ADDED: frozenset({1}),
    CONTAINER_REMOVED: frozenset({1}),
}

# A container name as podman accepts it. The proxy reaches it as <name>.<domain>,
# so the same rule holds wherever a name enters the log: API, outbox, replica.
CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,252}")

_ENVELOPE_FIELDS = ("origin", "seq", "ts", "node", "epoch", "id", "type", "v", "data")


class RecordError(ValueError):
    """A record that cannot be trusted: corrupt bytes or an unknown schema."""


class CorruptRecord(RecordError):
    """Bytes that are not a whole, well-formed record with a matching CRC."""


class UnknownEventType(RecordError):
    """A well-formed record of a type or schema version this reader does not know."""


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """What a plugin or API call asks to record, before the log gives it a place.

    ``id`` is the event id: the same change arriving twice (from the outbox and
    directly) is appended once.
    """

    id: str
    type: str
    data: dict[str, Any]
    ts: str
    v: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One entry of an origin's log."""

    origin: int
    seq: int
    ts: str
    node: str
    epoch: int
    id: str
    type: str
    v: int
    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _ENVELOPE_FIELDS}


def _crc(fields: dict[str, Any]) -> int:
    return zlib.crc32(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS))


def encode(event: Event) -> bytes:
    """Serialize ``event`` as one line ending in a newline, with its CRC."""
    fields = event.as_dict()
    fields["crc"] = _crc(fields)
    return orjson.dumps(fields) + b"\n"


def decode(line: bytes | str) -> Event:
    """Parse one record line, checking its CRC, envelope and schema version."""
    try:
        fields = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise CorruptRecord(f"record is not valid JSON: {error}") from None
    if not isinstance(fields, dict):
        raise CorruptRecord(f"record is a JSON {type(fields).__name__}, expected an object")

    crc = fields.pop("crc", None)
    if not isinstance(crc, int):
        raise CorruptRecord("record has no integer 'crc' field")
    if _crc(fields) != crc:
        raise CorruptRecord(f"record crc {crc} does not match its content (crc {_crc(fields)})")
    return event_from_fields(fields)


def event_from_fields(fields: dict[str, Any]) -> Event:
    """Build an Event from decoded JSON fields, validating every envelope field."""
    missing = [name for name in _ENVELOPE_FIELDS if name not in fields]
    if missing:
        raise CorruptRecord(f"record is missing fields {missing}")

    _expect_int(fields, "origin", 1, 254)
    _expect_int(fields, "seq", 1, None)
    _expect_int(fields, "epoch", 0, None)
    _expect_int(fields, "v", 1, None)
    for name in ("ts", "node", "id", "type"):
        if not isinstance(fields[name], str) or not fields[name]:
            raise CorruptRecord(f"record field {name!r} must be a non-empty string, got {fields[name]!r}")
    if not isinstance(fields["data"], dict):
        raise CorruptRecord(f"record field 'data' must be an object, got {fields['data']!r}")

    check_schema(fields["type"], fields["v"])
    try:
        check_data(fields["type"], fields["data"])
    except InvalidData as error:
        raise CorruptRecord(str(error)) from None
    return Event(**{name: fields[name] for name in _ENVELOPE_FIELDS})


def check_schema(event_type: str, version: int) -> None:
    """Raise UnknownEventType unless this reader knows ``event_type`` at ``version``."""
    versions = KNOWN_VERSIONS.get(event_type)
    if versions is None:
        raise UnknownEventType(
            f"unknown event type {event_type!r}; this reader knows {sorted(KNOWN_VERSIONS)}"
        )
    if version not in versions:
        raise UnknownEventType(
            f"event type {event_type!r} version {version} is not supported; "
            f"this reader knows versions {sorted(versions)}"
        )


class InvalidData(RecordError):
    """An event payload that lacks a field its type requires, or has one of the wrong kind."""


# Payload fields each type requires, with their JSON kinds. The view folds
# these fields; an event without them would stop every gateway that reads it.
_REQUIRED_DATA: dict[str, dict[str, type | tuple[type, ...]]] = {
    CONTAINER_ADDED: {"id": str, "ip": str, "hostname": str, "hostId": int},
    CONTAINER_REMOVED: {"id": str},
}


def check_data(event_type: str, data: dict[str, Any]) -> None:
    """Raise InvalidData unless ``data`` has every field ``event_type`` requires."""
    for name, kind in _REQUIRED_DATA.get(event_type, {}).items():
        value = data.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or value == "":
            raise InvalidData(
                f"{event_type} payload field {name!r} must be a non-empty {kind.__name__}, got {value!r}"
            )
    if event_type == CONTAINER_ADDED and not CONTAINER_NAME.fullmatch(data["hostname"]):
        raise InvalidData(
            f"{event_type} hostname {data['hostname'][:80]!r} is not a container name: letters, digits,"
            f" '_', '.' and '-', starting with a letter or digit, at most 253 characters"
        )
    ports = data.get("ports", []) if event_type == CONTAINER_ADDED else []
    if not isinstance(ports, list) or not all(
        isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 for port in ports
    ):
        raise InvalidData(f"{event_type} payload field 'ports' must be a list of ports 1-65535, got {ports!r}")


def _expect_int(fields: dict[str, Any], name: str, low: int, high: int | None) -> None:
    value = fields[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        limit = f"{low}..{high}" if high is not None else f">= {low}"
        raise CorruptRecord(f"record field {name!r} must be an integer {limit}, got {value!r}")
