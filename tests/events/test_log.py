import os
import tempfile
import time
import zlib
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flatnet.events import record
from flatnet.events.log import EventLog, LogCompacted, LogError, OriginLog
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


def test_missing_middle_segment_names_file_offset_and_seq(tmp_path):
    write_log(tmp_path, 9, segment_bytes=300)
    first, middle, following = segments(tmp_path)[:3]
    last_offset = first.read_bytes().rindex(b"\n", 0, first.stat().st_size - 1) + 1
    middle.unlink()

    with pytest.raises(LogError) as raised:
        OriginLog(tmp_path, ORIGIN)

    assert str(raised.value) == (
        f"seq gap after {first} at byte offset {last_offset}: its last record is seq {int(middle.stem) - 1}, "
        f"so expected seq {int(middle.stem)} next, but {following.name} starts at seq {int(following.stem)}; "
        f"a segment is missing"
    )


def test_missing_first_segment_is_error(tmp_path):
    write_log(tmp_path, 9, segment_bytes=300)
    first, second = segments(tmp_path)[:2]
    first.unlink()

    with pytest.raises(LogError) as raised:
        OriginLog(tmp_path, ORIGIN)

    assert str(raised.value) == (
        f"seq gap before {second}: expected seq 1, found seq {int(second.stem)}; "
        f"a segment is missing (nothing was deleted by retention)"
    )


def test_torn_earlier_segment_is_error(tmp_path):
    # Only the last segment can be mid-write. A torn earlier segment has lost
    # events, so opening raises instead of ending the history early.
    write_log(tmp_path, 9, segment_bytes=300)
    first = segments(tmp_path)[0]
    data = first.read_bytes()
    first.write_bytes(data[:-5])
    torn_at = data.rindex(b"\n", 0, len(data) - 1) + 1

    with pytest.raises(LogError) as raised:
        OriginLog(tmp_path, ORIGIN)

    assert str(raised.value) == (
        f"torn record in {first} at byte offset {torn_at}: only the last segment may end mid-record"
    )


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


# Batches


def test_append_batch_stores_every_event_in_order(tmp_path):
    log = OriginLog(tmp_path, ORIGIN, segment_bytes=600)
    events = [make_event(seq) for seq in range(1, 12)]

    log.append_batch(events[:5])
    log.append_batch(events[5:])
    log.close()

    reopened = OriginLog(tmp_path, ORIGIN, segment_bytes=600)
    assert list(reopened.read()) == events
    assert len(segments(tmp_path)) > 2


def test_append_batch_with_gap_writes_nothing(tmp_path):
    log = OriginLog(tmp_path, ORIGIN)
    log.append(make_event(1))

    with pytest.raises(LogError, match="event seq 4 does not follow head 2"):
        log.append_batch([make_event(2), make_event(4)])

    assert log.head == 1
    assert [event.seq for event in OriginLog(tmp_path, ORIGIN).read()] == [1]


def test_read_batches_checks_records_like_read(tmp_path):
    events = write_log(tmp_path, 9, segment_bytes=300)

    batches = list(OriginLog(tmp_path, ORIGIN).read_batches(after=2))

    assert [record.event_from_fields(fields) for batch in batches for fields in batch] == events[2:]


def test_record_of_older_key_order_is_read(tmp_path):
    # Records written before the writer sorted its keys carry the same CRC
    # over the same fields; they are checked the slow way and accepted.
    write_log(tmp_path, 1)
    segment = segments(tmp_path)[-1]
    fields = make_event(2).as_dict()
    with open(segment, "ab") as file:
        file.write(line_with_valid_crc(fields))

    log = OriginLog(tmp_path, ORIGIN)

    assert log.head == 2
    assert list(log.read(after=1)) == [make_event(2)]


# Retention


def age_segments(directory: Path, seconds: float) -> None:
    for path in segments(directory):
        stat = path.stat()
        os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def test_compact_deletes_covered_old_segments(tmp_path):
    write_log(tmp_path, 9, segment_bytes=300)
    before = segments(tmp_path)
    age_segments(tmp_path, 100)
    log = OriginLog(tmp_path, ORIGIN, segment_bytes=300)

    deleted = log.compact(covered_seq=6, older_than=time.time() - 50)

    wholly_covered = [path for path, following in zip(before, before[1:]) if int(following.stem) - 1 <= 6]
    assert wholly_covered
    assert deleted == wholly_covered
    assert segments(tmp_path) == before[len(deleted):]
    assert log.first_seq == int(before[len(deleted)].stem)
    assert (tmp_path / "compacted").read_text() == f"{log.first_seq - 1}\n"


def test_compact_keeps_recent_and_uncovered_segments(tmp_path):
    write_log(tmp_path, 9, segment_bytes=300)
    before = segments(tmp_path)
    log = OriginLog(tmp_path, ORIGIN, segment_bytes=300)

    assert log.compact(covered_seq=9, older_than=time.time() - 3600) == []
    age_segments(tmp_path, 7200)
    assert log.compact(covered_seq=0, older_than=time.time() - 3600) == []
    assert segments(tmp_path) == before


def test_compact_never_deletes_the_last_segment(tmp_path):
    write_log(tmp_path, 9, segment_bytes=300)
    age_segments(tmp_path, 7200)
    log = OriginLog(tmp_path, ORIGIN, segment_bytes=300)

    log.compact(covered_seq=9, older_than=time.time())

    assert len(segments(tmp_path)) == 1
    assert log.head == 9


def test_compacted_log_reopens_and_appends(tmp_path):
    events = write_log(tmp_path, 9, segment_bytes=300)
    age_segments(tmp_path, 7200)
    log = OriginLog(tmp_path, ORIGIN, segment_bytes=300)
    log.compact(covered_seq=9, older_than=time.time())
    first = log.first_seq
    log.close()

    reopened = OriginLog(tmp_path, ORIGIN, segment_bytes=300)
    reopened.append(make_event(10))

    assert reopened.compacted_through == first - 1
    assert list(reopened.read(after=first - 1)) == events[first - 1:] + [make_event(10)]


def test_read_before_compacted_seq_names_what_is_gone(tmp_path):
    write_log(tmp_path, 9, segment_bytes=300)
    age_segments(tmp_path, 7200)
    log = OriginLog(tmp_path, ORIGIN, segment_bytes=300)
    log.compact(covered_seq=9, older_than=time.time())
    first = log.first_seq

    with pytest.raises(LogCompacted) as raised:
        list(log.read(after=1))

    assert str(raised.value) == (
        f"events of origin {ORIGIN} after seq 1 are gone: retention deleted seq 2 to {first - 1}; "
        f"start from a snapshot at or past seq {first - 1}"
    )


def test_compacted_marker_with_garbage_is_error(tmp_path):
    write_log(tmp_path, 2)
    (tmp_path / "compacted").write_text("soon\n")

    with pytest.raises(LogError, match="expected the last seq deleted by retention, a whole number"):
        OriginLog(tmp_path, ORIGIN)


def test_bytes_after_counts_segments_still_to_read(tmp_path):
    write_log(tmp_path, 9, segment_bytes=300)
    log = OriginLog(tmp_path, ORIGIN, segment_bytes=300)
    sizes = [path.stat().st_size for path in segments(tmp_path)]

    assert log.bytes_after(0) == sum(sizes)
    assert log.bytes_after(9) == 0
    assert log.bytes_after(8) == sizes[-1]
    assert 0 < log.bytes_after(1) < sum(sizes)


# Opening after a snapshot: only the records it does not cover are checked


def test_verified_open_finds_head(tmp_path):
    events = write_log(tmp_path, 20)

    log = OriginLog(tmp_path, ORIGIN, verified_through=15)

    assert log.head == 20
    assert log.repair is None
    assert list(log.read(after=15)) == events[15:]


def test_verified_open_cuts_torn_tail(tmp_path):
    write_log(tmp_path, 20)
    segment = segments(tmp_path)[-1]
    clean_size = segment.stat().st_size
    with open(segment, "ab") as file:
        file.write(record.encode(make_event(21))[:30])

    log = OriginLog(tmp_path, ORIGIN, verified_through=18)

    assert log.head == 20
    assert (log.repair.offset, log.repair.dropped_bytes, log.repair.reason) == (clean_size, 30, "torn record without newline")
    assert segment.stat().st_size == clean_size


def test_verified_open_cuts_corrupt_last_record(tmp_path):
    write_log(tmp_path, 20)
    segment = segments(tmp_path)[-1]
    data = segment.read_bytes()
    last_start = data.rindex(b"\n", 0, len(data) - 1) + 1
    segment.write_bytes(data[:last_start] + data[last_start:].replace(b'"seq":20', b'"seq":29'))

    log = OriginLog(tmp_path, ORIGIN, verified_through=18)

    assert log.head == 19
    assert log.repair.offset == last_start
    assert log.repair.reason.startswith("corrupt last record: ")


def test_verified_open_finds_unverified_corruption(tmp_path):
    write_log(tmp_path, 20)
    segment = segments(tmp_path)[-1]
    data = segment.read_bytes()
    segment.write_bytes(data.replace(b'"seq":18,', b'"seq":81,'))
    offset = data.index(b'"seq":18,')
    line_start = data.rindex(b"\n", 0, offset) + 1

    with pytest.raises(LogError) as raised:
        OriginLog(tmp_path, ORIGIN, verified_through=15)

    assert str(raised.value).startswith(
        f"corrupt record in the middle of {segment} at byte offset {line_start}, where seq 18 was expected: "
    )


def test_verified_open_leaves_covered_records_to_reads(tmp_path):
    write_log(tmp_path, 20)
    segment = segments(tmp_path)[-1]
    segment.write_bytes(segment.read_bytes().replace(b'"seq":3,', b'"seq":33,'))

    log = OriginLog(tmp_path, ORIGIN, verified_through=15)

    assert log.head == 20
    assert list(log.read(after=15)) == [make_event(seq) for seq in range(16, 21)]
    with pytest.raises(LogError, match="where seq 3 was expected"):
        list(log.read(after=0))


def test_verified_open_finds_seq_gap(tmp_path):
    write_log(tmp_path, 20)
    segment = segments(tmp_path)[-1]
    offset = segment.stat().st_size
    with open(segment, "ab") as file:
        file.write(record.encode(make_event(23)))

    with pytest.raises(LogError) as raised:
        OriginLog(tmp_path, ORIGIN, verified_through=18)

    assert str(raised.value) == f"seq gap in {segment} at byte offset {offset}: expected seq 21, found seq 23"


@settings(max_examples=150, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=25),
    segment_bytes=st.integers(min_value=150, max_value=1500),
    cut=st.floats(min_value=0.0, max_value=1.0),
    verified=st.integers(min_value=0, max_value=30),
)
def test_verified_open_equals_full_open(count, segment_bytes, cut, verified):
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        results = []
        for name, verified_through in ((first, 0), (second, verified)):
            directory = Path(name)
            write_log(directory, count, segment_bytes=segment_bytes)
            last = segments(directory)[-1]
            data = last.read_bytes()
            last.write_bytes(data[: round(cut * len(data))])
            log = OriginLog(directory, ORIGIN, segment_bytes=segment_bytes, verified_through=verified_through)
            repair = None if log.repair is None else (log.repair.path.name, log.repair.offset, log.repair.dropped_bytes)
            results.append((log.head, repair, last.read_bytes()))

        assert results[0] == results[1]


@settings(max_examples=100, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=40),
    segment_bytes=st.integers(min_value=150, max_value=3000),
    after=st.integers(min_value=0, max_value=45),
    torn=st.integers(min_value=0, max_value=60),
)
def test_read_from_any_seq_returns_the_rest(count, segment_bytes, after, torn):
    # Reads near the end walk back from it; reads further back read whole
    # segments. Both must give the same events, and ignore a record being written.
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        events = write_log(directory, count, segment_bytes=segment_bytes)
        log = OriginLog(directory, ORIGIN, segment_bytes=segment_bytes)
        with open(segments(directory)[-1], "ab") as file:
            file.write(record.encode(make_event(count + 1))[:torn])

        assert list(log.read(after=min(after, count))) == events[min(after, count):]
