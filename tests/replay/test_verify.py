"""replay verify: every kind of damage the log tests make is found and named, and a clean log passes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from flatnet.events import record
from flatnet.events import snapshot as snapshots
from flatnet.events.log import COMPACTED_FILE, OriginLog
from flatnet.registry import View
from flatnet.replay.datadir import DataDir
from flatnet.replay.verify import verify
from tests.events.test_corruption import flip_byte, line_starts
from tests.events.test_log import ORIGIN, line_with_valid_crc, make_event, segments
from tests.replay.builder import START, Fleet


def _data_dir(tmp_path: Path, count: int = 5, **options) -> tuple[Path, Path]:
    """A data directory with one origin's log of ``count`` events; return it and the origin's folder."""
    data_dir = tmp_path / "data"
    directory = data_dir / "log" / str(ORIGIN)
    log = OriginLog(directory, ORIGIN, **options)
    for seq in range(1, count + 1):
        log.append(make_event(seq))
    log.close()
    return data_dir, directory


def _kinds(data_dir: Path, **options) -> list[str]:
    return [problem.kind for problem in verify(DataDir(data_dir), **options).problems]


def _write_snapshot(data_dir: Path, events: list, *, change=None) -> Path:
    view = View()
    for event in events:
        view.apply(event)
    state = view.export_state()
    if change is not None:
        change(state)
    prepared = snapshots.Snapshot(
        vector=dict(view.vector), view=state, digest=snapshots.compute_digest(view.vector, state),
        origin=1, node="node-a", created_at="2026-12-04T10:01:00.000Z",
    )
    return snapshots.write_snapshot(snapshots.snapshot_dir(data_dir), prepared).path


def test_clean_log_and_snapshot_pass(tmp_path):
    data_dir, _ = _data_dir(tmp_path, 9, segment_bytes=300)
    _write_snapshot(data_dir, [make_event(seq) for seq in range(1, 7)])

    report = verify(DataDir(data_dir))

    assert report.problems == []
    assert report.records == 9
    assert [(origin.origin, origin.first_seq, origin.head) for origin in report.origins] == [(ORIGIN, 1, 9)]
    assert report.snapshots[0].checked == (ORIGIN,)
    assert report.exit_status == 0


def test_torn_tail_is_named_with_file_and_offset(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 3)
    segment = segments(directory)[-1]
    clean_size = segment.stat().st_size
    with open(segment, "ab") as file:
        file.write(record.encode(make_event(4))[:40])

    [problem] = verify(DataDir(data_dir)).problems

    assert problem.kind == "torn-tail"
    assert (problem.path, problem.offset, problem.seq) == (str(segment), clean_size, 4)
    assert problem.message.startswith(f"torn record in {segment} at byte offset {clean_size}: 40 bytes without a newline")
    # Verify reads only: the torn bytes are still there.
    assert segment.stat().st_size == clean_size + 40


def test_flipped_byte_mid_segment_names_offset_and_seq(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 5)
    segment = segments(directory)[-1]
    third = line_starts(segment)[2]
    flip_byte(segment, third + 60)

    [problem] = verify(DataDir(data_dir)).problems

    assert problem.kind == "corrupt-record"
    assert (problem.offset, problem.seq) == (third, 3)
    assert problem.message.startswith(f"unreadable record in {segment} at byte offset {third}, where seq 3 was expected: ")


def test_every_bad_record_is_listed(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 6)
    segment = segments(directory)[-1]
    starts = line_starts(segment)
    flip_byte(segment, starts[1] + 60)
    flip_byte(segment, starts[4] + 60)

    problems = verify(DataDir(data_dir)).problems

    assert [(problem.kind, problem.seq) for problem in problems] == [("corrupt-record", 2), ("corrupt-record", 5)]


def test_flipped_byte_in_earlier_segment_is_found(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 9, segment_bytes=300)
    first = segments(directory)[0]
    flip_byte(first, 60)

    [problem] = verify(DataDir(data_dir)).problems

    assert (problem.kind, problem.path, problem.offset, problem.seq) == ("corrupt-record", str(first), 0, 1)


def test_missing_middle_segment_names_the_gap(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 9, segment_bytes=300)
    first, middle, following = segments(directory)[:3]
    middle.unlink()

    [problem] = verify(DataDir(data_dir)).problems

    assert problem.kind == "missing-segment"
    assert problem.message == (
        f"seq gap after {first.name}: expected seq {int(middle.stem)}, but {following.name} starts at seq"
        f" {int(following.stem)}; a segment is missing"
    )


def test_missing_first_segment_is_found(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 9, segment_bytes=300)
    segments(directory)[0].unlink()

    [problem] = verify(DataDir(data_dir)).problems

    assert problem.kind == "missing-segment"
    assert "before the first segment: expected seq 1" in problem.message


def test_seq_gap_names_both_seqs(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 2)
    segment = segments(directory)[-1]
    offset = segment.stat().st_size
    with open(segment, "ab") as file:
        file.write(record.encode(make_event(4)))
        file.write(record.encode(make_event(5)))

    [problem] = verify(DataDir(data_dir)).problems

    assert (problem.kind, problem.offset) == ("seq-gap", offset)
    assert problem.message == f"seq gap in {segment} at byte offset {offset}: expected seq 3, found seq 4"


def test_record_of_other_origin_is_found(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 2)
    with open(segments(directory)[-1], "ab") as file:
        file.write(record.encode(make_event(3, origin=ORIGIN + 1)))

    [problem] = verify(DataDir(data_dir)).problems

    assert problem.kind == "wrong-origin"
    assert f"record of origin {ORIGIN + 1} in the log of origin {ORIGIN}" in problem.message


def test_unknown_event_type_is_found(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 2)
    fields = dict(make_event(3).as_dict(), type="container.paused")
    with open(segments(directory)[-1], "ab") as file:
        file.write(line_with_valid_crc(fields))

    [problem] = verify(DataDir(data_dir)).problems

    assert problem.kind == "unknown-type"
    assert "unknown event type 'container.paused'" in problem.message


def test_torn_earlier_segment_is_found(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 9, segment_bytes=300)
    first = segments(directory)[0]
    first.write_bytes(first.read_bytes()[:-10])

    kinds = _kinds(data_dir)

    assert "torn-record" in kinds


def test_bad_segment_name_is_found(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 2)
    (directory / "notaseq.jsonl").write_text("")

    [problem] = verify(DataDir(data_dir)).problems

    assert problem.kind == "segment-name"
    assert "'notaseq.jsonl' is not '<first seq, 20 digits>.jsonl'" in problem.message


def test_compacted_marker_with_garbage_is_found(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 2)
    (directory / COMPACTED_FILE).write_text("yesterday\n")

    assert _kinds(data_dir)[0] == "compacted-marker"


def test_changed_snapshot_fails_its_digest(tmp_path):
    data_dir, _ = _data_dir(tmp_path, 3)
    path = _write_snapshot(data_dir, [make_event(seq) for seq in range(1, 4)])
    path.write_bytes(path.read_bytes().replace(b"web2", b"web9"))

    [problem] = verify(DataDir(data_dir)).problems

    assert problem.kind == "snapshot-unreadable"
    assert "does not match its digest" in problem.message


def test_snapshot_that_is_not_json_is_found(tmp_path):
    data_dir, _ = _data_dir(tmp_path, 3)
    path = _write_snapshot(data_dir, [make_event(seq) for seq in range(1, 4)])
    path.write_bytes(b"{ not json")

    [problem] = verify(DataDir(data_dir)).problems

    assert problem.kind == "snapshot-unreadable"
    assert "is not valid JSON" in problem.message


def test_snapshot_differing_from_the_fold_is_named(tmp_path):
    # A snapshot with a matching digest whose content is not what its events fold to.
    data_dir, _ = _data_dir(tmp_path, 4)

    def drop_second(state):
        state["containers"] = [entry for entry in state["containers"] if entry[0] != "c2"]

    path = _write_snapshot(data_dir, [make_event(seq) for seq in range(1, 5)], change=drop_second)

    [problem] = verify(DataDir(data_dir)).problems

    assert (problem.kind, problem.path, problem.origin, problem.seq) == ("snapshot-fold", str(path), ORIGIN, 4)
    assert problem.message == (
        f"snapshot {path} differs from the fold of origin {ORIGIN}'s events up to seq 4:"
        f" container c2 is in the fold but not in the snapshot"
    )


def test_snapshot_without_aliases_field_passes(tmp_path):
    # A snapshot written before the view kept aliases has 9 fields per container.
    data_dir = tmp_path / "data"
    events = [make_event(seq) for seq in range(1, 4)]
    events.append(dataclasses.replace(make_event(4), data={**make_event(4).data, "aliases": ["api"]}))
    log = OriginLog(data_dir / "log" / str(ORIGIN), ORIGIN)
    for event in events:
        log.append(event)
    log.close()

    def drop_aliases(state):
        state["containers"] = [entry[:9] for entry in state["containers"]]

    _write_snapshot(data_dir, events, change=drop_aliases)

    assert _kinds(data_dir) == []


def test_snapshot_with_invalid_view_is_named(tmp_path):
    data_dir, _ = _data_dir(tmp_path, 2)

    def break_entry(state):
        state["containers"][0][3] = "eighty"

    path = _write_snapshot(data_dir, [make_event(seq) for seq in range(1, 3)], change=break_entry)

    kinds = _kinds(data_dir)

    assert "snapshot-invalid" in kinds
    assert any(str(path) in problem.message for problem in verify(DataDir(data_dir)).problems)


def test_snapshot_ahead_of_the_log_is_found(tmp_path):
    data_dir, _ = _data_dir(tmp_path, 3)
    _write_snapshot(data_dir, [make_event(seq) for seq in range(1, 6)])

    [problem] = verify(DataDir(data_dir)).problems

    assert problem.kind == "snapshot-ahead"
    assert f"covers seq 5 of origin {ORIGIN}, but its log ends at seq 3" in problem.message


def test_compacted_origin_checks_later_snapshots(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 9, segment_bytes=300)
    events = [make_event(seq) for seq in range(1, 10)]
    _write_snapshot(data_dir, events[:6])
    _write_snapshot(data_dir, events[:8])
    # Retention deleted the first segment, which the first snapshot covers.
    first = segments(directory)[0]
    deleted = int(segments(directory)[1].stem) - 1
    first.unlink()
    (directory / COMPACTED_FILE).write_text(f"{deleted}\n")

    report = verify(DataDir(data_dir))

    assert report.problems == []
    assert [snapshot.unchecked for snapshot in report.snapshots] == [(ORIGIN,), ()]
    assert report.snapshots[1].checked == (ORIGIN,)


def test_history_the_builder_wrote_passes_with_several_processes(tmp_path):
    fleet = Fleet(tmp_path / "data")
    for number in range(30):
        fleet.add(1 + number % 3, f"web-{number}", at=START + number, number=10 + number)
    fleet.snapshot(at=START + 31)
    fleet.close()

    one, two = verify(DataDir(fleet.data_dir), processes=1), verify(DataDir(fleet.data_dir), processes=2)

    assert one.problems == two.problems == []
    assert dataclasses.astuple(one) == dataclasses.astuple(two)


@pytest.mark.parametrize("processes", [1, 2])
def test_problems_are_the_same_in_every_process_count(tmp_path, processes, monkeypatch):
    from flatnet.replay import verify as verify_module

    monkeypatch.setattr(verify_module, "PARALLEL_MIN_BYTES", 0)
    data_dir = tmp_path / "data"
    for origin in (2, 3, 4):
        log = OriginLog(data_dir / "log" / str(origin), origin)
        for seq in range(1, 4):
            log.append(make_event(seq, origin=origin))
        log.close()
    segment = sorted((data_dir / "log" / "3").glob("*.jsonl"))[0]
    flip_byte(segment, line_starts(segment)[1] + 60)

    problems = verify(DataDir(data_dir), processes=processes).problems

    assert [(problem.kind, problem.origin, problem.seq) for problem in problems] == [("corrupt-record", 3, 2)]


def test_verify_reads_only(tmp_path):
    data_dir, directory = _data_dir(tmp_path, 3)
    with open(segments(directory)[-1], "ab") as file:
        file.write(b'{"crc":12')
    before = {path: path.read_bytes() for path in data_dir.rglob("*") if path.is_file()}

    verify(DataDir(data_dir))

    assert {path: path.read_bytes() for path in data_dir.rglob("*") if path.is_file()} == before
    assert orjson.loads(segments(directory)[-1].read_bytes().splitlines()[0])["seq"] == 1
