"""Replay: decisions audited per second and log records verified per second.

Usage: make bench-replay. Options: --decisions N (default 1,000,000), --events N
(default 100,000), --origins N (default 10), --repeats N (default 3),
--sample N (decisions the reference replays, default 20,000), --no-aliases (added
events without aliases; by default each carries two, the container's name and its
12-character id, the shape podman's aliases take).

Everything happens in a temporary directory on the disk of /tmp, removed at
the end. Nothing touches the network.

The generated history is one gateway's data directory (host 1) as a fleet of
--origins hosts would leave it: every origin's log with containers added and
removed over about three hours (8 % of them start on another host than
their name's last one, a move; 1 % under a name another host holds, a
conflict), two snapshots (as the journal keeps), and the decision log of the
requests the gateway routed meanwhile. Half of the requests go to 50 popular names, the
rest to any live name, and 3 % to names that do not exist. Peers' events reach
the gateway 5 ms after they are made, except during five 20-second outages
of one peer each, when they arrive at the outage's end: requests in between
make stale decisions, as on a real fleet.

Timed, each --repeats times in this process:

- decisions: `flatnet replay decisions` as the CLI runs it (settings inferred
  from the data directory, the names' history folded from the log, every
  record classified), against the reference: a view folded event by event in
  record order and every request routed by the proxy's Router with no shared
  work between records (what replay would cost without history and shapes),
  on the first --sample decisions;
- verify: `flatnet replay verify`, against the reference: the gateway's own
  reader and fold (EventLog.read_batches into one View with deferred
  indexes, as start-up folds a log), over the same records, in one process.

It prints a table, then one JSON object as its last line with medians,
decisions_per_s and verify_events_per_s, and the ratios to the references.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path

import orjson

from flatnet.events import snapshot as snapshots
from flatnet.events.log import EventLog
from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Event
from flatnet.gateway import wire
from flatnet.gateway.decisions import DecisionRecord
from flatnet.gateway.proxy import Router
from flatnet.gateway.settings import Settings
from flatnet.registry import View, format_time
from flatnet.replay import audit, records, verify
from flatnet.replay.datadir import DataDir

GATEWAY = 1
START = 1_800_000_000.0
SECONDS = 3 * 3600.0
DELIVERY_SECONDS = 0.005
OUTAGES = 5
OUTAGE_SECONDS = 20.0
HOT_NAMES = 50
NAMES = 3000
# Of the containers started: on another host than their name's last one, and under a name another host holds.
MOVE_SHARE = 0.08
CLASH_SHARE = 0.01
DECISION_FILE_BYTES = 64 << 20
NODE = "0b6f3e1c-45a7-4c3e-8f0e-2a1d9c7b5e44"


def generate(data_dir: Path, decisions: int, events: int, origins: int, aliases: bool = True) -> dict[str, int]:
    """Write the data directory described in the module docstring; return what it holds."""
    rng = random.Random(20261204)
    event_list = _events(rng, events, origins, aliases)

    log = EventLog(data_dir)
    by_origin: dict[int, list[Event]] = {}
    for event in event_list:
        by_origin.setdefault(event.origin, []).append(event)
    for origin, batch in sorted(by_origin.items()):
        for start in range(0, len(batch), 5000):
            log.origin(origin).append_batch(batch[start:start + 5000])
    log.close()

    arrivals = _arrivals(rng, event_list, origins)
    _snapshots(data_dir, event_list)
    written = _decisions(rng, data_dir, arrivals, event_list, decisions, origins)
    (data_dir / "node.json").write_text(json.dumps({"node": NODE, "epoch": 1}))
    return {"events": len(event_list), "decisions": written}


def _events(rng: random.Random, count: int, origins: int, aliases: bool) -> list[Event]:
    """Containers coming and going on every origin: mostly redeployed on their own host, some moved, a few clashing."""
    seqs = {origin: 0 for origin in range(1, origins + 1)}
    live: dict[int, dict[str, tuple[str, str, int]]] = {origin: {} for origin in seqs}
    free = {origin: list(range(10, 255)) for origin in seqs}
    home = {f"svc-{number}": number % origins + 1 for number in range(NAMES)}
    idle = {origin: sorted(name for name, at in home.items() if at == origin) for origin in seqs}
    live_names: dict[str, int] = {}
    events = []
    for index in range(count):
        ts = format_time(START + SECONDS * index / count)
        origin = rng.randint(1, origins)
        held = live[origin]
        seqs[origin] += 1
        if held and (len(held) > 150 or not idle[origin] or rng.random() < 0.45):
            container_id = rng.choice(sorted(held))
            name, created, number = held.pop(container_id)
            free[origin].append(number)
            if live_names.get(name) == origin:
                del live_names[name]
                idle[home[name]].append(name)
            data = {"id": container_id, "reason": "deleted", "createdAt": created}
            events.append(Event(origin, seqs[origin], ts, NODE, 1, str(uuid.UUID(int=rng.getrandbits(128))), CONTAINER_REMOVED, 1, data))
            continue
        draw = rng.random()
        others = [other for other in seqs if other != origin and idle[other]]
        if draw < MOVE_SHARE and others:
            # A name whose home is another host starts here: it moved.
            source = rng.choice(others)
            name = idle[source].pop(rng.randrange(len(idle[source])))
            home[name] = origin
        elif draw < MOVE_SHARE + CLASH_SHARE and live_names:
            # A second live container with a name another host holds: a conflict.
            name = rng.choice(sorted(live_names))
        else:
            name = idle[origin].pop(rng.randrange(len(idle[origin])))
        live_names.setdefault(name, origin)
        container_id = uuid.UUID(int=rng.getrandbits(128)).hex * 2
        number = free[origin].pop(rng.randrange(len(free[origin])))
        held[container_id] = (name, ts, number)
        data = {"id": container_id, "ip": f"10.100.{origin}.{number}", "hostname": name, "ports": [80],
                "hostId": origin, "createdAt": ts, "ifname": "eth0"}
        if aliases:
            # Two aliases, the shape podman's take: the container's name and its 12-character id.
            data["aliases"] = [name, container_id[:12]]
        events.append(Event(origin, seqs[origin], ts, NODE, 1, str(uuid.UUID(int=rng.getrandbits(128))), CONTAINER_ADDED, 1, data))
    return events


def _arrivals(rng: random.Random, events: list[Event], origins: int) -> list[tuple[float, Event]]:
    """When each event reached the gateway: at once for its own, 5 ms later for peers', later in an outage."""
    outages = []
    for _ in range(OUTAGES):
        start = START + rng.uniform(0.1, 0.9) * SECONDS
        outages.append((rng.randint(2, origins), start, start + OUTAGE_SECONDS))
    timed = []
    for index, event in enumerate(events):
        made = START + SECONDS * index / len(events)
        at = made if event.origin == GATEWAY else made + DELIVERY_SECONDS
        for origin, start, end in outages:
            if event.origin == origin and start <= made < end:
                at = end
        timed.append((at, event))
    timed.sort(key=lambda item: item[0])
    return timed


def _snapshots(data_dir: Path, events: list[Event]) -> None:
    view = View()
    marks = {int(len(events) * 0.9), len(events)}
    for index, event in enumerate(events, 1):
        view.apply(event)
        if index in marks:
            state = view.export_state()
            snapshot = snapshots.Snapshot(
                vector=dict(view.vector), view=state, digest=snapshots.compute_digest(view.vector, state),
                origin=GATEWAY, node=NODE, created_at=event.ts,
            )
            snapshots.write_snapshot(snapshots.snapshot_dir(data_dir), snapshot)


def _decisions(rng: random.Random, data_dir: Path, arrivals: list[tuple[float, Event]], events: list[Event], count: int, origins: int) -> int:
    """Route ``count`` requests through the gateway's view as it stood at each moment, and write their records."""
    view = View()
    names = [f"svc-{index}" for index in range(NAMES)]
    hot = names[:HOT_NAMES]
    directory = data_dir / "decisions"
    directory.mkdir(parents=True, exist_ok=True)
    files: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    position = 0
    option = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
    vector: dict[int, int] = {}

    for index in range(count):
        now = START + SECONDS * index / count
        changed = False
        while position < len(arrivals) and arrivals[position][0] <= now:
            view.apply(arrivals[position][1])
            position += 1
            changed = True
        if changed:
            vector = dict(view.vector)

        draw = rng.random()
        if draw < 0.03:
            name = f"gone-{rng.randrange(1000)}"
        elif draw < 0.5:
            name = rng.choice(hot)
        else:
            name = rng.choice(names)

        found = view.named(name)
        record = DecisionRecord(ts=round(now, 6), request_id=f"bench-{index:x}", client="198.18.0.100", method="GET", host=f"{name}.flatnet", name=name)
        record.vector = vector
        if found:
            container = found[0]
            record.owner = container.host_id
            record.container_id = container.id
            if container.host_id == GATEWAY:
                record.decision, record.target = "local", f"http://{container.ip}:80"
            else:
                record.decision, record.target = "peer", f"http://10.100.0.{container.host_id}:8080"
            record.status = 200
        else:
            record.decision, record.status = "not-found", 404

        line = orjson.dumps(record, option=option)
        chunk.append(line)
        size += len(line)
        if size >= DECISION_FILE_BYTES:
            files.append(b"".join(chunk))
            chunk, size = [], 0
    files.append(b"".join(chunk))

    # The gateway's naming: the current file, then .1 (newest) to .N (oldest).
    for age, body in enumerate(reversed(files)):
        name = "decisions.jsonl" if age == 0 else f"decisions.jsonl.{age}"
        (directory / name).write_bytes(body)
    return count


# What is timed


def run_decisions(data_dir: Path) -> audit.AuditReport:
    """`flatnet replay decisions` without its output: the work the CLI does."""
    return audit.audit(DataDir(data_dir), None, audit.AuditOptions())


def run_reference_decisions(data_dir: Path, sample: int) -> int:
    """Replay the first ``sample`` decisions one by one: fold to each record's vector, route with the Router."""
    directory = DataDir(data_dir)
    settings = Settings.model_validate({
        "host_id": GATEWAY, "data_dir": str(data_dir), "api_listen": "127.0.0.1:8080", "proxy_listen": "127.0.0.1:80",
        "peers": [{"host_id": origin, "api": f"http://10.100.0.{origin}:8080"} for origin in range(2, 255) if (data_dir / "log" / str(origin)).is_dir()],
    })

    events: dict[int, list[dict]] = {}
    for files in directory.origins():
        reader = directory.read_origin(files)
        events[files.origin] = [fields for batch in reader.batches() for fields in batch]

    view = View()
    state = types.SimpleNamespace(
        settings=settings, lookup=None, lookup_expired=lambda name: (view.named(name) or [None])[0],
        vector=lambda: dict(view.vector), silent_seconds=lambda origin: 0.0, observe=lambda batch: None,
    )
    expired: frozenset[int] = frozenset()
    state.lookup = lambda name: ((view.named(name, expired_origins=expired) or [None])[0], expired)
    router = Router(state, types.SimpleNamespace(observers=[]))

    done = 0
    for keys in records.scan_records(directory):
        if done >= sample:
            break
        fields = orjson.loads(keys.line)
        for origin, seq in sorted((int(origin), seq) for origin, seq in (fields["vector"] or {}).items()):
            applied = view.vector.get(origin, 0)
            if seq > applied:
                view.fold_batches([events[origin][applied:seq]])
        host = fields["host"].encode()
        head = wire.RequestHead(b"GET", b"/", "1.1", [(b"Host", host)], True, False, wire.Framing.NONE, {b"host": [host]})
        router.route(head, "bench", from_peers=False)
        done += 1
    return done


def run_verify(data_dir: Path) -> verify.VerifyReport:
    return verify.verify(DataDir(data_dir))


def run_reference_verify(data_dir: Path) -> int:
    log = EventLog(data_dir)
    view = View()
    records_read = 0
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with view.deferred_indexes():
            for origin in log.origins():
                records_read += view.fold_batches(log.origin(origin).read_batches(0))
    finally:
        if was_enabled:
            gc.enable()
        log.close()
    return records_read


def timed(function, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark flatnet replay: decisions audited and log records verified per second.")
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--origins", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--no-aliases", action="store_true", help="write added events without aliases (default: two aliases each)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="flatnet-bench-replay-"))
    try:
        data_dir = root / "data"
        started = time.perf_counter()
        held = generate(data_dir, args.decisions, args.events, args.origins, aliases=not args.no_aliases)
        generated = time.perf_counter() - started
        decision_bytes = sum(path.stat().st_size for path in (data_dir / "decisions").iterdir())
        print(f"generated {held['decisions']:,} decisions ({decision_bytes / 1e6:.0f} MB) over {held['events']:,} events"
              f" on {args.origins} origins in {generated:.1f} s", file=sys.stderr)

        rows = []
        decision_times, reference_times, verify_times, reference_verify_times = [], [], [], []
        report = None
        for _ in range(args.repeats):
            seconds, report = timed(run_decisions, data_dir)
            decision_times.append(seconds)
            seconds, replayed = timed(run_reference_decisions, data_dir, args.sample)
            reference_times.append(seconds / replayed)
            seconds, verified = timed(run_verify, data_dir)
            verify_times.append(seconds)
            seconds, _ = timed(run_reference_verify, data_dir)
            reference_verify_times.append(seconds)
        assert verified.exit_status == 0, [problem.message for problem in verified.problems[:5]]
        assert report.exit_status == 0, report.corrupt[:5]

        decisions_per_s = report.audited / statistics.median(decision_times)
        reference_per_s = 1 / statistics.median(reference_times)
        verify_per_s = verified.records / statistics.median(verify_times)
        reference_verify_per_s = verified.records / statistics.median(reference_verify_times)
        rows.append(("replay decisions", f"{report.audited:,} decisions", statistics.median(decision_times), decisions_per_s))
        rows.append(("  reference: fold + Router per record", f"{args.sample:,} decisions", statistics.median(reference_times) * args.sample, reference_per_s))
        rows.append(("replay verify", f"{verified.records:,} records", statistics.median(verify_times), verify_per_s))
        rows.append(("  reference: gateway reader + fold", f"{verified.records:,} records", statistics.median(reference_verify_times), reference_verify_per_s))

        print(f"{'what':38} {'work':>20} {'median s':>9} {'per s':>12}")
        for what, work, seconds, rate in rows:
            print(f"{what:38} {work:>20} {seconds:9.2f} {rate:12,.0f}")
        counts = {verdict.value: report.counts[verdict] for verdict in audit.Verdict}
        print(f"classes: {counts}; machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end")
        print(json.dumps({
            "decisions": report.audited,
            "events": verified.records,
            "origins": args.origins,
            "aliases_per_added_event": 0 if args.no_aliases else 2,
            "repeats": args.repeats,
            "decisions_seconds_median": round(statistics.median(decision_times), 3),
            "decisions_per_s": round(decisions_per_s),
            "reference_decisions_per_s": round(reference_per_s),
            "decisions_ratio": round(decisions_per_s / reference_per_s, 1),
            "verify_seconds_median": round(statistics.median(verify_times), 3),
            "verify_events_per_s": round(verify_per_s),
            "reference_verify_events_per_s": round(reference_verify_per_s),
            "verify_ratio": round(verify_per_s / reference_verify_per_s, 2),
            "classes": counts,
        }))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
