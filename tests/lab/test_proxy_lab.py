"""The proxy across hosts on a 3-host lab: WebSocket, chunked upload, and a container that moved."""

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from flatnet.lab.namespaces import call_in
from tests.conftest import require_root
from tests.gateway.harness import wait_until
from tests.lab.conftest import built_lab
from tests.lab.test_end_to_end import LAB_TOOLS

pytestmark = pytest.mark.lab

BACKEND = Path(__file__).with_name("backend.py")
GATEWAY_1 = "http://198.18.0.1"


def _require_lab_tools() -> None:
    require_root("lab proxy tests", tools=(*LAB_TOOLS, "iptables", "ss"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _require_lab_tools()
    with built_lab(tmp_path_factory, hosts=3) as built:
        yield built


def _hosts_of(lab, host: str, name: str) -> list[int]:
    result = lab.exec(host, ["curl", "-s", "-m", "3", f"http://10.100.0.{host[1:]}:8080/api/containers"], check=True)
    return [entry["hostId"] for entry in json.loads(result.stdout) if entry["hostname"] == name]


def _records(lab, host: str) -> list[dict]:
    directory = lab.paths.data_dir(host) / "decisions"
    found = []
    for path in sorted(directory.glob("decisions*.jsonl*")):
        found += [json.loads(line) for line in path.read_text().splitlines()]
    return found


def _record(lab, host: str, request_id: str) -> dict:
    return wait_until(
        lambda: next((r for r in _records(lab, host) if r["request_id"] == request_id), None), 5, f"record {request_id} on {host}"
    )


class ContainerBackend:
    """backend.py serving in the network namespace of a fresh container on ``host``."""

    def __init__(self, lab, host: str, name: str):
        self.lab = lab
        self.host = host
        self.name = name
        # The container only holds its namespace; port 80 is left to the backend.
        lab.podman(host, "run", "-d", "--name", name, "flatnet-lab/web", "sleep", "3600")
        self.address = lab.container_address(host, name)
        sandbox = lab.podman(host, "inspect", "--format", "{{.NetworkSettings.SandboxKey}}", name).stdout.strip()
        self.process = subprocess.Popen(
            ["nsenter", f"--net={sandbox}", sys.executable, str(BACKEND), self.address, "80", name],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_until(
            lambda: lab.exec(host, ["curl", "-s", "-m", "2", f"http://{self.address}/"]).stdout == f"{name}\n",
            15, f"the backend of {name}",
        )

    def close(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)
        self.lab.podman(self.host, "rm", "-f", "-t", "0", self.name)


def _in_client(lab, coroutine_function):
    """Run an asyncio client in the LAN client's namespace and return its result."""
    return call_in(lab.member("client").netns, lambda: asyncio.run(coroutine_function()))


def _connected(lab, host: str, peers: list[int]) -> bool:
    result = lab.exec(host, ["curl", "-s", "-m", "3", f"http://10.100.0.{host[1:]}:8080/api/health"], check=True)
    states = json.loads(result.stdout)["peers"]
    return all(states[str(peer)]["state"] == "connected" for peer in peers)


def _stall_streams(lab, host: str, peers: list[int]) -> list[list[str]]:
    """Drop what ``peers`` send on ``host``'s event streams, so its view of them goes stale.

    Its followers notice after 3 heartbeats (15 s in the lab), reconnect and catch up.
    """
    pid = lab.state.members[host].processes["gateway"].pid
    rules = []
    for peer in peers:
        listing = lab.exec(host, ["ss", "-tnpH", "state", "established", "dst", f"10.100.0.{peer}:8080"], check=True).stdout
        for line in listing.splitlines():
            if f"pid={pid}," in line:
                port = line.split()[2].rsplit(":", 1)[1]
                rule = ["INPUT", "-p", "tcp", "-s", f"10.100.0.{peer}", "--sport", "8080", "--dport", port, "-j", "DROP"]
                lab.exec(host, ["iptables", "-A", *rule], check=True)
                rules.append(rule)
    assert len(rules) == len(peers), f"found {len(rules)} event streams of {host} to stall"
    return rules


# First in the module: it needs each follower's stream to be h1's only connection to its peer,
# before any request has left a pooled proxy connection behind.
def test_container_moved_from_h2_to_h3_while_h1_is_stale(lab):
    name = f"mover-{uuid.uuid4().hex[:6]}"
    lab.run_web("h2", name)
    wait_until(lambda: _hosts_of(lab, "h1", name) == [2], 10, f"{name} on gateway 1")

    wait_until(lambda: _connected(lab, "h1", [2, 3]), 30, "gateway 1 to follow gateways 2 and 3")
    rules = _stall_streams(lab, "h1", [2, 3])
    try:
        lab.podman("h2", "rm", "-f", "-t", "0", name)
        lab.run_web("h3", name)
        wait_until(lambda: _hosts_of(lab, "h2", name) == [3], 10, f"the move seen by gateway 2")
        stale = _hosts_of(lab, "h1", name)
        result = lab.exec(
            "client", ["curl", "-s", "-m", "10", "-D", "-", "-H", f"Host: {name}.flatnet", f"{GATEWAY_1}/"], check=True,
        )
    finally:
        for rule in rules:
            lab.exec("h1", ["iptables", "-D", *rule], check=True)
        lab.podman("h3", "rm", "-f", "-t", "0", name)

    print(result.stdout)
    assert stale == [2]
    head, _, body = result.stdout.partition("\n\n")
    assert head.startswith("HTTP/1.1 200")
    assert body == name
    request_id = next(line.split(": ", 1)[1] for line in head.splitlines() if line.startswith("X-Request-Id"))
    record = _record(lab, "h1", request_id)
    assert record["decision"] == "stale-retry"
    assert record["retried_from"] == 2
    assert record["owner"] == 3


def test_websocket_across_two_hosts(lab):
    name = f"chat-{uuid.uuid4().hex[:6]}"
    backend = ContainerBackend(lab, "h2", name)
    try:
        wait_until(lambda: _hosts_of(lab, "h1", name) == [2], 10, f"{name} on gateway 1")

        async def talk():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"{GATEWAY_1}/ws", headers={"Host": f"{name}.flatnet"}) as socket:
                    replies = []
                    for text in ("one", "two"):
                        await socket.send_str(text)
                        replies.append(await socket.receive_str(timeout=10))
                    await asyncio.sleep(2)
                    await socket.send_str("after a pause")
                    replies.append(await socket.receive_str(timeout=10))
                    return replies

        replies = _in_client(lab, talk)
    finally:
        backend.close()

    assert replies == [f"{name}: one", f"{name}: two", f"{name}: after a pause"]


def test_chunked_upload_across_two_hosts(lab):
    name = f"sink-{uuid.uuid4().hex[:6]}"
    backend = ContainerBackend(lab, "h2", name)
    pieces = [os.urandom(size) for size in (10, 70_000, 1 << 20, 3)]
    try:
        wait_until(lambda: _hosts_of(lab, "h1", name) == [2], 10, f"{name} on gateway 1")

        async def upload():
            async def body():
                for piece in pieces:
                    yield piece

            async with aiohttp.ClientSession() as session:
                async with session.post(f"{GATEWAY_1}/upload", data=body(), headers={"Host": f"{name}.flatnet"}) as response:
                    return response.status, response.headers["X-Request-Id"], await response.json()

        status, request_id, report = _in_client(lab, upload)
    finally:
        backend.close()

    assert status == 200
    assert report["length"] == sum(map(len, pieces))
    assert report["sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert report["transferEncoding"] == "chunked"
    assert _record(lab, "h1", request_id)["decision"] == "peer"
    assert _record(lab, "h2", request_id)["hop"] == 1
