"""Histories the gateway's own parts write: replay is deterministic, finds no divergence, and verify passes.

Each generated history runs the gateway's Journal (own appends through group
commit, peers' events stored as replicas, snapshots), its Router over the
gateway's GatewayRoutes, and its DecisionLog, in a fresh data directory. A
peer's events reach the gateway only when the history delivers them, so some
requests are routed on a stale view, as on a real fleet.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Change, Event
from flatnet.gateway import wire
from flatnet.gateway.decisions import DecisionLog
from flatnet.gateway.journal import Journal, JournalPolicy, NodeIdentity
from flatnet.gateway.proxy import GatewayRoutes, Router
from flatnet.gateway.settings import Settings
from flatnet.gateway.state import Gateway
from flatnet.registry import format_time
from flatnet.replay import render
from flatnet.replay.audit import AuditOptions, Verdict, audit
from flatnet.replay.datadir import DataDir
from flatnet.replay.verify import verify

START = 1_800_000_000.0
HOST = 1
PEERS = (2, 3)
NAMES = ("web", "api", "db", "cache")

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from((HOST, *PEERS)), st.sampled_from(NAMES)),
        st.tuples(st.just("remove"), st.sampled_from((HOST, *PEERS)), st.integers(0, 5)),
        st.tuples(st.just("deliver"), st.sampled_from(PEERS), st.just(0)),
        st.tuples(st.just("request"), st.sampled_from((*NAMES, "nobody")), st.just(0)),
        st.tuples(st.just("snapshot"), st.just(0), st.just(0)),
    ),
    max_size=40,
)


async def _write_history(data_dir: Path, steps: list[tuple]) -> None:
    config = Settings.model_validate({
        "host_id": HOST, "data_dir": str(data_dir), "api_listen": "127.0.0.1:8080", "proxy_listen": "127.0.0.1:8000",
        "peers": [{"host_id": peer, "api": f"http://10.100.0.{peer}:8080"} for peer in PEERS],
    })
    journal = Journal(data_dir, HOST, NodeIdentity(str(uuid.uuid4()), 1), JournalPolicy(snapshot_every_events=7))
    gateway = Gateway(config, journal)
    decisions = DecisionLog(data_dir)
    router = Router(GatewayRoutes(gateway, session=None), decisions)

    live: dict[int, list[tuple[str, str]]] = {origin: [] for origin in (HOST, *PEERS)}
    undelivered: dict[int, list[Event]] = {peer: [] for peer in PEERS}
    seqs = {peer: 0 for peer in PEERS}
    clock = START

    for number, (kind, first, second) in enumerate(steps):
        clock += 0.25
        ts = format_time(clock)
        if kind == "add":
            container_id = uuid.uuid4().hex
            data = {"id": container_id, "ip": f"10.100.{first}.{10 + number}", "hostname": second, "ports": [80],
                    "hostId": first, "createdAt": ts, "ifname": "eth0"}
            live[first].append((container_id, ts))
            await _append(journal, undelivered, seqs, first, CONTAINER_ADDED, data, ts)
        elif kind == "remove" and live[first]:
            container_id, created = live[first].pop(second % len(live[first]))
            data = {"id": container_id, "reason": "deleted", "createdAt": created}
            await _append(journal, undelivered, seqs, first, CONTAINER_REMOVED, data, ts)
        elif kind == "deliver":
            for event in undelivered[first]:
                journal.store_replica(event)
            undelivered[first] = []
        elif kind == "request":
            host = f"{first}.flatnet".encode()
            head = wire.RequestHead(b"GET", b"/", "1.1", [(b"Host", host)], True, False, wire.Framing.NONE, {b"host": [host]})
            route = router.route(head, "198.18.0.100", from_peers=False)
            route.record.ts = clock
            route.record.status = route.answer.status if route.answer is not None else 200
            decisions.add(route.record)
        elif kind == "snapshot":
            await journal.write_snapshot()

    decisions.close()
    await journal.close_async()


async def _append(journal: Journal, undelivered: dict, seqs: dict, origin: int, event_type: str, data: dict, ts: str) -> None:
    if origin == HOST:
        await journal.record_own(Change(str(uuid.uuid4()), event_type, data, ts))
        return
    seqs[origin] += 1
    undelivered[origin].append(Event(origin, seqs[origin], ts, f"node-{origin}", 1, str(uuid.uuid4()), event_type, 1, data))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_gateway_history_replays_deterministically(steps):
    with tempfile.TemporaryDirectory() as directory:
        data_dir = Path(directory) / "data"
        asyncio.run(_write_history(data_dir, steps))

        first = audit(DataDir(data_dir), None, AuditOptions(), processes=1)
        second = audit(DataDir(data_dir), None, AuditOptions(), processes=2)
        checked = verify(DataDir(data_dir))

        assert first.counts[Verdict.DIVERGENT] == 0, [finding for finding in first.findings if finding.verdict is Verdict.DIVERGENT]
        assert first.corrupt == []
        assert first.audited == sum(1 for kind, _, _ in steps if kind == "request")
        assert render.decisions_json(first) == render.decisions_json(second)
        assert render.decisions_text(first, 0) == render.decisions_text(second, 0)
        assert checked.problems == []
        assert all(snapshot.unchecked == () for snapshot in checked.snapshots)
        assert render.verify_json(checked) == render.verify_json(verify(DataDir(data_dir)))
