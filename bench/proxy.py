"""The gateway's proxy against nginx, measured with wrk on one machine.

Usage: make bench-proxy (root: it creates a network namespace of its own).

Everything runs inside a namespace that the benchmark creates and deletes.
A static backend (nginx, one worker, serving a --body-bytes file) listens on
the container address 10.100.1.10 on the namespace's loopback. An nginx
reverse proxy has upstream keep-alive and --workers worker processes. A
flatnet gateway with ``proxy_workers = --workers`` routes
``Host: bench-web.flatnet`` to that container address, with its decision log
and access log on. In each of --runs
rounds, wrk measures (a) the backend directly, (b) nginx and (c) the gateway,
one after the other, for --seconds each. Medians of the rounds are reported.

It prints a table, then one JSON object as its last line. Target: gateway
requests per second at least 0.5 of nginx's, with p99 latency at most 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

CONTAINER_IP = "10.100.1.10"
BACKEND_PORT = 8080
NGINX_PORT = 18081
GATEWAY_PORT = 18082
API = "127.0.1.1:8080"
NAME = "bench-web"
HOST = f"{NAME}.flatnet"

_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_P99 = re.compile(r"^\s+99%\s+([0-9.]+)(us|ms|s)\s*$", re.MULTILINE)
_ERRORS = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)|Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def _parse_wrk(output: str) -> tuple[float, float, int]:
    """Return requests per second, p99 latency in ms and the count of errors in wrk's output."""
    rps = _RPS.search(output)
    p99 = _P99.search(output)
    if rps is None or p99 is None:
        raise RuntimeError(f"wrk printed no rate or p99 latency:\n{output}")
    value, unit = float(p99.group(1)), p99.group(2)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    p99_ms = value * scale
    errors = 0
    for match in _ERRORS.finditer(output):
        errors += sum(int(group) for group in match.groups() if group)
    return float(rps.group(1)), p99_ms, errors


class Namespace:
    """A network namespace of the benchmark's own, and the processes started in it."""

    def __init__(self) -> None:
        self.name = f"flatnet-bench-{uuid.uuid4().hex[:6]}"
        self.processes: list[subprocess.Popen] = []
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.run(["ip", "link", "set", "lo", "up"])
        self.run(["ip", "addr", "add", f"{CONTAINER_IP}/32", "dev", "lo"])

    def argv(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.name}", *argv]

    def run(self, argv: list[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(argv), check=check, capture_output=True, text=True, timeout=timeout)

    def start(self, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as output:
            process = subprocess.Popen(
                self.argv(argv), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def _nginx_config(work: Path, name: str, workers: int, server: str) -> Path:
    path = work / f"{name}.conf"
    path.write_text(f"""
worker_processes {workers};
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {server}
}}
""")
    return path


def _wait_for(namespace: Namespace, url: str, headers: dict[str, str], what: str) -> None:
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", url]
    for name, value in headers.items():
        argv[1:1] = ["-H", f"{name}: {value}"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if namespace.run(argv, check=False).stdout == "200":
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer 200 on {url} within 30 s")


def start_everything(namespace: Namespace, work: Path, args: argparse.Namespace) -> None:
    # nginx's workers run as an unprivileged user, which must read the page.
    work.chmod(0o755)
    www = work / "www"
    www.mkdir(mode=0o755)
    (www / "index.html").write_bytes(b"x" * args.body_bytes)
    backend = _nginx_config(work, "backend", 1, f"server {{ listen {CONTAINER_IP}:{BACKEND_PORT}; root {www}; }}")
    proxy = _nginx_config(work, "nginx-proxy", args.workers, f"""
    upstream backend {{ server {CONTAINER_IP}:{BACKEND_PORT}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{NGINX_PORT} reuseport;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}""")
    namespace.start(["nginx", "-c", str(backend), "-p", str(work)], work / "backend.log")
    namespace.start(["nginx", "-c", str(proxy), "-p", str(work)], work / "nginx-proxy.log")

    config = work / "gateway.toml"
    config.write_text("\n".join([
        "host_id = 1",
        f'data_dir = "{work / "data"}"',
        f'api_listen = "{API}"',
        f'proxy_listen = "127.0.0.1:{GATEWAY_PORT}"',
        f'access_log = "{work / "access.log"}"',
        f"proxy_workers = {args.workers}",
    ]) + "\n")
    namespace.start(
        [sys.executable, "-m", "flatnet", "--log-level", "INFO", "gateway", "--config", str(config)], work / "gateway.log",
    )
    _wait_for(namespace, f"http://{CONTAINER_IP}:{BACKEND_PORT}/", {}, "the backend")
    _wait_for(namespace, f"http://127.0.0.1:{NGINX_PORT}/", {}, "nginx")
    _wait_for(namespace, f"http://{API}/api/health", {}, "the gateway")
    body = json.dumps({
        "id": uuid.uuid4().hex, "ip": CONTAINER_IP, "hostname": NAME, "ports": [BACKEND_PORT], "hostId": 1,
        "createdAt": "2026-01-01T00:00:00.000Z",
    })
    posted = namespace.run([
        "curl", "-s", "-m", "5", "-w", "\n%{http_code}", "-H", "Content-Type: application/json", "--data-binary", body,
        f"http://{API}/api/containers",
    ])
    if not posted.stdout.endswith("\n201"):
        raise RuntimeError(f"the gateway did not register the container: {posted.stdout}")
    # Every worker must have the container in its view before it is measured.
    for _ in range(args.workers * 20):
        _wait_for(namespace, f"http://127.0.0.1:{GATEWAY_PORT}/", {"Host": HOST}, "the gateway's proxy")


def measure(namespace: Namespace, url: str, host: str | None, args: argparse.Namespace) -> tuple[float, float, int]:
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.seconds}s", "--latency"]
    if host is not None:
        argv += ["-H", f"Host: {host}"]
    result = namespace.run([*argv, url], timeout=args.seconds + 60)
    return _parse_wrk(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="nginx worker processes and gateway proxy processes (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="rounds of (direct, nginx, gateway) (default 3)")
    parser.add_argument("--seconds", type=int, default=8, help="duration of each wrk run in seconds (default 8)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--body-bytes", type=int, default=1024, help="size of the static response body (default 1024)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/proxy.py needs root to create its network namespace; run it with sudo", file=sys.stderr)
        return 1
    missing = [tool for tool in ("wrk", "nginx", "nsenter", "curl", "ip") if shutil.which(tool) is None]
    if missing:
        print(f"bench/proxy.py needs {', '.join(missing)}; run 'make deps'", file=sys.stderr)
        return 1

    targets = {
        "direct": (f"http://{CONTAINER_IP}:{BACKEND_PORT}/", None),
        "nginx": (f"http://127.0.0.1:{NGINX_PORT}/", HOST),
        "gateway": (f"http://127.0.0.1:{GATEWAY_PORT}/", HOST),
    }
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in targets}
    with tempfile.TemporaryDirectory(prefix="flatnet-bench-proxy-") as scratch:
        work = Path(scratch)
        namespace = Namespace()
        try:
            start_everything(namespace, work, args)
            for round_number in range(1, args.runs + 1):
                for name, (url, host) in targets.items():
                    results[name].append(measure(namespace, url, host, args))
                    rps, p99, errors = results[name][-1]
                    print(f"round {round_number}  {name:8} {rps:10.0f} req/s  p99 {p99:6.2f} ms  errors {errors}", flush=True)
            decisions = sum(
                1 for path in (work / "data" / "decisions").glob("decisions*.jsonl*") for _ in open(path, "rb")
            )
        finally:
            namespace.close()

    medians = {
        name: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), sum(r[2] for r in runs))
        for name, runs in results.items()
    }
    print()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, {args.body_bytes}-byte body, "
          f"{args.workers} nginx workers / gateway processes, median of {args.runs} runs")
    print(f"{'target':10} {'req/s':>10} {'p99 ms':>8} {'errors':>7} {'vs nginx':>9}")
    for name, (rps, p99, errors) in medians.items():
        print(f"{name:10} {rps:10.0f} {p99:8.2f} {errors:7d} {rps / medians['nginx'][0]:9.2f}")
    print(f"decision records written: {decisions}")
    summary = {
        "direct_rps": round(medians["direct"][0]),
        "nginx_rps": round(medians["nginx"][0]),
        "gateway_rps": round(medians["gateway"][0]),
        "nginx_p99_ms": round(medians["nginx"][1], 3),
        "gateway_p99_ms": round(medians["gateway"][1], 3),
        "ratio_vs_nginx": round(medians["gateway"][0] / medians["nginx"][0], 3),
        "p99_vs_nginx": round(medians["gateway"][1] / medians["nginx"][1], 3),
        "workers": args.workers,
        "runs": args.runs,
        "seconds": args.seconds,
        "connections": args.connections,
        "decision_records": decisions,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
