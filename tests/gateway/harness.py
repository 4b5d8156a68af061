"""Real gateways in a throwaway network namespace, for integration tests.

Everything runs inside one namespace the test creates: the gateways' API and
proxy listeners on its loopback, and stand-in containers as web servers bound
to 10.100.<host>.<n> addresses on that namespace's loopback. Nothing is added
to the root namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

GATEWAY_START_SECONDS = 15


def netns_run(netns: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net=/run/netns/{netns}", *argv], **kwargs)


def http(netns: str, method: str, url: str, *, body: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
    """Send one request from inside ``netns`` with curl; return status and body."""
    argv = ["curl", "-s", "-m", "5", "-X", method, "-o", "-", "-w", "\n%{http_code}"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    result = netns_run(netns, [*argv, url], capture_output=True, text=True, timeout=10)
    text, _, status = result.stdout.rpartition("\n")
    return int(status or 0), text


def wait_until(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class GatewayProcess:
    """One `flatnet gateway` process in ``netns``, API on 127.0.<host>.1:8080."""

    def __init__(
        self, netns: str, workdir: Path, host_id: int, peers: list[int], *, ttl: float = 300, heartbeat: float = 1, **settings,
    ):
        self.netns = netns
        self.host_id = host_id
        self.dir = workdir / f"h{host_id}"
        self.data_dir = self.dir / "data"
        self.config = self.dir / "gateway.toml"
        self.log_path = self.dir / "gateway.log"
        self.access_log = self.dir / "access.log"
        self.api = f"http://127.0.{host_id}.1:8080"
        self.proxy = f"http://127.0.{host_id}.1:8000"
        self.process: subprocess.Popen | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"host_id = {host_id}",
            f'data_dir = "{self.data_dir}"',
            f'api_listen = "127.0.{host_id}.1:8080"',
            f'proxy_listen = "127.0.{host_id}.1:8000"',
            f'access_log = "{self.access_log}"',
            f"ttl = {ttl}",
            f"heartbeat = {heartbeat}",
        ]
        # Top-level keys must come before the [[peers]] tables.
        lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
        for peer in peers:
            lines += ["[[peers]]", f"host_id = {peer}", f'api = "http://127.0.{peer}.1:8080"']
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns}", sys.executable, "-m", "flatnet",
                 "--log-level", "DEBUG", "gateway", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_until(lambda: self._healthy(), GATEWAY_START_SECONDS, f"gateway {self.host_id} to answer /api/health")

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"gateway {self.host_id} exited with {self.process.returncode}:\n{self.log_text()}")
        status, _ = http(self.netns, "GET", f"{self.api}/api/health")
        return status == 200

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        self.process = None

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def containers(self) -> list[dict]:
        status, body = http(self.netns, "GET", f"{self.api}/api/containers")
        assert status == 200, body
        return json.loads(body)

    def health(self) -> dict:
        status, body = http(self.netns, "GET", f"{self.api}/api/health")
        assert status == 200, body
        return json.loads(body)

    def add_container(
        self, name: str, ip: str, ports: list[int] | None = None, container_id: str | None = None, aliases: list[str] | None = None,
    ) -> dict:
        body = {
            "eventId": str(uuid.uuid4()),
            "id": container_id or uuid.uuid4().hex,
            "ip": ip,
            "hostname": name,
            "ports": ports or [],
            "hostId": self.host_id,
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "ifname": "eth0",
        }
        if aliases is not None:
            body["aliases"] = aliases
        status, text = http(self.netns, "POST", f"{self.api}/api/containers", body=body)
        assert status == 201, f"POST /api/containers answered {status}: {text}"
        return body

    def remove_container(self, container_id: str) -> None:
        status, text = http(self.netns, "DELETE", f"{self.api}/api/containers/{container_id}?eventId={uuid.uuid4()}")
        assert status == 200, f"DELETE answered {status}: {text}"


class WebServer:
    """A stand-in container: a web server on ``ip:port`` inside ``netns`` answering its name."""

    def __init__(self, netns: str, workdir: Path, name: str, ip: str, port: int = 80):
        self.root = workdir / f"www-{name}"
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "index.html").write_text(f"{name}\n")
        netns_run(netns, ["ip", "addr", "add", f"{ip}/32", "dev", "lo"], check=True)
        self.process = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{netns}", sys.executable, "-m", "http.server", str(port),
             "--bind", ip, "--directory", str(self.root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_until(lambda: http(netns, "GET", f"http://{ip}:{port}/")[0] == 200, 10, f"web server {name} on {ip}:{port}")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)


def follower_ports(gateway: GatewayProcess, peer: int) -> list[int]:
    """Return the local ports of ``gateway``'s established connections to ``peer``'s API."""
    result = netns_run(
        gateway.netns, ["ss", "-tnpH", "state", "established", "dst", f"127.0.{peer}.1:8080"],
        capture_output=True, text=True, check=True,
    )
    return [int(line.split()[2].rsplit(":", 1)[1]) for line in result.stdout.splitlines() if f"pid={gateway.process.pid}," in line]


def is_following(gateway: GatewayProcess, peers: list[int]) -> bool:
    states = gateway.health()["peers"]
    return all(states[str(peer)]["state"] == "connected" for peer in peers)


def stall_streams(gateway: GatewayProcess, peers: list[int], *, pooled_too: bool = False) -> list[list[str]]:
    """Drop what ``peers`` send on ``gateway``'s event streams, so its view of them goes stale.

    The follower notices only after 3 heartbeats without a frame, then
    reconnects on a new port and catches up. With ``pooled_too`` the peers'
    idle keep-alive connections are stalled as well, for a test whose other
    requests to the peers may have left one open. Returns the rules for :func:`unstall`.
    """
    rules = []
    for peer in peers:
        for port in follower_ports(gateway, peer):
            rule = ["INPUT", "-p", "tcp", "-s", f"127.0.{peer}.1", "--sport", "8080", "--dport", str(port), "-j", "DROP"]
            netns_run(gateway.netns, ["iptables", "-A", *rule], check=True)
            rules.append(rule)
    found = len(rules) >= len(peers) if pooled_too else len(rules) == len(peers)
    assert found, f"found {len(rules)} connections of gateway {gateway.host_id} to peers {peers} to stall"
    return rules


def unstall(netns: str, rules: list[list[str]]) -> None:
    for rule in rules:
        netns_run(netns, ["iptables", "-D", *rule], check=True)
