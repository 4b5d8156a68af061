import tempfile
import zlib
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flatnet.events import record
from flatnet.events.log import EventLog, LogError, OriginLog
from flatnet.events.record import Event

ORIGIN = 3


def make_event(seq: int, origin: int = ORIGIN) -> Event:
    return Event(
        origin=origin,
        seq=seq,
        ts=f"2026-12-04T10:00:{seq % 60:02d}.000Z",
        node="node-a",
        epoch=1,
        id=f"event-{origin}-{seq}",
        type=record.CONTAINER_ADDED,
        v=1,
        data={"id": f"c{seq}", "ip": f"10.100.{origin}.{10 + seq % 200}", "hostname": f"web{seq}", "hostId": origin},
    )


def write_log(directory: Path, count: int, **options) -> list[Event]:
    log = OriginLog(directory, ORIGIN, **options)
    events = [make_event(seq) for seq in range(1, count + 1)]
    for event in events:
        log.append(event)
    log.close()
    return events


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl"))


def line_with_valid_crc(fields: dict) -> bytes:
    crc = zlib.crc32(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS))
    return orjson.dumps(dict(fields, crc=crc)) + b"\n"


# Append and read


def test_read_returns_appended_events(tmp_path):
    log = OriginLog(tmp_path, ORIGIN)
    events = [make_event(seq) for seq in (1, 2, 3)]
    for event in events:
        log.append(event)

    assert list(log.read()) == events
    assert log.head == 3


def test_read_after_seq_skips_earlier(tmp_path):
    events = write_log(tmp_path, 5)

    log = OriginLog(tmp_path, ORIGIN)

    assert list(log.read(after=3)) == events[3:]
    assert list(log.read(after=5)) == []


def test_first_segment_is_named_by_first_seq(tmp_path):
    write_log(tmp_path, 2)

    assert [path.name for path in segments(tmp_path)] == ["00000000000000000001.jsonl"]


def test_append_out_of_order_names_seq_and_head(tmp_path):
    log = OriginLog(tmp_path, ORIGIN)
    log.append(make_event(1))

    with pytest.raises(LogError) as raised:
        log.append(make_event(3))

    assert "seq 3" in str(raised.value)
    assert "head 1" in str(raised.value)
    assert log.head == 1


def test_append_of_other_origin_is_rejected(tmp_path):
    log = OriginLog(tmp_path, ORIGIN)

    with pytest.raises(LogError, match="origin 4"):
        log.append(make_event(1, origin=4))

    assert log.head == 0


def test_empty_log_has_head_zero(tmp_path):
    log = OriginLog(tmp_path / "new", ORIGIN)

    assert log.head == 0
    assert list(log.read()) == []
    assert log.repair is None


# Reopen and tail recovery


def test_reopen_keeps_head(tmp_path):
    events = write_log(tmp_path, 4)

    log = OriginLog(tmp_path, ORIGIN)

    assert log.head == 4
    assert log.repair is None
    assert list(log.read()) == events


def test_reopen_then_append_continues(tmp_path):
    write_log(tmp_path, 2)

    log = OriginLog(tmp_path, ORIGIN)
    log.append(make_event(3))
    log.close()

    assert [event.seq for event in OriginLog(tmp_path, ORIGIN).read()] == [1, 2, 3]


def test_torn_last_line_is_cut_and_reported(tmp_path):
    write_log(tmp_path, 3)
    segment = segments(tmp_path)[-1]
    clean = segment.read_bytes()
    torn_line = record.encode(make_event(4))[:25]
    segment.write_bytes(clean + torn_line)

    log = OriginLog(tmp_path, ORIGIN)

    assert log.head == 3
    assert log.repair is not None
    assert log.repair.path == segment
    assert log.repair.offset == len(clean)
    assert log.repair.dropped_bytes == 25
    assert "torn" in log.repair.reason
    assert segment.read_bytes() == clean


def test_append_after_torn_tail_starts_clean_line(tmp_path):
    write_log(tmp_path, 3)
    segment = segments(tmp_path)[-1]
    segment.write_bytes(segment.read_bytes() + b'{"origin":3,"se')

    log = OriginLog(tmp_path, ORIGIN)
    log.append(make_event(4))
    log.close()

    reopened = OriginLog(tmp_path, ORIGIN)
    assert reopened.repair is None
    assert [event.seq for event in reopened.read()] == [1, 2, 3, 4]
    assert segment.read_bytes().endswith(record.encode(make_event(4)))


def test_torn_tail_is_reported_once(tmp_path):
    write_log(tmp_path, 2)
    segment = segments(tmp_path)[-1]
    segment.write_bytes(segment.read_bytes() + b"{")

    first = OriginLog(tmp_path, ORIGIN)
    first.close()
    second = OriginLog(tmp_path, ORIGIN)

    assert first.repair is not None
    assert second.repair is None


def test_corrupt_last_record_is_cut(tmp_path):
    write_log(tmp_path, 3)
    segment = segments(tmp_path)[-1]
    data = segment.read_bytes()
    last_start = data.rindex(b"\n", 0, len(data) - 1) + 1
    segment.write_bytes(data.replace(b'"seq":3', b'"seq":9'))

    log = OriginLog(tmp_path, ORIGIN)

    assert log.head == 2
    assert log.repair is not None
    assert log.repair.offset == last_start
    assert log.repair.dropped_bytes == len(data) - last_start
    assert "corrupt" in log.repair.reason
    assert segment.read_bytes() == data[:last_start]


def test_corrupt_middle_record_names_file_and_offset(tmp_path):
    write_log(tmp_path, 3)
    segment = segments(tmp_path)[-1]
    data = segment.read_bytes()
    second_start = data.index(b"\n") + 1
    segment.write_bytes(data.replace(b'"seq":2', b'"seq":7'))

    with pytest.raises(LogError) as raised:
        OriginLog(tmp_path, ORIGIN)

    assert str(segment) in str(raised.value)
    assert f"offset {second_start}" in str(raised.value)
    assert segment.read_bytes() == data.replace(b'"seq":2', b'"seq":7')


def test_seq_gap_names_the_seq(tmp_path):
    write_log(tmp_path, 2)
    segment = segments(tmp_path)[-1]
    with open(segment, "ab") as file:
        file.write(record.encode(make_event(4)))

    with pytest.raises(LogError) as raised:
        OriginLog(tmp_path, ORIGIN)

    assert "expected seq 3" in str(raised.value)
    assert "found seq 4" in str(raised.value)
    assert str(segment) in str(raised.value)


def test_record_of_other_origin_in_segment_is_error(tmp_path):
    write_log(tmp_path, 1)
    segment = segments(tmp_path)[-1]
    with open(segment, "ab") as file:
        file.write(record.encode(make_event(2, origin=5)))

    with pytest.raises(LogError, match="origin 5"):
        OriginLog(tmp_path, ORIGIN)


def test_unknown_type_at_tail_is_error(tmp_path):
    # A record from a newer writer is trusted data, so it must stop the open
    # with its place named instead of being cut as corrupt.
    write_log(tmp_path, 1)
    segment = segments(tmp_path)[-1]
    offset = segment.stat().st_size
    fields = dict(make_event(2).as_dict(), type="container.moved")
    with open(segment, "ab") as file:
        file.write(line_with_valid_crc(fields))

    with pytest.raises(LogError) as raised:
        OriginLog(tmp_path, ORIGIN)

    assert str(segment) in str(raised.value)
    assert f"offset {offset}" in str(raised.value)
    assert "'container.moved'" in str(raised.value)
    assert segment.stat().st_size > offset


# Segments


def test_segments_roll_at_segment_bytes(tmp_path):
    line_bytes = len(record.encode(make_event(1)))
    events = write_log(tmp_path, 7, segment_bytes=2 * line_bytes)

    names = [path.name for path in segments(tmp_path)]

    assert len(names) >= 3
    assert names[0] == "00000000000000000001.jsonl"
    for path in segments(tmp_path)[:-1]:
        assert path.stat().st_size >= 2 * line_bytes
        assert path.stat().st_size < 2 * line_bytes + 2 * line_bytes
    assert list(OriginLog(tmp_path, ORIGIN).read()) == events


def test_segment_name_is_its_first_seq(tmp_path):
    write_log(tmp_path, 9, segment_bytes=300)

    for path in segments(tmp_path):
        first = record.decode(path.read_bytes().split(b"\n")[0] + b"\n")
        assert int(path.stem) == first.seq


def test_read_across_segments_from_middle(tmp_path):
    events = write_log(tmp_path, 9, segment_bytes=300)
    assert len(segments(tmp_path)) > 2

    log = OriginLog(tmp_path, ORIGIN)

    for after in range(10):
        assert list(log.read(after=after)) == events[after:]


def test_reopen_with_rolled_segments_keeps_head(tmp_path):
    write_log(tmp_path, 9, segment_bytes=300)

    log = OriginLog(tmp_path, ORIGIN, segment_bytes=300)
    log.append(make_event(10))

    assert log.head == 10
    assert [event.seq for event in log.read()] == list(range(1, 11))


def test_gap_between_segments_names_the_seq(tmp_path):
    write_log(tmp_path, 9, segment_bytes=300)
    middle = segments(tmp_path)[1]
    middle.unlink()

    log = OriginLog(tmp_path, ORIGIN)

    with pytest.raises(LogError, match=f"expected seq {int(middle.stem)}"):
        list(log.read())


def test_torn_earlier_segment_is_error(tmp_path):
    # Only the last segment can be mid-write. A torn earlier segment has lost
    # events, so reading raises instead of ending the history early.
    write_log(tmp_path, 9, segment_bytes=300)
    first = segments(tmp_path)[0]
    first.write_bytes(first.read_bytes()[:-5])

    log = OriginLog(tmp_path, ORIGIN)

    with pytest.raises(LogError) as raised:
        list(log.read())

    assert str(first) in str(raised.value)


def test_corrupt_earlier_segment_names_file_and_offset(tmp_path):
    write_log(tmp_path, 9, segment_bytes=300)
    first = segments(tmp_path)[0]
    data = first.read_bytes()
    first.write_bytes(data.replace(b'"seq":1,', b'"seq":5,'))

    log = OriginLog(tmp_path, ORIGIN)

    with pytest.raises(LogError) as raised:
        list(log.read())

    assert str(first) in str(raised.value)
    assert "offset 0" in str(raised.value)


def test_bad_segment_name_is_error(tmp_path):
    write_log(tmp_path, 1)
    (tmp_path / "latest.jsonl").write_bytes(b"")

    with pytest.raises(LogError, match="latest.jsonl"):
        OriginLog(tmp_path, ORIGIN)


# EventLog


def test_event_log_vector_lists_heads(tmp_path):
    log = EventLog(tmp_path)
    log.origin(1).append(make_event(1, origin=1))
    log.origin(2).append(make_event(1, origin=2))
    log.origin(2).append(make_event(2, origin=2))
    log.close()

    reopened = EventLog(tmp_path)

    assert reopened.origins() == [1, 2]
    assert reopened.vector() == {1: 1, 2: 2}
    assert (tmp_path / "log" / "2" / "00000000000000000001.jsonl").is_file()


# Crash at any byte


@settings(max_examples=150, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=25),
    segment_bytes=st.integers(min_value=150, max_value=1500),
    cut=st.floats(min_value=0.0, max_value=1.0),
)
def test_truncated_last_segment_reopens_to_prefix(count, segment_bytes, cut):
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        events = write_log(directory, count, segment_bytes=segment_bytes)
        last = segments(directory)[-1]
        data = last.read_bytes()
        offset = round(cut * len(data))
        last.write_bytes(data[:offset])
        complete_in_last = data[:offset].count(b"\n")
        kept_count = int(last.stem) - 1 + complete_in_last

        log = OriginLog(directory, ORIGIN, segment_bytes=segment_bytes)

        assert list(log.read()) == events[:kept_count]
        assert log.head == kept_count
        clean_end = data.rfind(b"\n", 0, offset) + 1
        if clean_end == offset:
            assert log.repair is None
        else:
            assert log.repair is not None
            assert log.repair.offset == clean_end
            assert log.repair.dropped_bytes == offset - clean_end

        log.append(make_event(kept_count + 1))
        log.close()
        reopened = OriginLog(directory, ORIGIN, segment_bytes=segment_bytes)
        assert list(reopened.read()) == events[:kept_count] + [make_event(kept_count + 1)]
        assert reopened.repair is None
