import stat

import orjson
import pytest

from flatnet.events import outbox
from flatnet.events.outbox import OutboxError
from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Change


def make_change(number: int = 1) -> Change:
    return Change(
        id=f"0b8e7c1e-0000-4000-8000-{number:012d}",
        type=CONTAINER_ADDED,
        data={"id": f"c{number}", "ip": f"10.100.1.{10 + number}", "hostname": f"web{number}", "hostId": 1},
        ts="2026-12-04T10:00:00.123Z",
    )


VALID_FIELDS = {
    "id": "event-1",
    "type": CONTAINER_REMOVED,
    "v": 1,
    "ts": "2026-12-04T10:00:00.123Z",
    "data": {"id": "c1", "reason": "deleted"},
}


def write_raw(tmp_path, body: bytes, name: str = "00000000000000000001-event-1.json"):
    directory = outbox.outbox_dir(tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(body)
    return path


# Write and read


def test_written_change_reads_back_equal(tmp_path):
    change = make_change()

    path = outbox.write_change(tmp_path, change)

    assert outbox.read_change(path) == change


def test_write_puts_file_in_outbox_dir(tmp_path):
    path = outbox.write_change(tmp_path, make_change())

    assert path.parent == tmp_path / "outbox"
    assert path.suffix == ".json"
    assert make_change().id in path.name


def test_write_leaves_no_temporary_file(tmp_path):
    outbox.write_change(tmp_path, make_change())

    names = [path.name for path in (tmp_path / "outbox").iterdir()]

    assert len(names) == 1
    assert not names[0].startswith(".")


def test_written_file_is_private(tmp_path):
    path = outbox.write_change(tmp_path, make_change())

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_pending_is_oldest_first(tmp_path):
    changes = [make_change(number) for number in (3, 1, 2)]
    paths = [outbox.write_change(tmp_path, change) for change in changes]

    pending = outbox.pending(tmp_path)

    assert pending == paths
    assert [outbox.read_change(path) for path in pending] == changes


def test_pending_sorts_by_time_prefix(tmp_path):
    newer = write_raw(tmp_path, orjson.dumps(VALID_FIELDS), "00000000000000000200-a.json")
    older = write_raw(tmp_path, orjson.dumps(VALID_FIELDS), "00000000000000000100-z.json")

    assert outbox.pending(tmp_path) == [older, newer]


def test_pending_skips_temporary_and_other_files(tmp_path):
    listed = outbox.write_change(tmp_path, make_change())
    write_raw(tmp_path, b"{", ".00000000000000000001-half.json.tmp")
    write_raw(tmp_path, b"{", ".00000000000000000002-hidden.json")
    write_raw(tmp_path, b"notes", "README.txt")

    assert outbox.pending(tmp_path) == [listed]


def test_pending_without_outbox_dir_is_empty(tmp_path):
    assert outbox.pending(tmp_path / "missing") == []


# Invalid files


def test_invalid_json_names_the_file(tmp_path):
    path = write_raw(tmp_path, b'{"id": ')

    with pytest.raises(OutboxError) as raised:
        outbox.read_change(path)

    assert str(path) in str(raised.value)
    assert "not valid JSON" in str(raised.value)


def test_json_array_names_the_file(tmp_path):
    path = write_raw(tmp_path, b"[]")

    with pytest.raises(OutboxError) as raised:
        outbox.read_change(path)

    assert str(path) in str(raised.value)
    assert "expected an object" in str(raised.value)


@pytest.mark.parametrize("name", ["id", "type", "v", "ts", "data"])
def test_missing_field_names_file_and_field(tmp_path, name):
    fields = dict(VALID_FIELDS)
    del fields[name]
    path = write_raw(tmp_path, orjson.dumps(fields))

    with pytest.raises(OutboxError) as raised:
        outbox.read_change(path)

    assert str(path) in str(raised.value)
    assert repr(name) in str(raised.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("id", 7),
        ("id", ""),
        ("type", ["container.added"]),
        ("v", "1"),
        ("v", True),
        ("ts", None),
        ("ts", ""),
        ("data", "{}"),
    ],
)
def test_invalid_field_names_file_and_field(tmp_path, name, value):
    # The gateway appends an accepted change to its log as is, so anything the
    # log's reader would reject later must be rejected here.
    path = write_raw(tmp_path, orjson.dumps(dict(VALID_FIELDS, **{name: value})))

    with pytest.raises(OutboxError) as raised:
        outbox.read_change(path)

    assert str(path) in str(raised.value)
    assert repr(name) in str(raised.value)


def test_unknown_type_names_file_and_type(tmp_path):
    path = write_raw(tmp_path, orjson.dumps(dict(VALID_FIELDS, type="container.moved")))

    with pytest.raises(OutboxError) as raised:
        outbox.read_change(path)

    assert str(path) in str(raised.value)
    assert "'container.moved'" in str(raised.value)


def test_unknown_version_names_file_and_version(tmp_path):
    path = write_raw(tmp_path, orjson.dumps(dict(VALID_FIELDS, v=2)))

    with pytest.raises(OutboxError) as raised:
        outbox.read_change(path)

    assert str(path) in str(raised.value)
    assert "version 2" in str(raised.value)


def test_added_change_without_ip_is_rejected(tmp_path):
    fields = dict(VALID_FIELDS, type=CONTAINER_ADDED, data={"id": "c1", "hostname": "web1", "hostId": 1})
    path = write_raw(tmp_path, orjson.dumps(fields))

    with pytest.raises(OutboxError, match="'ip'"):
        outbox.read_change(path)
