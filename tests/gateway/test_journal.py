"""The journal on a real data directory: start-up from snapshots, group commit,
the outbox, retention and stopped origins. No network: these call the
journal directly."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest

from flatnet.events import outbox
from flatnet.events import snapshot as snapshots
from flatnet.events.log import OriginFailed
from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Change, Event
from flatnet.gateway import rebuild as rebuild_module
from flatnet.gateway.journal import Journal, JournalPolicy, NodeIdentity
from flatnet.registry import View, format_time

OWN = 1
IDENTITY = NodeIdentity("5f0c6a52-3a0e-4c59-9d0b-1f2d6f0d9a11", 1)


def now_iso() -> str:
    return format_time(time.time())


def added_change(number: int, hostname: str | None = None, aliases: list[str] | None = None) -> Change:
    data = {"id": f"own-{number}", "ip": f"10.100.1.{10 + number}", "hostname": hostname or f"web-{number}",
            "ports": [80], "hostId": OWN, "createdAt": now_iso(), "ifname": "eth0"}
    if aliases is not None:
        data["aliases"] = aliases
    return Change(id=str(uuid.uuid4()), type=CONTAINER_ADDED, data=data, ts=now_iso())


def removed_change(number: int) -> Change:
    return Change(id=str(uuid.uuid4()), type=CONTAINER_REMOVED, data={"id": f"own-{number}", "reason": "deleted"}, ts=now_iso())


def replica_event(origin: int, seq: int, kind: str = CONTAINER_ADDED, ts: str | None = None) -> Event:
    ts = ts or now_iso()
    if kind == CONTAINER_ADDED:
        data = {"id": f"peer-{origin}-{seq}", "ip": f"10.100.{origin}.{10 + seq}", "hostname": f"peer{origin}-{seq}",
                "ports": [], "hostId": origin, "createdAt": ts, "ifname": "eth0"}
    else:
        data = {"id": f"peer-{origin}-{seq - 1}", "reason": "deleted"}
    return Event(origin, seq, ts, "node-b", 1, str(uuid.uuid4()), kind, 1, data)


def view_state(journal: Journal):
    # Without the tombstone cutoff: each start sets it from its own clock.
    state = journal.view.export_state()
    del state["tombstoneCutoff"]
    return state, dict(journal.view.vector), dict(journal.view.containers)


async def fill(journal: Journal, own: int = 6, peers: tuple[int, ...] = (2, 3), per_peer: int = 5) -> None:
    for number in range(own):
        await journal.record_own(added_change(number))
    await journal.record_own(removed_change(0))
    for origin in peers:
        for seq in range(1, per_peer + 1):
            kind = CONTAINER_REMOVED if seq == per_peer else CONTAINER_ADDED
            journal.store_replica(replica_event(origin, seq, kind))


# Start-up


async def test_restart_from_snapshot_rebuilds_equal_view(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    await fill(journal)
    before = view_state(journal)
    await journal.close_async()
    assert snapshots.list_snapshots(snapshots.snapshot_dir(tmp_path))

    reopened = Journal(tmp_path, OWN, IDENTITY)

    assert reopened.snapshot is not None
    assert view_state(reopened) == before


async def test_restart_from_full_log_rebuilds_equal_view(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    await fill(journal)
    before = view_state(journal)
    await journal.close_async()
    for path in snapshots.list_snapshots(snapshots.snapshot_dir(tmp_path)):
        path.unlink()

    reopened = Journal(tmp_path, OWN, IDENTITY)

    assert reopened.snapshot is None
    assert view_state(reopened) == before


async def test_restart_folds_events_after_snapshot(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    await fill(journal)
    await journal.write_snapshot()
    for number in range(10, 14):
        await journal.record_own(added_change(number))
    journal.store_replica(replica_event(2, 6))
    before = view_state(journal)
    # A crash: no closing snapshot.
    journal.log.close()

    reopened = Journal(tmp_path, OWN, IDENTITY)

    assert reopened.snapshot.vector[OWN] < reopened.view.vector[OWN]
    assert view_state(reopened) == before


async def test_damaged_newest_snapshot_falls_back(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    await fill(journal)
    await journal.write_snapshot()
    await journal.record_own(added_change(20))
    newest = await journal.write_snapshot()
    before = view_state(journal)
    journal.log.close()
    newest.path.write_bytes(newest.path.read_bytes().replace(b'"web-20"', b'"web-21"'))

    reopened = Journal(tmp_path, OWN, IDENTITY)

    assert reopened.snapshot.number == newest.number - 1
    assert view_state(reopened) == before


def rewrite_without_aliases(snapshot: snapshots.Snapshot) -> None:
    """Rewrite a snapshot file as a gateway wrote it before the view kept aliases: 9 fields per container."""
    view = dict(snapshot.view, containers=[entry[:9] for entry in snapshot.view["containers"]])
    legacy = snapshots.Snapshot(
        snapshot.vector, view, snapshots.compute_digest(snapshot.vector, view), snapshot.origin, snapshot.node, snapshot.created_at,
    )
    snapshot.path.write_bytes(snapshots.to_bytes(legacy))


async def test_snapshot_without_aliases_is_folded_again(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    await journal.record_own(added_change(1, aliases=["api", "www"]))
    await journal.record_own(added_change(2))
    before = view_state(journal)
    newest = await journal.write_snapshot()
    journal.log.close()
    rewrite_without_aliases(snapshots.load_snapshot(newest.path))

    reopened = Journal(tmp_path, OWN, IDENTITY)

    assert reopened.snapshot.number == newest.number
    assert reopened.view.containers["own-1"].aliases == ("api", "www")
    assert [container.id for container in reopened.view.named("api")] == ["own-1"]
    assert view_state(reopened) == before


async def test_snapshot_without_aliases_after_retention_loads_as_is(tmp_path):
    policy = JournalPolicy(segment_bytes=4096, retention=0, snapshot_every_events=10_000)
    journal = Journal(tmp_path, OWN, IDENTITY, policy)
    await journal.record_own(added_change(1, aliases=["api"]))
    for number in range(2, 40):
        await journal.record_own(added_change(number))
    await journal.write_snapshot()
    newest = await journal.write_snapshot()
    journal.log.close()
    assert journal.log.origin(OWN).compacted_through > 0
    rewrite_without_aliases(snapshots.load_snapshot(newest.path))

    reopened = Journal(tmp_path, OWN, IDENTITY, policy)

    assert reopened.snapshot.number == newest.number
    assert "own-1" in reopened.view.containers
    assert reopened.view.containers["own-1"].aliases == ()
    assert reopened.view.named("api") == []


def test_parallel_rebuild_equals_one_process(tmp_path, monkeypatch):
    async def prepare() -> None:
        journal = Journal(tmp_path, OWN, IDENTITY)
        await fill(journal, own=20, peers=(2, 3, 4, 5), per_peer=30)
        journal.log.close()

    asyncio.run(prepare())
    journal = Journal(tmp_path, OWN, IDENTITY)
    one_process = view_state(journal)
    journal.log.close()
    monkeypatch.setattr(rebuild_module, "PARALLEL_MIN_BYTES", 0)
    # Forking is refused while other threads run; this test's process has
    # only idle ones left from earlier event loops.
    monkeypatch.setattr(rebuild_module.threading, "active_count", lambda: 1)

    rebuilt = rebuild_module.rebuild(journal.log, View(), processes=2)

    assert rebuilt.processes == 2
    assert rebuilt.events == sum(journal.view.vector.values())
    state = rebuilt.view.export_state()
    del state["tombstoneCutoff"]
    assert (state, rebuilt.view.vector, rebuilt.view.containers) == one_process


def test_torn_tail_is_cut_and_warned_once(tmp_path, caplog):
    async def prepare() -> None:
        journal = Journal(tmp_path, OWN, IDENTITY)
        await fill(journal, peers=(2,))
        await journal.close_async()

    asyncio.run(prepare())
    segment = sorted((tmp_path / "log" / "2").glob("*.jsonl"))[-1]
    clean_size = segment.stat().st_size
    with open(segment, "ab") as file:
        file.write(b'{"crc":12,"data":{"hostId":2')

    with caplog.at_level("WARNING", logger="flatnet.log"):
        Journal(tmp_path, OWN, IDENTITY).log.close()
        Journal(tmp_path, OWN, IDENTITY).log.close()

    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [
        f"cut 28 bytes off the tail of {segment} at byte offset {clean_size}: torn record without newline"
    ]


# Group commit and the outbox


async def test_concurrent_changes_share_fsyncs(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)

    results = await asyncio.gather(*(journal.record_own(added_change(number)) for number in range(50)))

    seqs = sorted(event.seq for event, is_new in results)
    assert seqs == list(range(1, 51))
    assert all(is_new for _, is_new in results)
    assert journal._committer.batches < 50
    assert len(journal.view.containers) == 50


async def test_duplicate_in_flight_waits_and_is_stored_once(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    change = added_change(1)

    first, second = await asyncio.gather(journal.record_own(change), journal.record_own(change))

    assert first[1] is True
    assert second == (None, False)
    assert journal.head(OWN) == 1


async def test_duplicate_after_restart_is_not_appended(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    change = added_change(1)
    await journal.record_own(change)
    await journal.close_async()

    reopened = Journal(tmp_path, OWN, IDENTITY)
    event, is_new = await reopened.record_own(change)

    assert (event, is_new) == (None, False)
    assert reopened.head(OWN) == 1


async def test_outbox_is_appended_before_new_change(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    waiting = added_change(1)
    outbox.write_change(tmp_path, waiting)

    event, _ = await journal.record_own(removed_change(1))

    stored = list(journal.log.origin(OWN).read())
    assert [stored_event.id for stored_event in stored] == [waiting.id, event.id]
    assert outbox.pending(tmp_path) == []


async def test_drain_counts_new_changes_only(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    change = added_change(1)
    await journal.record_own(change)
    outbox.write_change(tmp_path, change)
    outbox.write_change(tmp_path, added_change(2))

    assert await journal.drain_outbox() == 1
    assert journal.head(OWN) == 2
    assert outbox.pending(tmp_path) == []


# Snapshots and retention


async def test_snapshot_written_every_n_events(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY, JournalPolicy(snapshot_every_events=5))

    for number in range(12):
        await journal.record_own(added_change(number))
    await asyncio.sleep(0)
    await journal._snapshot_task

    assert journal.snapshot is not None
    assert journal.snapshot.vector[OWN] >= 5


async def test_retention_deletes_covered_segments_and_restart_still_works(tmp_path):
    policy = JournalPolicy(segment_bytes=4096, retention=0, snapshot_every_events=10_000)
    journal = Journal(tmp_path, OWN, IDENTITY, policy)
    for number in range(60):
        await journal.record_own(added_change(number % 40))
    own_dir = tmp_path / "log" / str(OWN)
    before = sorted(own_dir.glob("*.jsonl"))

    await journal.write_snapshot()
    await journal.write_snapshot()

    after = sorted(own_dir.glob("*.jsonl"))
    assert len(after) < len(before)
    assert after[-1] == before[-1]
    state = view_state(journal)
    await journal.close_async()
    assert view_state(Journal(tmp_path, OWN, IDENTITY, policy)) == state


async def test_old_tombstones_are_dropped(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY, JournalPolicy(tombstone_retention=3600))
    half_an_hour_ago = format_time(time.time() - 1800)
    journal.store_replica(replica_event(2, 1, ts=half_an_hour_ago))
    journal.store_replica(replica_event(2, 2, CONTAINER_REMOVED, ts=half_an_hour_ago))
    journal.store_replica(replica_event(2, 3))
    journal.store_replica(replica_event(2, 4, CONTAINER_REMOVED))
    assert journal.view.tombstone_count() == 2
    journal.policy = JournalPolicy(tombstone_retention=600)

    await journal.write_snapshot()

    assert journal.view.tombstone_count() == 1
    assert journal.view.tombstone(2, "peer-2-3") is not None


async def test_removal_older_than_tombstone_retention_leaves_none_at_start(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    long_ago = "2020-01-01T00:00:00.000Z"
    journal.store_replica(replica_event(2, 1, ts=long_ago))
    journal.store_replica(replica_event(2, 2, CONTAINER_REMOVED, ts=long_ago))

    assert journal.view.tombstone_count() == 0
    assert journal.view.containers == {}


# Stopped origins


def damage_middle_record(path) -> None:
    data = bytearray(path.read_bytes())
    second_line = data.index(b"\n") + 1
    data[second_line + 60] ^= 0x01
    path.write_bytes(bytes(data))


async def test_damaged_replica_stops_only_its_origin(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    await fill(journal, peers=(2, 3))
    journal.log.close()
    damage_middle_record(sorted((tmp_path / "log" / "2").glob("*.jsonl"))[0])

    reopened = Journal(tmp_path, OWN, IDENTITY)

    # Opening checks each tail; the fold finds the damage and keeps what came before it.
    assert list(reopened.failures) == [2]
    assert "corrupt record in" in reopened.failures[2]
    assert "where seq 2 was expected" in reopened.failures[2]
    assert reopened.view.vector[2] == 1
    assert reopened.view.vector[3] == 5
    with pytest.raises(OriginFailed):
        reopened.store_replica(replica_event(2, 6))
    event, is_new = await reopened.record_own(added_change(30))
    assert is_new


async def test_damaged_own_log_rejects_changes(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    await fill(journal, peers=(2,))
    journal.log.close()
    damage_middle_record(sorted((tmp_path / "log" / str(OWN)).glob("*.jsonl"))[0])

    reopened = Journal(tmp_path, OWN, IDENTITY)

    assert list(reopened.failures) == [OWN]
    assert reopened.view.vector[2] == 5
    with pytest.raises(OriginFailed, match=f"the log of origin {OWN} is stopped"):
        await reopened.record_own(added_change(30))


async def test_stopped_own_log_leaves_outbox_in_place(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    await fill(journal, peers=())
    journal.log.close()
    damage_middle_record(sorted((tmp_path / "log" / str(OWN)).glob("*.jsonl"))[0])
    outbox.write_change(tmp_path, added_change(40))

    reopened = Journal(tmp_path, OWN, IDENTITY)

    assert await reopened.drain_outbox() == 0
    assert await reopened.drain_outbox() == 0
    assert len(outbox.pending(tmp_path)) == 1


async def test_snapshot_ahead_of_own_log_stops_own_origin(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    await fill(journal, peers=())
    await journal.close_async()
    for path in (tmp_path / "log" / str(OWN)).glob("*.jsonl"):
        path.unlink()

    reopened = Journal(tmp_path, OWN, IDENTITY)

    assert "ends at seq 0, but the snapshot already covers seq 7" in reopened.failures[OWN]
    with pytest.raises(OriginFailed):
        await reopened.record_own(added_change(30))


async def test_closing_twice_is_harmless(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY)
    await journal.record_own(added_change(1))

    await journal.close_async()
    journal.close()

    assert len(snapshots.list_snapshots(snapshots.snapshot_dir(tmp_path))) == 1
    assert os.path.isdir(tmp_path / "log")


async def test_concurrent_snapshots_keep_newest_view(tmp_path):
    journal = Journal(tmp_path, OWN, IDENTITY, JournalPolicy(snapshot_every_events=10_000))
    for round_number in range(20):
        await journal.record_own(added_change(round_number))
        earlier = asyncio.ensure_future(journal.write_snapshot())
        # Let the earlier snapshot be prepared and handed to its thread before the next event.
        await asyncio.sleep(0)
        await journal.record_own(added_change(100 + round_number))
        later = journal.write_snapshot()

        await asyncio.gather(earlier, later)

        newest = snapshots.load_snapshot(snapshots.list_snapshots(snapshots.snapshot_dir(tmp_path))[-1])
        assert newest.vector == {OWN: 2 * (round_number + 1)}
    await journal.close_async()
