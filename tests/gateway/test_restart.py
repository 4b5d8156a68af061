"""Real gateways restarted from disk serve the same containers, from a snapshot or from the full log."""

from __future__ import annotations

import os
import signal

import pytest

from flatnet.events import snapshot as snapshots
from tests.gateway.harness import GatewayProcess, wait_until

pytestmark = pytest.mark.root

SNAPSHOT_EVERY = 5


def without_ttl(gateway: GatewayProcess) -> list[dict]:
    return sorted(({k: v for k, v in entry.items() if k != "ttl"} for entry in gateway.containers()), key=lambda e: e["id"])


@pytest.fixture
def pair(netns, tmp_path):
    """Gateways 1 and 2 following each other, snapshotting every few events."""
    gateways = {}
    for host_id, peer in ((1, 2), (2, 1)):
        gateway = GatewayProcess(netns, tmp_path, host_id, [peer])
        with open(gateway.config, "a") as config:
            config.write(f"[log]\nsnapshot_every_events = {SNAPSHOT_EVERY}\n")
        gateways[host_id] = gateway
    try:
        for gateway in gateways.values():
            gateway.start()
        yield gateways
    finally:
        for gateway in gateways.values():
            gateway.stop()


def populate(gateways: dict[int, GatewayProcess]) -> list[dict]:
    added = [gateways[2].add_container(f"web-{n}", f"10.100.2.{10 + n}", ports=[8000 + n]) for n in range(12)]
    for entry in added[:4]:
        gateways[2].remove_container(entry["id"])
    for n in range(3):
        gateways[1].add_container(f"own-{n}", f"10.100.1.{10 + n}")
    wait_until(lambda: len(gateways[1].containers()) == 11, 10, "11 containers on gateway 1")
    return added


def test_restart_from_snapshot_serves_same_containers(pair):
    populate(pair)
    before = without_ttl(pair[1])

    pair[1].stop()
    directory = snapshots.snapshot_dir(pair[1].data_dir)
    newest, _ = snapshots.load_newest(directory)
    pair[1].start()

    assert newest is not None
    assert newest.vector == {1: 3, 2: 16}
    assert without_ttl(pair[1]) == before
    assert "view rebuilt" in pair[1].log_text()
    assert f"snapshot {newest.path.name}" in pair[1].log_text()


def test_restart_from_full_log_serves_same_containers(pair):
    populate(pair)
    before = without_ttl(pair[1])

    pair[1].stop()
    for path in snapshots.list_snapshots(snapshots.snapshot_dir(pair[1].data_dir)):
        path.unlink()
    pair[1].start()

    assert without_ttl(pair[1]) == before
    assert "snapshot none, then 19 events folded" in pair[1].log_text()


def test_restart_after_kill_serves_same_containers(pair):
    populate(pair)
    before = without_ttl(pair[1])

    os.killpg(pair[1].process.pid, signal.SIGKILL)
    pair[1].process.wait(timeout=10)
    pair[1].process = None
    pair[1].start()

    assert without_ttl(pair[1]) == before


def test_damaged_replica_stops_only_that_origin(pair):
    populate(pair)
    pair[1].stop()
    replica = sorted((pair[1].data_dir / "log" / "2").glob("*.jsonl"))[0]
    data = bytearray(replica.read_bytes())
    data[data.index(b"\n") + 60] ^= 0x01
    replica.write_bytes(bytes(data))
    for path in snapshots.list_snapshots(snapshots.snapshot_dir(pair[1].data_dir)):
        path.unlink()

    pair[1].start()

    health = pair[1].health()
    assert list(health["stoppedOrigins"]) == ["2"]
    assert f"corrupt record in {replica} at byte offset" in health["stoppedOrigins"]["2"]
    assert sorted(entry["hostname"] for entry in pair[1].containers() if entry["hostId"] == 1) == ["own-0", "own-1", "own-2"]
    pair[1].add_container("own-3", "10.100.1.13")
    assert "own-3" in {entry["hostname"] for entry in pair[1].containers()}
    wait_until(lambda: "stopped following peer 2" in pair[1].log_text(), 10, "the follower of peer 2 to stop")
