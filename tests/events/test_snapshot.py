"""Snapshot files: round trip, digest, the newest that loads, pruning."""

import orjson
import pytest

from flatnet.events import snapshot as snapshots
from flatnet.events.snapshot import Snapshot, SnapshotError

VIEW = {"containers": [["c1", "10.100.1.10", "web", [80], 1, "2026-12-04T10:00:00.000Z", "eth0", 1, 3]],
        "tombstones": [], "tombstoneCutoff": ""}


def make_snapshot(vector=None, view=None) -> Snapshot:
    vector = {1: 3, 2: 7} if vector is None else vector
    view = VIEW if view is None else view
    return Snapshot(
        vector=vector,
        view=view,
        digest=snapshots.compute_digest(vector, view),
        origin=1,
        node="5f0c6a52-3a0e-4c59-9d0b-1f2d6f0d9a11",
        created_at="2026-12-04T10:00:00.000Z",
    )


def test_written_snapshot_loads_equal(tmp_path):
    written = snapshots.write_snapshot(tmp_path, make_snapshot())

    loaded = snapshots.load_snapshot(written.path)

    assert loaded == written
    assert loaded.vector == {1: 3, 2: 7}
    assert written.path.name == "00000000000000000001.json"


def test_digest_ignores_key_order_and_depends_on_content():
    reordered = {"tombstoneCutoff": "", "tombstones": [], "containers": VIEW["containers"]}

    assert snapshots.compute_digest({2: 7, 1: 3}, reordered) == snapshots.compute_digest({1: 3, 2: 7}, VIEW)
    assert snapshots.compute_digest({1: 4, 2: 7}, VIEW) != snapshots.compute_digest({1: 3, 2: 7}, VIEW)
    assert snapshots.compute_digest({1: 3, 2: 7}, VIEW).startswith("sha256:")


def test_changed_content_fails_the_digest(tmp_path):
    written = snapshots.write_snapshot(tmp_path, make_snapshot())
    written.path.write_bytes(written.path.read_bytes().replace(b'"web"', b'"api"'))

    with pytest.raises(SnapshotError) as raised:
        snapshots.load_snapshot(written.path)

    assert str(raised.value).startswith(f"snapshot {written.path} does not match its digest: stored sha256:")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other"}, "has format 'other', expected 'flatnet-snapshot'"),
        ({"v": 2}, "has version 2; this reader knows version 1 only"),
        ({"vector": {"0": 1}}, "vector entry '0': 1 must map an origin 1-254 to a seq >= 0"),
        ({"vector": {"1": -1}}, "vector entry '1': -1 must map an origin 1-254 to a seq >= 0"),
        ({"view": []}, "field 'view' must be a dict"),
        ({"origin": True}, "field 'origin' must be a int"),
    ],
)
def test_invalid_fields_are_named(change, message):
    body = orjson.loads(snapshots.to_bytes(make_snapshot()))
    body.update(change)

    with pytest.raises(SnapshotError) as raised:
        snapshots.from_bytes(orjson.dumps(body), "peer 2")

    assert message in str(raised.value)
    assert str(raised.value).startswith("snapshot peer 2 ")


def test_not_json_is_named(tmp_path):
    path = tmp_path / "00000000000000000001.json"
    path.write_bytes(b'{"format": "flatnet-snap')

    with pytest.raises(SnapshotError, match=f"snapshot {path} is not valid JSON"):
        snapshots.load_snapshot(path)


def test_newest_snapshot_is_loaded(tmp_path):
    snapshots.write_snapshot(tmp_path, make_snapshot({1: 1}))
    snapshots.write_snapshot(tmp_path, make_snapshot({1: 2}))

    newest, skipped = snapshots.load_newest(tmp_path)

    assert newest.vector == {1: 2}
    assert newest.number == 2
    assert skipped == []


def test_damaged_newest_falls_back_to_older(tmp_path):
    snapshots.write_snapshot(tmp_path, make_snapshot({1: 1}))
    damaged = snapshots.write_snapshot(tmp_path, make_snapshot({1: 2}))
    damaged.path.write_bytes(damaged.path.read_bytes()[:-10])

    newest, skipped = snapshots.load_newest(tmp_path)

    assert newest.vector == {1: 1}
    assert len(skipped) == 1
    assert str(damaged.path) in str(skipped[0])


def test_no_snapshot_loads_none(tmp_path):
    assert snapshots.load_newest(tmp_path / "missing") == (None, [])


def test_prune_keeps_the_newest(tmp_path):
    for seq in range(1, 5):
        snapshots.write_snapshot(tmp_path, make_snapshot({1: seq}))

    deleted = snapshots.prune_snapshots(tmp_path, keep=2)

    assert [path.name for path in deleted] == ["00000000000000000001.json", "00000000000000000002.json"]
    assert [path.name for path in snapshots.list_snapshots(tmp_path)] == [
        "00000000000000000003.json", "00000000000000000004.json",
    ]


def test_numbers_keep_growing_after_prune(tmp_path):
    for seq in range(1, 4):
        snapshots.write_snapshot(tmp_path, make_snapshot({1: seq}))
    snapshots.prune_snapshots(tmp_path, keep=1)

    written = snapshots.write_snapshot(tmp_path, make_snapshot({1: 9}))

    assert written.number == 4


def test_temporary_files_are_not_snapshots(tmp_path):
    (tmp_path / ".00000000000000000009.json.tmp").write_bytes(b"{")
    snapshots.write_snapshot(tmp_path, make_snapshot())

    assert [path.name for path in snapshots.list_snapshots(tmp_path)] == ["00000000000000000001.json"]
