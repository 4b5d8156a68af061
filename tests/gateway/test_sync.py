"""Gateways share their hosts' containers: streams, resume, outbox, TTL."""

import json
import shutil
import time
import uuid
from pathlib import Path

import pytest

from flatnet.events import outbox
from flatnet.events.log import OriginLog
from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Change
from tests.gateway.harness import GatewayProcess, http, is_following, stall_streams, unstall, wait_until

pytestmark = pytest.mark.root


def _names(gateway) -> dict[str, dict]:
    return {entry["hostname"]: entry for entry in gateway.containers()}


def test_added_container_reaches_peer(fleet):
    gateways = fleet()

    gateways[2].add_container("web-b1", "10.100.2.10", ports=[8000])

    seen = wait_until(lambda: _names(gateways[1]).get("web-b1"), 5, "web-b1 on gateway 1")
    assert seen["hostId"] == 2
    assert seen["ip"] == "10.100.2.10"
    assert seen["ports"] == [8000]
    assert 0 < seen["ttl"] <= 300


def test_removed_container_leaves_peer(fleet):
    gateways = fleet()
    added = gateways[2].add_container("web-b2", "10.100.2.11")
    wait_until(lambda: "web-b2" in _names(gateways[1]), 5, "web-b2 on gateway 1")

    gateways[2].remove_container(added["id"])

    wait_until(lambda: "web-b2" not in _names(gateways[1]), 5, "web-b2 to leave gateway 1")
    assert "web-b2" not in _names(gateways[2])


def test_follower_resumes_without_gap_or_duplicate(fleet):
    gateways = fleet()
    gateways[2].add_container("before", "10.100.2.10")
    wait_until(lambda: "before" in _names(gateways[1]), 5, "first container on gateway 1")

    gateways[1].stop()
    for n in range(3):
        gateways[2].add_container(f"while-away-{n}", f"10.100.2.{20 + n}")
    gateways[1].start()

    wait_until(lambda: len(_names(gateways[1])) == 4, 10, "all four containers on gateway 1")
    replica = OriginLog(gateways[1].data_dir / "log" / "2", 2)
    seqs = [event.seq for event in replica.read(0)]
    assert seqs == [1, 2, 3, 4]


def test_restarted_gateway_rebuilds_equal_view(fleet):
    gateways = fleet()
    gateways[2].add_container("kept-a", "10.100.2.10")
    removed = gateways[2].add_container("gone-b", "10.100.2.11")
    gateways[2].remove_container(removed["id"])
    gateways[1].add_container("kept-c", "10.100.1.10")
    wait_until(lambda: set(_names(gateways[1])) == {"kept-a", "kept-c"}, 5, "view of gateway 1")
    before = {entry["id"]: (entry["ip"], entry["hostId"], entry["seq"]) for entry in gateways[1].containers()}

    gateways[1].stop()
    gateways[1].start()

    after = {entry["id"]: (entry["ip"], entry["hostId"], entry["seq"]) for entry in gateways[1].containers()}
    assert after == before


def test_outbox_change_appended_when_gateway_starts(fleet):
    gateways = fleet()
    gateways[2].stop()
    change = Change(
        id=str(uuid.uuid4()),
        type=CONTAINER_ADDED,
        ts="2026-12-04T10:00:00.000Z",
        data={"id": "c" * 12, "ip": "10.100.2.30", "hostname": "from-outbox", "ports": [], "hostId": 2,
              "createdAt": "2026-12-04T10:00:00.000Z", "ifname": "eth0"},
    )
    outbox.write_change(gateways[2].data_dir, change)

    gateways[2].start()

    assert outbox.pending(gateways[2].data_dir) == []
    seen = wait_until(lambda: _names(gateways[1]).get("from-outbox"), 10, "outbox container on gateway 1")
    assert seen["hostId"] == 2


def test_duplicate_event_id_appended_once(fleet):
    gateways = fleet(host_ids=(1,))
    body = {"eventId": str(uuid.uuid4()), "id": "d" * 12, "ip": "10.100.1.10", "hostname": "once",
            "ports": [], "hostId": 1, "createdAt": "2026-12-04T10:00:00.000Z"}

    first, _ = http(gateways[1].netns, "POST", f"{gateways[1].api}/api/containers", body=body)
    second, text = http(gateways[1].netns, "POST", f"{gateways[1].api}/api/containers", body=body)

    assert first == 201
    assert second == 200
    assert json.loads(text)["duplicate"] is True
    assert gateways[1].health()["vector"]["1"] == 1


def test_silent_peer_expires_then_returns(fleet):
    gateways = fleet(ttl=2, heartbeat=0.5)
    gateways[2].add_container("web-ttl", "10.100.2.10")
    wait_until(lambda: "web-ttl" in _names(gateways[1]), 5, "web-ttl on gateway 1")

    gateways[2].stop()
    expired = wait_until(lambda: _names(gateways[1])["web-ttl"]["ttl"] == 0, 10, "web-ttl to expire on gateway 1")
    assert expired
    status, _ = http(gateways[1].netns, "GET", f"{gateways[1].proxy}/", headers={"Host": "web-ttl.flatnet"})
    assert status == 404
    assert "peer 2 expired" in gateways[1].log_text()

    gateways[2].start()
    wait_until(lambda: _names(gateways[1])["web-ttl"]["ttl"] > 0, 10, "web-ttl to come back on gateway 1")
    assert "peer 2 is live again" in gateways[1].log_text()


def test_own_containers_never_expire(fleet):
    gateways = fleet(host_ids=(1,), ttl=1, heartbeat=0.5)
    gateways[1].add_container("mine", "10.100.1.10")

    time.sleep(1.5)

    assert _names(gateways[1])["mine"]["ttl"] == 1


def test_peer_with_new_log_resets_replica(fleet):
    gateways = fleet()
    for n in range(3):
        gateways[2].add_container(f"old-{n}", f"10.100.2.{10 + n}")
    wait_until(lambda: len(_names(gateways[1])) == 3, 5, "the old incarnation's containers on gateway 1")

    gateways[2].stop()
    shutil.rmtree(gateways[2].data_dir)
    gateways[2].start()
    gateways[2].add_container("new-0", "10.100.2.20")

    wait_until(lambda: set(_names(gateways[1])) == {"new-0"}, 10, "gateway 1 to follow the new log only")
    assert "started a new log" in gateways[1].log_text()
    archived = list((gateways[1].data_dir / "log-archive").iterdir())
    assert [path.name.split("-")[0] for path in archived] == ["2"]
    replica = OriginLog(gateways[1].data_dir / "log" / "2", 2)
    assert [event.seq for event in replica.read(0)] == [1]

    gateways[1].stop()
    gateways[1].start()
    assert set(_names(gateways[1])) == {"new-0"}


def test_other_node_continuing_seqs_is_refused(fleet, tmp_path):
    gateways = fleet()
    for n in range(2):
        gateways[2].add_container(f"real-{n}", f"10.100.2.{10 + n}")
    wait_until(lambda: len(_names(gateways[1])) == 2, 5, "the real node's containers on gateway 1")
    gateways[1].stop()
    gateways[2].stop()

    impostor = GatewayProcess(gateways[2].netns, tmp_path / "impostor", 2, [1])
    impostor.start()
    try:
        for n in range(4):
            impostor.add_container(f"fake-{n}", f"10.100.2.{30 + n}")
        gateways[1].start()

        wait_until(lambda: "two nodes claim host id 2" in gateways[1].log_text(), 10, "the impostor refused")
        assert set(_names(gateways[1])) == {"real-0", "real-1"}
        assert "two nodes claim host id 2" in gateways[1].health()["peers"]["2"]["lastError"]
    finally:
        impostor.stop()


def test_follower_behind_compacted_log_adopts_snapshot(fleet):
    gateways = fleet()
    with open(gateways[2].config, "a") as config:
        config.write("[log]\nsnapshot_every_events = 1\nretention = 0\nsegment_bytes = 4096\n")
    gateways[2].stop()
    gateways[2].start()
    gateways[1].stop()
    for n in range(40):
        gateways[2].add_container(f"compacted-{n:02d}-{'x' * 60}", f"10.100.2.{10 + n}")
    wait_until(lambda: (gateways[2].data_dir / "log" / "2" / "compacted").exists(), 10, "gateway 2 to compact its log")

    gateways[1].start()

    wait_until(lambda: len(_names(gateways[1])) == 40, 10, "gateway 1 to adopt peer 2's snapshot")
    assert "adopted peer 2's snapshot" in gateways[1].log_text()
    assert gateways[1].health()["peers"]["2"]["repairs"] == 1
    gateways[2].add_container("after-snapshot", "10.100.2.60")
    wait_until(lambda: "after-snapshot" in _names(gateways[1]), 5, "the stream to continue after the snapshot")

    gateways[1].stop()
    gateways[1].start()
    assert len(_names(gateways[1])) == 41



def test_backstop_repairs_stalled_stream(fleet):
    # A long heartbeat keeps the follower from noticing the stall by itself, so only the backstop can repair it.
    gateways = fleet(heartbeat=30, resync=0.5)
    gateways[2].add_container("before-stall", "10.100.2.10")
    wait_until(lambda: "before-stall" in _names(gateways[1]), 5, "before-stall on gateway 1")
    wait_until(lambda: is_following(gateways[1], [2]), 15, "gateway 1 to follow gateway 2")
    repairs = gateways[1].health()["peers"]["2"]["repairs"]

    # The backstop's own checks may have left a keep-alive connection beside the stream. A stalled one
    # times out its next check after 3 s, and the check after it opens a new connection.
    rules = stall_streams(gateways[1], [2], pooled_too=True)
    try:
        gateways[2].add_container("during-stall", "10.100.2.11")
        wait_until(lambda: "during-stall" in _names(gateways[1]), 15, "the backstop to pull during-stall")
        assert gateways[1].health()["peers"]["2"]["state"] == "connected"
    finally:
        unstall(gateways[1].netns, rules)

    assert "backstop repaired peer 2: the stream had stopped at seq 1 with the peer at 2; pulled 1 events" in gateways[1].log_text()
    assert gateways[1].health()["peers"]["2"]["repairs"] == repairs + 1

    # The stalled stream then delivers seq 2 again, which the follower must not apply twice.
    gateways[2].add_container("after-stall", "10.100.2.12")
    wait_until(lambda: "after-stall" in _names(gateways[1]), 10, "after-stall on gateway 1")
    hostnames = sorted(entry["hostname"] for entry in gateways[1].containers())
    assert hostnames == ["after-stall", "before-stall", "during-stall"]
    assert gateways[1].health()["peers"]["2"]["replicaHead"] == 3


def _write_calls(gateway) -> int:
    for line in (Path("/proc") / str(gateway.process.pid) / "io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise AssertionError(f"no syscw in /proc/{gateway.process.pid}/io")


def test_backlog_stored_in_batches(fleet):
    gateways = fleet()
    gateways[1].stop()
    gateways[2].stop()
    backlog = 2000
    for n in range(backlog // 2):
        data = {"id": f"{n:012x}", "ip": f"10.100.2.{10 + n % 200}", "hostname": f"backlog-{n}", "ports": [], "hostId": 2,
                "createdAt": "2026-12-04T10:00:00.000Z", "ifname": "eth0"}
        ts = "2026-12-04T10:00:00.000Z"
        outbox.write_change(gateways[2].data_dir, Change(id=str(uuid.uuid4()), type=CONTAINER_ADDED, ts=ts, data=data))
        outbox.write_change(gateways[2].data_dir, Change(id=str(uuid.uuid4()), type=CONTAINER_REMOVED, ts=ts, data={"id": data["id"]}))
    gateways[2].start()
    assert gateways[2].health()["vector"]["2"] == backlog

    gateways[1].start()

    wait_until(lambda: gateways[1].health()["vector"].get("2") == backlog, 30, "gateway 1 to catch up with the backlog")
    replica = OriginLog(gateways[1].data_dir / "log" / "2", 2)
    assert [event.seq for event in replica.read(0)] == list(range(1, backlog + 1))
    # One write per event would be 2000 writes for the replica alone.
    assert _write_calls(gateways[1]) < backlog // 4
