"""SIGKILL inside ADD and DEL, of the plugin and of the gateway serving the fast path.

After each kill the runtime's part is played: DEL, then the gateway restarts
(running its start-up reconcile). Then nothing may be left: no reservation, no
interface, no registry entry, and no address handed out twice.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from flatnet.cni import faults, spec
from tests.cni.conftest import FAST, IN_PROCESS, PATHS, Plugin, container_address, link_names
from tests.gateway.harness import wait_until

pytestmark = pytest.mark.root


@pytest.fixture(params=PATHS)
def crash_plugin(request, plugin_hosts, tmp_path):
    # Both paths run on the host with a gateway: the in-process path posts its
    # changes to that gateway's API, so the registry can be checked on both.
    plugin = Plugin(plugin_hosts[FAST], request.param, tmp_path / "data")
    yield plugin
    plugin.remove_containers()
    gateway = plugin.host.gateway
    if gateway.process is None or gateway.process.poll() is not None:
        gateway.stop()
        gateway.start()


def restart_gateway(plugin: Plugin) -> None:
    """Start the gateway again, whether it was killed or not, so its start-up reconcile runs."""
    plugin.host.gateway.stop()
    plugin.host.gateway.start()


def assert_nothing_left(plugin: Plugin, container_id: str, netns: str, veths_before: list[str]) -> None:
    assert container_id not in plugin.reservations()
    assert "eth0" not in link_names(Path(netns).name)
    assert plugin.host.host_veths() == veths_before
    registry = plugin.host.gateway.containers()
    assert container_id not in [entry["id"] for entry in registry]

    # The next container gets an address nobody else holds.
    newcomer, newcomer_netns = uuid.uuid4().hex, plugin.container()
    address = container_address(plugin.add(newcomer, newcomer_netns)).split("/")[0]
    holders = [cid for cid, held in plugin.reservations().items() if held == address]
    assert holders == [newcomer]
    holders_in_registry = wait_until(
        lambda: [entry["id"] for entry in plugin.host.gateway.containers() if entry["ip"] == address], 10, f"{address} in the registry",
    )
    assert holders_in_registry == [newcomer]
    plugin.delete(newcomer, newcomer_netns)


def assert_killed(plugin: Plugin, run, command: str) -> None:
    if plugin.path == IN_PROCESS:
        assert run.returncode == -9, run.stdout + run.stderr
        assert run.stdout == ""
        return
    # The socket closes while the killed gateway exits, a moment before it can be reaped.
    assert plugin.host.gateway.process.wait(timeout=30) == -9
    if command == "ADD":
        assert run.returncode == 1
        assert run.document()["code"] == spec.TRY_AGAIN_LATER
    else:
        # A DEL the gateway dropped is retried in-process, where the same
        # fault strikes again if the retry gets that far.
        assert run.returncode in (0, -9), run.stdout + run.stderr
        assert run.stdout == ""


@pytest.mark.parametrize("point", faults.ADD_POINTS)
def test_kill_inside_add_leaves_nothing_after_del(crash_plugin, point):
    plugin = crash_plugin
    container_id, netns = uuid.uuid4().hex, plugin.container()
    veths_before = plugin.host.host_veths()

    killed = plugin.run("ADD", container_id, netns, fault=f"{point}:kill")
    assert_killed(plugin, killed, "ADD")
    if plugin.path == FAST:
        restart_gateway(plugin)
    plugin.delete(container_id, netns)
    restart_gateway(plugin)

    assert_nothing_left(plugin, container_id, netns, veths_before)


@pytest.mark.parametrize("point", faults.DEL_POINTS)
def test_kill_inside_del_leaves_nothing_after_del(crash_plugin, point):
    plugin = crash_plugin
    container_id, netns = uuid.uuid4().hex, plugin.container()
    veths_before = plugin.host.host_veths()
    plugin.add(container_id, netns)

    killed = plugin.run("DEL", container_id, netns, fault=f"{point}:kill")
    assert_killed(plugin, killed, "DEL")
    if plugin.path == FAST:
        restart_gateway(plugin)
    plugin.delete(container_id, netns)
    restart_gateway(plugin)

    assert_nothing_left(plugin, container_id, netns, veths_before)
