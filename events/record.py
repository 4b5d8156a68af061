"""The event envelope: one frozen record type and the one place that turns
events into bytes and back.

A record is one JSON object on one line. ``crc`` is the CRC-32 of the record's
other fields serialized with sorted keys, so a line that was torn or changed
on disk fails to decode instead of being trusted.

The writer serializes the whole record with sorted keys, so ``crc`` comes
first and the rest of the line, after a leading ``{``, is exactly the bytes
the CRC covers. A reader checks those bytes as they are, without serializing
the fields again. A line in another key order (an older writer) is checked
the slow way, by serializing its fields with sorted keys.
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


_CRC_PREFIX = b'{"crc":'
# CRC-32 of the "{" that opens the covered serialization; the rest follows the crc field.
_OPEN_BRACE_CRC = zlib.crc32(b"{")


def encode(event: Event) -> bytes:
    """Serialize ``event`` as one line ending in a newline, with its CRC first."""
    fields = event.as_dict()
    fields["crc"] = _crc(fields)
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS) + b"\n"


def decode(line: bytes | str) -> Event:
    """Parse one record line, checking its CRC, envelope and schema version."""
    return event_from_fields(decode_fields(line))


def decode_fields(line: bytes | str) -> dict[str, Any]:
    """Parse one record line and check its CRC; return its fields without ``crc``.

    Only the CRC is checked here; :func:`event_from_fields` checks the
    envelope, the schema version and the payload.
    """
    if isinstance(line, str):
        line = line.encode()
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.startswith(_CRC_PREFIX):
        comma = line.find(b",", 7)
        stored = line[7:comma]
        if comma > 7 and stored.isdigit() and zlib.crc32(line[comma + 1:], _OPEN_BRACE_CRC) == int(stored):
            try:
                fields = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise CorruptRecord(f"record is not valid JSON: {error}") from None
            del fields["crc"]
            return fields
    return _decode_fields_slowly(line)


def _decode_fields_slowly(line: bytes) -> dict[str, Any]:
    try:
        fields = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise CorruptRecord(f"record is not valid JSON: {error}") from None
    if not isinstance(fields, dict):
        raise CorruptRecord(f"record is a JSON {type(fields).__name__}, expected an object")

    crc = fields.pop("crc", None)
    if not isinstance(crc, int) or isinstance(crc, bool):
        raise CorruptRecord("record has no integer 'crc' field")
    if _crc(fields) != crc:
        raise CorruptRecord(f"record crc {crc} does not match its content (crc {_crc(fields)})")
    return fields


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


# Optional payload fields, with their JSON kinds when present.
_OPTIONAL_DATA: dict[str, dict[str, type]] = {
    CONTAINER_ADDED: {"ports": list, "createdAt": str, "ifname": str, "aliases": list},
    CONTAINER_REMOVED: {"reason": str, "createdAt": str},
}


def check_data(event_type: str, data: dict[str, Any]) -> None:
    """Raise InvalidData unless ``data`` has every field ``event_type`` requires, each of the right kind."""
    for name, kind in _REQUIRED_DATA.get(event_type, {}).items():
        value = data.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or value == "":
            raise InvalidData(
                f"{event_type} payload field {name!r} must be a non-empty {kind.__name__}, got {value!r}"
            )
    for name, kind in _OPTIONAL_DATA.get(event_type, {}).items():
        value = data.get(name)
        if value is not None and not isinstance(value, kind):
            raise InvalidData(f"{event_type} payload field {name!r} must be a {kind.__name__} when present, got {value!r}")
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
    aliases = data.get("aliases", []) if event_type == CONTAINER_ADDED else []
    for alias in aliases:
        if not isinstance(alias, str) or not CONTAINER_NAME.fullmatch(alias):
            raise InvalidData(
                f"{event_type} alias {str(alias)[:80]!r} is not a container name: letters, digits,"
                f" '_', '.' and '-', starting with a letter or digit, at most 253 characters"
            )


class BadLine(RecordError):
    """A line of a batch that is not the next valid record.

    ``index`` counts lines from 0; ``cause`` is the decoder's error, or None
    when the record is valid but out of place (another origin or seq).
    ``records`` are the lines before it, decoded.
    """

    def __init__(self, index: int, message: str, cause: RecordError | None = None):
        super().__init__(message)
        self.index = index
        self.cause = cause
        self.records: list[dict[str, Any]] = []


def decode_lines(lines: list[bytes], origin: int, first_seq: int) -> list[dict[str, Any]]:
    """Decode whole record lines (without their newlines) that must be ``origin``'s
    records from ``first_seq`` on, one seq after the other; return their fields
    (``crc`` included).

    For records this log wrote itself, read back in bulk at start-up. Each line's
    CRC, origin, seq, type and version are checked, and so are the kinds of the
    payload fields the view stores. The full rules (names, non-empty strings)
    were checked when the record was appended. The first line that fails raises
    BadLine, with the reason from the full decoder.
    """
    # One loop with the checks written out: this runs once per record at
    # start-up, and a function call per check would double its cost.
    crc32 = zlib.crc32
    loads = orjson.loads
    records = []
    append = records.append
    expected = first_seq
    for line in lines:
        valid = False
        try:
            comma = line.find(b",", 7)
            if line.startswith(_CRC_PREFIX) and crc32(line[comma + 1:], _OPEN_BRACE_CRC) == int(line[7:comma]):
                fields = loads(line)
                data = fields["data"]
                if fields["seq"] == expected and fields["origin"] == origin and type(fields["ts"]) is str and fields["v"] == 1:
                    event_type = fields["type"]
                    if event_type == CONTAINER_ADDED:
                        valid = (
                            type(data["id"]) is str and type(data["ip"]) is str and type(data["hostname"]) is str
                            and type(data["hostId"]) is int
                            and type(data.get("createdAt", "")) is str and type(data.get("ifname", "")) is str
                        )
                        # The lists are checked in place, because a call per list
                        # costs more than the check of a short list.
                        ports = data.get("ports")
                        if valid and ports is not None and ports != []:
                            if type(ports) is list:
                                for port in ports:
                                    if type(port) is not int or not 0 < port < 65536:
                                        valid = False
                                        break
                            else:
                                valid = False
                        aliases = data.get("aliases")
                        if valid and aliases is not None and aliases != []:
                            if type(aliases) is list:
                                for alias in aliases:
                                    if type(alias) is not str or not alias:
                                        valid = False
                                        break
                            else:
                                valid = False
                    elif event_type == CONTAINER_REMOVED:
                        valid = type(data["id"]) is str and type(data.get("createdAt", "")) is str
        except (ValueError, KeyError, TypeError, AttributeError):
            valid = False
        if not valid:
            try:
                fields = _explain_bad_line(expected - first_seq, line, origin, expected)
            except BadLine as error:
                error.records = records
                raise
        append(fields)
        expected += 1
    return records


def _explain_bad_line(index: int, line: bytes, origin: int, expected: int) -> dict[str, Any]:
    """Raise BadLine for ``line`` with the full decoder's reason, or return its fields if it is valid after all."""
    try:
        fields = decode_fields(line)
        event = event_from_fields(fields)
    except RecordError as error:
        raise BadLine(index, str(error), error) from None
    if event.origin != origin:
        raise BadLine(index, f"record of origin {event.origin} in the log of origin {origin}")
    if event.seq != expected:
        raise BadLine(index, f"expected seq {expected}, found seq {event.seq}")
    # Only a valid record in an older writer's key order gets here.
    return fields


def _expect_int(fields: dict[str, Any], name: str, low: int, high: int | None) -> None:
    value = fields[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        limit = f"{low}..{high}" if high is not None else f">= {low}"
        raise CorruptRecord(f"record field {name!r} must be an integer {limit}, got {value!r}")
