import os
import shutil
import subprocess
import uuid

import pytest

from tests.gateway.harness import GatewayProcess, WebServer


def _require_root() -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "gateway integration tests need root to create a network namespace"
    elif shutil.which("nsenter") is None or shutil.which("curl") is None:
        reason = "gateway integration tests need nsenter and curl"
    if reason is None:
        return
    if os.environ.get("FLATNET_REQUIRE_LAB") == "1":
        pytest.fail(reason + " (FLATNET_REQUIRE_LAB=1 forbids skipping)")
    pytest.skip(reason)


@pytest.fixture
def netns():
    _require_root()
    name = f"fntest-gw-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def fleet(netns, tmp_path):
    """Start gateways in ``netns``: fleet(ids, ttl=..., heartbeat=...) -> {id: GatewayProcess}."""
    started: list[GatewayProcess] = []
    servers: list[WebServer] = []

    def start(host_ids=(1, 2), **options) -> dict[int, GatewayProcess]:
        gateways = {}
        for host_id in host_ids:
            peers = [other for other in host_ids if other != host_id]
            gateway = GatewayProcess(netns, tmp_path, host_id, peers, **options)
            gateway.start()
            started.append(gateway)
            gateways[host_id] = gateway
        return gateways

    def web(name: str, ip: str, port: int = 80) -> WebServer:
        server = WebServer(netns, tmp_path, name, ip, port)
        servers.append(server)
        return server

    start.web = web
    try:
        yield start
    finally:
        for server in servers:
            server.stop()
        for gateway in started:
            gateway.stop()
