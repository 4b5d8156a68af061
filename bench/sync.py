"""Sync between gateways, measured on a real lab: propagation, heal, idle CPU.

Usage: make bench-sync (root; builds and removes its own lab, holding the lab lock).

- propagation: a change posted to h2's gateway until h1's gateway has stored and applied
  it, over Nebula, for --count containers; p50, p99 and max. The probe runs in h1 and posts
  over Nebula, so each figure includes one Nebula hop (about 0.4 ms here) that a plugin on
  h2 does not pay.
- heal: h3's LAN link goes down, a container is added on h3, the link comes back; the time
  from link up until h1 and h2 both list the container.
- idle CPU: the CPU time gateway h1 (with 3 peers) uses over --idle-seconds, as a
  percentage of one core.

It prints a table, then one JSON object as its last line. There is no reference system to
run beside it here, so the figures stand against the targets: p99 <= 25 ms, heal <= 2 s,
idle CPU <= 1 %.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from flatnet.lab import build, teardown

LAB_LOCK = "/run/flatnet-lab-tests.lock"
PROBE = Path(__file__).with_name("sync_probe.py")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _containers(lab, host: str) -> list[dict]:
    response = lab.http_get(host, f"http://10.100.0.{host[1:]}:8080/api/containers", timeout=3)
    return json.loads(response.body)


def measure_propagation(lab, count: int) -> list[float]:
    result = lab.exec("h1", [sys.executable, str(PROBE), "--origin", "2", "--count", str(count)], check=True, timeout=600)
    return json.loads(result.stdout)


def measure_heal(lab) -> float:
    container_id = f"heal{uuid.uuid4().hex}"
    lab.exec("h3", ["ip", "link", "set", "eth0", "down"], check=True)
    try:
        body = json.dumps({"id": container_id, "ip": "10.100.3.99", "hostname": "healed", "hostId": 3,
                           "createdAt": "2026-12-04T10:00:00.000Z"})
        lab.exec("h3", ["curl", "-s", "-m", "3", "-H", "Content-Type: application/json", "--data-binary", body,
                        "http://10.100.0.3:8080/api/containers"], check=True)
        # Long enough for the followers to notice the silence and start backing off.
        time.sleep(3)
    finally:
        lab.exec("h3", ["ip", "link", "set", "eth0", "up"], check=True)
    healed = time.perf_counter()
    deadline = healed + 60
    while time.perf_counter() < deadline:
        if all(any(e["id"] == container_id for e in _containers(lab, host)) for host in ("h1", "h2")):
            return time.perf_counter() - healed
        time.sleep(0.02)
    raise RuntimeError("h1 and h2 did not list h3's container within 60 s of healing")


def measure_idle_cpu(lab, seconds: float) -> float:
    pid = lab.state.members["h1"].processes["gateway"].pid
    before, started = _cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    return 100 * (_cpu_seconds(pid) - before) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure sync between flatnet gateways on a lab.")
    parser.add_argument("--count", type=int, default=200, help="containers whose propagation is timed (default 200)")
    parser.add_argument("--idle-seconds", type=float, default=60, help="how long idle CPU is measured (default 60)")
    args = parser.parse_args()

    with open(LAB_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lab_dir = Path(tempfile.mkdtemp(prefix="flatnet-bench-sync-"))
        try:
            lab = build.up(hosts=4, lab_dir=lab_dir / "lab")
            latencies = measure_propagation(lab, args.count)
            heal = measure_heal(lab)
            idle = measure_idle_cpu(lab, args.idle_seconds)
        finally:
            teardown.down(lab_dir=lab_dir / "lab")
            lab_dir.rmdir()

    figures = {
        "propagation_p50_ms": round(statistics.median(latencies), 2),
        "propagation_p99_ms": round(_percentile(latencies, 0.99), 2),
        "propagation_max_ms": round(max(latencies), 2),
        "heal_converge_s": round(heal, 3),
        "idle_cpu_pct": round(idle, 3),
        "containers": len(latencies),
        "idle_seconds": args.idle_seconds,
    }
    targets = {"propagation_p99_ms": "<= 25", "heal_converge_s": "<= 2", "idle_cpu_pct": "<= 1"}
    print(f"{'figure':<22} {'value':>10}  target")
    for name, value in figures.items():
        print(f"{name:<22} {value:>10}  {targets.get(name, '')}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
