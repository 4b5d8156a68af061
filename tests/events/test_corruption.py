"""Damaged logs: each kind of damage gives its exact error, and stops only its origin."""

import os
from pathlib import Path

import pytest

from flatnet.events import record
from flatnet.events.log import EventLog, LogError, OriginFailed, OriginLog
from tests.events.test_log import ORIGIN, make_event, segments, write_log


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def line_starts(path: Path) -> list[int]:
    data = path.read_bytes()
    starts = [0]
    for index, byte in enumerate(data[:-1]):
        if byte == ord("\n"):
            starts.append(index + 1)
    return starts


# The four kinds of damage, each with its exact message


def test_torn_tail_is_cut_and_reported_with_file_and_offset(tmp_path):
    write_log(tmp_path, 3)
    segment = segments(tmp_path)[-1]
    clean_size = segment.stat().st_size
    with open(segment, "ab") as file:
        file.write(record.encode(make_event(4))[:40])

    log = OriginLog(tmp_path, ORIGIN)

    assert log.repair is not None
    assert (log.repair.path, log.repair.offset, log.repair.dropped_bytes) == (segment, clean_size, 40)
    assert log.repair.reason == "torn record without newline"
    assert log.head == 3
    assert segment.stat().st_size == clean_size


def test_flipped_byte_mid_segment_names_file_offset_and_seq(tmp_path):
    write_log(tmp_path, 5)
    segment = segments(tmp_path)[-1]
    third = line_starts(segment)[2]
    flip_byte(segment, third + 60)

    with pytest.raises(LogError) as raised:
        OriginLog(tmp_path, ORIGIN)

    message = str(raised.value)
    assert message.startswith(f"corrupt record in the middle of {segment} at byte offset {third}, where seq 3 was expected: ")
    assert "does not match its content" in message or "not valid JSON" in message


def test_flipped_byte_in_earlier_segment_stops_origin_on_read(tmp_path):
    # Opening checks only each earlier segment's last record; the rest is
    # checked when it is read, and the error stops the origin then.
    write_log(tmp_path, 9, segment_bytes=300)
    first = segments(tmp_path)[0]
    flip_byte(first, 60)
    log = OriginLog(tmp_path, ORIGIN)

    with pytest.raises(LogError) as raised:
        list(log.read())

    assert str(raised.value).startswith(f"corrupt record in {first} at byte offset 0, where seq 1 was expected: ")
    with pytest.raises(OriginFailed, match=f"the log of origin {ORIGIN} is stopped"):
        log.append(make_event(10))


def test_missing_segment_names_the_gap(tmp_path):
    write_log(tmp_path, 9, segment_bytes=300)
    first, middle, following = segments(tmp_path)[:3]
    middle.unlink()

    with pytest.raises(LogError) as raised:
        OriginLog(tmp_path, ORIGIN)

    assert f"seq gap after {first}" in str(raised.value)
    assert f"expected seq {int(middle.stem)} next, but {following.name} starts at seq {int(following.stem)}" in str(raised.value)


def test_seq_gap_names_file_offset_and_seqs(tmp_path):
    write_log(tmp_path, 2)
    segment = segments(tmp_path)[-1]
    offset = segment.stat().st_size
    with open(segment, "ab") as file:
        file.write(record.encode(make_event(4)))
        file.write(record.encode(make_event(5)))

    with pytest.raises(LogError) as raised:
        OriginLog(tmp_path, ORIGIN)

    assert str(raised.value) == f"seq gap in {segment} at byte offset {offset}: expected seq 3, found seq 4"


def test_seq_gap_at_tail_is_not_cut(tmp_path):
    # A record out of place is no crash artifact: recovery must not cut it away.
    write_log(tmp_path, 2)
    segment = segments(tmp_path)[-1]
    with open(segment, "ab") as file:
        file.write(record.encode(make_event(7)))
    size = segment.stat().st_size

    with pytest.raises(LogError, match="expected seq 3, found seq 7"):
        OriginLog(tmp_path, ORIGIN)

    assert segment.stat().st_size == size


# One origin's damage stops only that origin


def test_damaged_origin_leaves_others_working(tmp_path):
    log = EventLog(tmp_path)
    for origin in (1, 2, 3):
        log.origin(origin).append_batch([make_event(seq, origin=origin) for seq in (1, 2, 3)])
    log.close()
    damaged = tmp_path / "log" / "2"
    segment = segments(damaged)[0]
    flip_byte(segment, line_starts(segment)[1] + 60)

    reopened = EventLog(tmp_path)

    assert list(reopened.failures) == [2]
    assert "corrupt record in the middle of" in str(reopened.failures[2])
    assert reopened.origins() == [1, 2, 3]
    assert reopened.vector() == {1: 3, 3: 3}
    reopened.origin(3).append(make_event(4, origin=3))
    assert [event.seq for event in reopened.origin(1).read()] == [1, 2, 3]
    with pytest.raises(OriginFailed) as raised:
        reopened.origin(2)
    assert raised.value.origin == 2
    assert "repair or remove its directory and restart the gateway" in str(raised.value)


def test_failed_write_stops_origin(tmp_path):
    log = OriginLog(tmp_path, ORIGIN)
    log.append(make_event(1))
    # The segment's descriptor now refers to a read-only file: the next write fails with EBADF.
    read_only = os.open(segments(tmp_path)[0], os.O_RDONLY)
    os.dup2(read_only, log._writer.fileno())
    os.close(read_only)

    with pytest.raises(LogError, match="failed to write or fsync"):
        log.append(make_event(2))

    assert log.head == 1
    with pytest.raises(OriginFailed):
        log.append(make_event(2))
