import zlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flatnet.events import record
from flatnet.events.record import CorruptRecord, Event, RecordError, UnknownEventType


def make_event(**overrides) -> Event:
    fields = {
        "origin": 2,
        "seq": 17,
        "ts": "2026-12-04T10:00:00.123Z",
        "node": "5f0c6a52-3a0e-4c59-9d0b-1f2d6f0d9a11",
        "epoch": 3,
        "id": "0b8e7c1e-7d0a-4f55-bd55-0c8d1f4f2e90",
        "type": record.CONTAINER_ADDED,
        "v": 1,
        "data": {
            "id": "c0ffee",
            "ip": "10.100.2.10",
            "hostname": "web-b1",
            "ports": [80, 8080],
            "hostId": 2,
            "createdAt": "2026-12-04T10:00:00.100Z",
            "ifname": "eth0",
        },
    }
    fields.update(overrides)
    return Event(**fields)


def line_with_valid_crc(fields: dict) -> bytes:
    """Serialize ``fields`` with a correct crc, as the envelope documents it."""
    crc = zlib.crc32(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS))
    return orjson.dumps(dict(fields, crc=crc)) + b"\n"


# Round trip


def test_decode_returns_encoded_event():
    event = make_event()

    assert record.decode(record.encode(event)) == event


def test_encode_writes_one_line():
    line = record.encode(make_event())

    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1


def test_encode_stores_crc_of_sorted_fields():
    event = make_event()

    stored = orjson.loads(record.encode(event))

    expected = zlib.crc32(orjson.dumps(event.as_dict(), option=orjson.OPT_SORT_KEYS))
    assert stored["crc"] == expected


def test_decode_accepts_text_line():
    event = make_event()

    assert record.decode(record.encode(event).decode()) == event


def test_removed_event_round_trips():
    event = make_event(type=record.CONTAINER_REMOVED, data={"id": "c0ffee", "reason": "deleted"})

    assert record.decode(record.encode(event)) == event


def test_non_ascii_hostname_is_rejected():
    event = make_event(data={"id": "c1", "ip": "10.100.2.11", "hostname": "café-ü", "hostId": 2})

    with pytest.raises(record.CorruptRecord, match="is not a container name"):
        record.decode(record.encode(event))


def test_dotted_hostname_round_trips():
    event = make_event(data={"id": "c1", "ip": "10.100.2.11", "hostname": "web.dot_under-1", "hostId": 2})

    assert record.decode(record.encode(event)) == event


# CRC


def test_flipped_seq_digit_fails_crc():
    line = record.encode(make_event(seq=17))
    tampered = line.replace(b'"seq":17', b'"seq":18')
    assert tampered != line

    with pytest.raises(CorruptRecord, match="crc"):
        record.decode(tampered)


def test_changed_data_fails_crc():
    line = record.encode(make_event())
    tampered = line.replace(b"10.100.2.10", b"10.100.2.99")

    with pytest.raises(CorruptRecord, match="crc"):
        record.decode(tampered)


@given(position=st.integers(min_value=0), replacement=st.integers(min_value=0, max_value=255))
def test_any_changed_byte_is_corrupt(position, replacement):
    # The trailing newline is excluded: a space there is still the same JSON.
    line = bytearray(record.encode(make_event()))
    position %= len(line) - 1
    if line[position] == replacement:
        replacement = (replacement + 1) % 256
    line[position] = replacement

    with pytest.raises(CorruptRecord):
        record.decode(bytes(line))


def test_missing_crc_is_corrupt():
    fields = make_event().as_dict()

    with pytest.raises(CorruptRecord, match="crc"):
        record.decode(orjson.dumps(fields))


def test_non_integer_crc_is_corrupt():
    fields = dict(make_event().as_dict(), crc="12345")

    with pytest.raises(CorruptRecord, match="crc"):
        record.decode(orjson.dumps(fields))


def test_invalid_json_is_corrupt():
    with pytest.raises(CorruptRecord, match="not valid JSON"):
        record.decode(b'{"origin": 2, "seq"\n')


def test_json_array_is_corrupt():
    with pytest.raises(CorruptRecord, match="expected an object"):
        record.decode(b"[1, 2, 3]\n")


def test_empty_line_is_corrupt():
    with pytest.raises(CorruptRecord):
        record.decode(b"\n")


# Schema


def test_unknown_type_names_the_type():
    fields = make_event(type="container.moved").as_dict()

    with pytest.raises(UnknownEventType, match="'container.moved'"):
        record.decode(line_with_valid_crc(fields))


def test_unknown_version_names_type_and_version():
    fields = make_event(v=2).as_dict()

    with pytest.raises(UnknownEventType) as raised:
        record.decode(line_with_valid_crc(fields))

    message = str(raised.value)
    assert "'container.added'" in message
    assert "version 2" in message


def test_unknown_type_is_not_corrupt():
    # The log cuts a corrupt tail but must never cut a record from a newer writer.
    fields = make_event(type="container.moved").as_dict()

    with pytest.raises(RecordError) as raised:
        record.decode(line_with_valid_crc(fields))

    assert not isinstance(raised.value, CorruptRecord)


def test_check_schema_accepts_known_types():
    record.check_schema(record.CONTAINER_ADDED, 1)
    record.check_schema(record.CONTAINER_REMOVED, 1)


def test_check_schema_rejects_unknown_version():
    with pytest.raises(UnknownEventType, match="version 7"):
        record.check_schema(record.CONTAINER_REMOVED, 7)


# Envelope fields


@pytest.mark.parametrize("name", ["origin", "seq", "ts", "node", "epoch", "id", "type", "v", "data"])
def test_missing_envelope_field_is_named(name):
    fields = make_event().as_dict()
    del fields[name]

    with pytest.raises(CorruptRecord, match=f"missing fields \\['{name}'\\]"):
        record.decode(line_with_valid_crc(fields))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("origin", 0),
        ("origin", 255),
        ("origin", "2"),
        ("origin", True),
        ("seq", 0),
        ("seq", -1),
        ("seq", 1.5),
        ("epoch", -1),
        ("v", 0),
        ("v", None),
        ("ts", ""),
        ("node", 5),
        ("id", ""),
        ("type", None),
        ("data", []),
        ("data", "{}"),
    ],
)
def test_invalid_envelope_field_is_named(name, value):
    fields = dict(make_event().as_dict(), **{name: value})

    with pytest.raises(CorruptRecord, match=f"'{name}'"):
        record.decode(line_with_valid_crc(fields))


def test_epoch_zero_is_valid():
    event = make_event(epoch=0)

    assert record.decode(record.encode(event)).epoch == 0


def test_highest_origin_is_valid():
    event = make_event(origin=254)

    assert record.decode(record.encode(event)).origin == 254
