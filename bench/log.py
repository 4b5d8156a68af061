"""The event log and the view: append rates, fold rate, start-up time and the view's memory.

Usage: make bench-log. Options: --events N (events in the folded log, default
1,000,000), --live N (live containers at its end, default 60,000), --seconds S
(length of each append run, default 1), --repeats N (default 3), --no-aliases
(added events without aliases; by default each carries two, the container's
name and its 12-character id, the shape podman's aliases take).

Everything happens in a temporary directory on the disk that contains /tmp,
which this script removes at the end; nothing touches the network.

- appends: N writers (1, 8, 64) in one event loop append to one origin's log.
  The reference writes and fsyncs each append on its own; group commit lets
  concurrent appends share a write and an fsync;
- fold: a log of --events events over 250 origins (hosts), containers coming
  and going until --live are live, timestamps spread over 30 days, read back
  and folded into a view with every CRC checked: as the gateway does it (one
  process per core), in one process, and in one process with the standard
  library's json instead of orjson (the reference);
- start: a fresh process opens the gateway's journal (log recovery, snapshot,
  fold, own event ids), from a snapshot a few thousand events behind the head
  and from the full log;
- view RSS: that process's resident memory, and how much of it the view added.

It prints a table, then one JSON object as its last line: medians, and the
ratios of group commit to per-event fsync and of orjson to stdlib json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

from flatnet.events import snapshot as snapshots
from flatnet.events.commit import GroupCommit
from flatnet.events.log import EventLog, OriginLog
from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Event
from flatnet.gateway import rebuild
from flatnet.gateway.journal import Journal, JournalPolicy, NodeIdentity
from flatnet.registry import View, format_time

ORIGINS = 250
OWN_ORIGIN = 1
HISTORY_DAYS = 30
# The snapshot the start-from-snapshot run loads is this many events behind
# the head, as after a gateway that snapshots every 10,000 events died midway.
EVENTS_AFTER_SNAPSHOT = 5_000
WRITERS = (1, 8, 64)
NODE = "5f0c6a52-3a0e-4c59-9d0b-1f2d6f0d9a11"


def make_added(origin: int, seq: int, number: int, host: int, ts: str, aliases: bool = True) -> Event:
    data = {
        "id": uuid.UUID(int=random.getrandbits(128)).hex + uuid.UUID(int=random.getrandbits(128)).hex,
        "ip": f"10.100.{origin}.{host}",
        "hostname": f"web-{number}",
        "ports": [80],
        "hostId": origin,
        "createdAt": ts,
        "ifname": "eth0",
    }
    if aliases:
        data["aliases"] = [data["hostname"], data["id"][:12]]
    return Event(origin, seq, ts, NODE, 1, str(uuid.UUID(int=random.getrandbits(128))), CONTAINER_ADDED, 1, data)


def make_removed(origin: int, seq: int, container_id: str, ts: str) -> Event:
    data = {"id": container_id, "reason": "deleted"}
    return Event(origin, seq, ts, NODE, 1, str(uuid.UUID(int=random.getrandbits(128))), CONTAINER_REMOVED, 1, data)


def write_history(data_dir: Path, events: int, live: int, aliases: bool = True) -> tuple[int, int]:
    """Write a log of ``events`` events ending with ``live`` live containers; return (events, live)."""
    random.seed(20261204)
    log = EventLog(data_dir)
    free = {origin: list(range(10, 255)) for origin in range(1, ORIGINS + 1)}
    alive: list[tuple[int, str, int]] = []
    seqs = {origin: 0 for origin in range(1, ORIGINS + 1)}
    pending: dict[int, list[Event]] = {origin: [] for origin in free}
    start = time.time() - HISTORY_DAYS * 86400
    # Removals come at the rate that keeps the live count at its target once reached.
    for number in range(events):
        ts = format_time(start + HISTORY_DAYS * 86400 * number / events)
        remaining = events - number
        must_add = len(alive) + remaining <= live + 1
        if not must_add and alive and (len(alive) >= live or random.random() < 0.5 - (live - len(alive)) / (2 * remaining)):
            origin, container_id, host = alive.pop(random.randrange(len(alive)))
            free[origin].append(host)
            seqs[origin] += 1
            pending[origin].append(make_removed(origin, seqs[origin], container_id, ts))
        else:
            origin = random.randint(1, ORIGINS)
            while not free[origin]:
                origin = random.randint(1, ORIGINS)
            host = free[origin].pop(random.randrange(len(free[origin])))
            seqs[origin] += 1
            event = make_added(origin, seqs[origin], number, host, ts, aliases)
            alive.append((origin, event.data["id"], host))
            pending[origin].append(event)
        if len(pending[origin]) >= 2000:
            log.origin(origin).append_batch(pending[origin])
            pending[origin] = []
    for origin, batch in pending.items():
        if batch:
            log.origin(origin).append_batch(batch)
    log.close()
    return events, len(alive)


# Appends


async def _append_run(log: OriginLog, writers: int, seconds: float, group: bool) -> float:
    commit = GroupCommit(log)
    next_seq = log.head + 1
    appended = 0
    deadline = time.perf_counter() + seconds

    async def writer() -> None:
        nonlocal next_seq, appended
        while time.perf_counter() < deadline:
            seq = next_seq
            next_seq += 1
            event = make_added(7, seq, seq, 10, "2026-12-04T10:00:00.000Z")
            if group:
                await commit.append(event)
            else:
                # As the journal appended before group commit: on the event
                # loop, written and fsynced one by one.
                log.append(event)
                await asyncio.sleep(0)
            appended += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return appended / (time.perf_counter() - started)


def measure_appends(workdir: Path, seconds: float, repeats: int) -> dict[tuple[str, int], float]:
    rates: dict[tuple[str, int], list[float]] = {}
    for repeat in range(repeats):
        for writers in WRITERS:
            for mode in ("fsync", "group"):
                directory = workdir / f"append-{mode}-{writers}-{repeat}"
                log = OriginLog(directory, 7)
                rate = asyncio.run(_append_run(log, writers, seconds, mode == "group"))
                log.close()
                shutil.rmtree(directory)
                rates.setdefault((mode, writers), []).append(rate)
    return {key: statistics.median(values) for key, values in rates.items()}


# Fold


def tombstone_cutoff() -> str:
    """Return the cutoff the journal starts with: removals older than the tombstone retention leave none."""
    return format_time(time.time() - JournalPolicy().tombstone_retention)


def fold_production(data_dir: Path, processes: int | None) -> dict:
    log = EventLog(data_dir)
    started = time.perf_counter()
    rebuilt = rebuild.rebuild(log, View(), tombstone_cutoff=tombstone_cutoff(), processes=processes)
    elapsed = time.perf_counter() - started
    log.close()
    return {"per_s": rebuilt.events / elapsed, "processes": rebuilt.processes}


def fold_stdlib_json(data_dir: Path) -> dict:
    """Fold with json.loads instead of orjson, the same CRC check otherwise: the reference."""
    view = View()
    view.prune_tombstones(tombstone_cutoff())
    seed = zlib.crc32(b"{")
    count = 0
    started = time.perf_counter()
    with rebuild.gc_paused(), view.deferred_indexes():
        for segment in sorted(data_dir.glob("log/*/*.jsonl")):
            records = []
            for line in segment.read_bytes().split(b"\n")[:-1]:
                comma = line.find(b",", 7)
                if zlib.crc32(line[comma + 1:], seed) != int(line[7:comma]):
                    raise ValueError(f"bad CRC in {segment}")
                records.append(json.loads(line))
            count += view.fold_batches([records])
    return {"per_s": count / (time.perf_counter() - started), "processes": 1}


# Each measurement of a fold or a start runs in a fresh process, as a gateway
# starts: a process that generated the log first would fork and allocate slower.


def start_once(data_dir: Path) -> dict:
    """Open the journal as the gateway does; return the time and memory."""
    before = _rss_mb()
    started = time.perf_counter()
    journal = Journal(data_dir, OWN_ORIGIN, NodeIdentity(NODE, 2))
    elapsed = time.perf_counter() - started
    after = _rss_mb()
    journal.log.close()
    return {
        "seconds": elapsed, "containers": len(journal.view.containers),
        "snapshot": journal.snapshot is not None, "rss_mb": after, "view_rss_mb": after - before,
    }


MEASURES = {
    "start": start_once,
    "fold": lambda data_dir: fold_production(data_dir, None),
    "fold-one-process": lambda data_dir: fold_production(data_dir, 1),
    "fold-stdlib-json": fold_stdlib_json,
}


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS missing from /proc/self/status")


def measure_in_processes(measure: str, data_dir: Path, repeats: int) -> list[dict]:
    runs = []
    for _ in range(repeats):
        completed = subprocess.run(
            [sys.executable, __file__, "--measure-once", measure, str(data_dir)],
            capture_output=True, text=True, check=True, timeout=600,
        )
        runs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return runs


def write_snapshot_behind_head(data_dir: Path) -> snapshots.Snapshot:
    """Fold all but the last EVENTS_AFTER_SNAPSHOT events and store that view as a snapshot."""
    log = EventLog(data_dir)
    records = sorted(
        (fields for origin in log.origins() for batch in log.origin(origin).read_batches(0) for fields in batch),
        key=lambda fields: fields["ts"],
    )
    view = View()
    view.prune_tombstones(tombstone_cutoff())
    with view.deferred_indexes():
        view.fold_batches([records[:-EVENTS_AFTER_SNAPSHOT]])
    log.close()
    state = view.export_state()
    snapshot = snapshots.Snapshot(
        vector=dict(view.vector), view=state, digest=snapshots.compute_digest(view.vector, state),
        origin=OWN_ORIGIN, node=NODE, created_at=format_time(time.time()),
    )
    return snapshots.write_snapshot(snapshots.snapshot_dir(data_dir), snapshot)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the folded log (default 1,000,000)")
    parser.add_argument("--live", type=int, default=60_000, help="live containers at the end of the log (default 60,000)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds of each append run (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; medians are reported (default 3)")
    parser.add_argument("--no-aliases", action="store_true", help="write added events without aliases (default: two aliases each)")
    parser.add_argument("--measure-once", nargs=2, metavar=("MEASURE", "DATA_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_once:
        measure, data_dir = args.measure_once
        print(json.dumps(MEASURES[measure](Path(data_dir))))
        return 0
    if args.live > ORIGINS * 245:
        parser.error(f"--live {args.live} is more than {ORIGINS} hosts of 245 addresses hold")

    workdir = Path(tempfile.mkdtemp(prefix="flatnet-bench-log-"))
    try:
        return run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> int:
    print(f"appends: {args.repeats} runs of {args.seconds:g} s per mode and writer count ...", file=sys.stderr)
    appends = measure_appends(workdir, args.seconds, args.repeats)

    data_dir = workdir / "history"
    print(f"writing a log of {args.events:,} events ...", file=sys.stderr)
    events, live = write_history(data_dir, args.events, args.live, aliases=not args.no_aliases)
    log_mb = sum(path.stat().st_size for path in data_dir.glob("log/*/*.jsonl")) / 2**20

    print("folding ...", file=sys.stderr)
    production = measure_in_processes("fold", data_dir, args.repeats)
    one_process = measure_in_processes("fold-one-process", data_dir, args.repeats)
    stdlib = measure_in_processes("fold-stdlib-json", data_dir, args.repeats)
    fold_rate = statistics.median(run["per_s"] for run in production)
    fold_one = statistics.median(run["per_s"] for run in one_process)
    fold_stdlib = statistics.median(run["per_s"] for run in stdlib)
    processes = production[0]["processes"]

    print("starting from the full log, then from a snapshot ...", file=sys.stderr)
    full = measure_in_processes("start", data_dir, args.repeats)
    snapshot = write_snapshot_behind_head(data_dir)
    from_snapshot = measure_in_processes("start", data_dir, args.repeats)
    start_full = statistics.median(run["seconds"] for run in full)
    start_snapshot = statistics.median(run["seconds"] for run in from_snapshot)
    view_rss = statistics.median(run["view_rss_mb"] for run in from_snapshot)
    process_rss = statistics.median(run["rss_mb"] for run in from_snapshot)

    rows = [
        ("appends/s, fsync per event, 1 writer", f"{appends['fsync', 1]:,.0f}"),
        ("appends/s, fsync per event, 8 writers", f"{appends['fsync', 8]:,.0f}"),
        ("appends/s, fsync per event, 64 writers", f"{appends['fsync', 64]:,.0f}"),
        ("appends/s, group commit, 1 writer", f"{appends['group', 1]:,.0f}"),
        ("appends/s, group commit, 8 writers", f"{appends['group', 8]:,.0f}"),
        ("appends/s, group commit, 64 writers", f"{appends['group', 64]:,.0f}"),
        ("group commit / fsync per event, 64 writers", f"{appends['group', 64] / appends['fsync', 64]:.1f}x"),
        (f"log folded: events / live containers / MiB", f"{events:,} / {live:,} / {log_mb:,.0f}"),
        ("aliases per added event", "0" if args.no_aliases else "2"),
        (f"fold events/s, orjson, {processes} processes (gateway start)", f"{fold_rate:,.0f}"),
        ("fold events/s, orjson, 1 process", f"{fold_one:,.0f}"),
        ("fold events/s, stdlib json, 1 process (reference)", f"{fold_stdlib:,.0f}"),
        ("orjson / stdlib json, 1 process", f"{fold_one / fold_stdlib:.1f}x"),
        ("start from full log, s", f"{start_full:.2f}"),
        (f"start from snapshot + {EVENTS_AFTER_SNAPSHOT:,} events, s", f"{start_snapshot:.2f}"),
        ("snapshot file, MiB", f"{snapshot.path.stat().st_size / 2**20:.1f}"),
        (f"view RSS with {from_snapshot[0]['containers']:,} containers, MiB (whole process)", f"{view_rss:.0f} ({process_rss:.0f})"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  median of {args.repeats}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f} at the end")

    print(json.dumps({
        "append_fsync_per_s_1": round(appends["fsync", 1]),
        "append_fsync_per_s_8": round(appends["fsync", 8]),
        "append_fsync_per_s_64": round(appends["fsync", 64]),
        "append_group_per_s_1": round(appends["group", 1]),
        "append_group_per_s_8": round(appends["group", 8]),
        "append_group_per_s_64": round(appends["group", 64]),
        "group_over_fsync_64": round(appends["group", 64] / appends["fsync", 64], 1),
        "fold_events": events,
        "aliases_per_added_event": 0 if args.no_aliases else 2,
        "fold_events_per_s": round(fold_rate),
        "fold_processes": processes,
        "fold_one_process_per_s": round(fold_one),
        "fold_stdlib_json_per_s": round(fold_stdlib),
        "orjson_over_stdlib": round(fold_one / fold_stdlib, 1),
        "start_snapshot_s": round(start_snapshot, 3),
        "start_full_log_s": round(start_full, 3),
        "containers": from_snapshot[0]["containers"],
        "view_rss_mb": round(view_rss, 1),
        "process_rss_mb": round(process_rss, 1),
        "load_average": round(load, 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
