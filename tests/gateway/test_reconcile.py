"""The own-host check at start, with the real plugin and real namespaces.

The plugin adds containers while no gateway runs (so their events wait in
the outbox), then some containers lose their namespace or their interface,
as after a reboot or a crash. The gateway that starts next must remove those
with reason ``gone`` and free their addresses, and keep the live one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from flatnet.events import outbox
from flatnet.events.log import OriginLog
from tests.conftest import require_root, skip_or_fail
from tests.gateway.harness import GatewayProcess

pytestmark = pytest.mark.root

HOST_ID = 9
PLUGIN = Path(sys.executable).with_name("flatnet-cni")
PLUGIN_TIMEOUT_SECONDS = 120


class PluginHost:
    """A host namespace where the real plugin runs, with container namespaces on demand."""

    def __init__(self, data_dir: Path):
        self.name = f"fntest-rc-{uuid.uuid4().hex[:8]}"
        self.data_dir = data_dir
        self.namespaces: list[str] = []

    def start(self) -> None:
        self.add_namespace(self.name)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, timeout=30)

    def add_namespace(self, name: str) -> None:
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
        self.namespaces.append(name)

    def container(self) -> str:
        name = f"fntest-rc-{uuid.uuid4().hex[:8]}"
        self.add_namespace(name)
        return f"/run/netns/{name}"

    def remove_container(self, netns: str) -> None:
        name = Path(netns).name
        subprocess.run(["ip", "netns", "del", name], check=True, timeout=30)
        self.namespaces.remove(name)

    def add(self, container_id: str, netns: str, hostname: str) -> dict:
        config = {
            "cniVersion": "1.0.0", "name": "flatnet", "type": "flatnet", "hostId": HOST_ID,
            "ipRange": f"10.100.{HOST_ID}.0/24", "bridge": "fntest0", "mtu": 1400,
            "dataDir": str(self.data_dir),
            # Nothing listens at either: the plugin works in-process and leaves its change in the outbox.
            "socket": str(self.data_dir.parent / "no-gateway.sock"),
            "registryEndpoints": ["http://127.0.0.1:9"],
        }
        environment = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": "ADD", "CNI_CONTAINERID": container_id, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
            "CNI_PATH": str(PLUGIN.parent), "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAME={hostname}",
        }
        completed = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.name}", str(PLUGIN)],
            input=json.dumps(config).encode(), capture_output=True, env=environment, timeout=PLUGIN_TIMEOUT_SECONDS,
        )
        assert completed.returncode == 0, f"ADD of {container_id} failed: {completed.stdout} {completed.stderr}"
        return json.loads(completed.stdout)

    def remove_namespaces(self) -> None:
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)
        self.namespaces.clear()


@pytest.fixture
def plugin_host(tmp_path):
    require_root("the own-host check")
    if not PLUGIN.is_file():
        skip_or_fail(f"the plugin console script {PLUGIN} is not installed; run 'pip install -e .' in the venv")
    host = PluginHost(tmp_path / f"h{HOST_ID}" / "data")
    try:
        host.start()
        yield host
    finally:
        host.remove_namespaces()


@pytest.fixture
def gateway(plugin_host, tmp_path):
    process = GatewayProcess(plugin_host.name, tmp_path, HOST_ID, [])
    with open(process.config, "a") as config:
        # The test's reservations are seconds old; a real check waits a minute.
        config.write("[reconcile]\ngrace_seconds = 0\n")
    assert process.data_dir == plugin_host.data_dir
    try:
        yield process
    finally:
        process.stop()


def reservations(data_dir: Path) -> dict[str, str]:
    found = {}
    for path in (data_dir / "ipam").iterdir():
        if path.name[0].isdigit():
            found[path.name] = json.loads(path.read_text())["containerId"]
    return found


def test_gone_containers_removed_and_freed(plugin_host, gateway):
    alive_netns = plugin_host.container()
    alive = plugin_host.add("alive", alive_netns, hostname="alive")
    rebooted_netns = plugin_host.container()
    plugin_host.add("rebooted", rebooted_netns, hostname="rebooted")
    stripped_netns = plugin_host.container()
    plugin_host.add("stripped", stripped_netns, hostname="stripped")
    assert len(outbox.pending(gateway.data_dir)) == 3
    plugin_host.remove_container(rebooted_netns)
    subprocess.run(["ip", "-n", Path(stripped_netns).name, "link", "del", "eth0"], check=True, timeout=30)

    gateway.start()

    assert [entry["hostname"] for entry in gateway.containers()] == ["alive"]
    alive_ip = alive["ips"][0]["address"].split("/")[0]
    assert reservations(gateway.data_dir) == {alive_ip: "alive"}
    removed = [event for event in OriginLog(gateway.data_dir / "log" / str(HOST_ID), HOST_ID).read() if event.type == "container.removed"]
    assert sorted(event.data["id"] for event in removed) == ["rebooted", "stripped"]
    assert all(event.data["reason"] == "gone" and event.data["createdAt"] for event in removed)
    log = gateway.log_text()
    assert f"network namespace {rebooted_netns} is gone" in log
    assert f"interface eth0 is gone from {stripped_netns}" in log
    assert "own-host check: 1 live, 2 gone and removed, 0 unchecked" in log


def test_restart_keeps_live_containers(plugin_host, gateway):
    netns = plugin_host.container()
    plugin_host.add("steady", netns, hostname="steady")
    gateway.start()
    before = [{k: v for k, v in entry.items() if k != "ttl"} for entry in gateway.containers()]

    gateway.stop()
    gateway.start()

    assert [{k: v for k, v in entry.items() if k != "ttl"} for entry in gateway.containers()] == before
    assert [entry["hostname"] for entry in before] == ["steady"]
    assert "own-host check: 1 live, 0 gone and removed, 0 unchecked" in gateway.log_text()
