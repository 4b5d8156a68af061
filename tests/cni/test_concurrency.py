"""100 ADDs at once on one host, half on the fast path and half in-process, then 100 DELs."""

from __future__ import annotations

import concurrent.futures
import uuid
from pathlib import Path

import pytest

from flatnet.cni.store import DirectoryStore
from tests.cni.conftest import FAST, IN_PROCESS, Plugin, container_address, ipv4_addresses
from tests.gateway.harness import wait_until

pytestmark = pytest.mark.root

CONTAINERS = 100


@pytest.fixture
def plugins(plugin_hosts, tmp_path):
    # One data directory for both paths: they share the store and its lock.
    data_dir = tmp_path / "data"
    pair = {path: Plugin(plugin_hosts[FAST], path, data_dir) for path in (FAST, IN_PROCESS)}
    yield pair
    for plugin in pair.values():
        plugin.remove_containers()


def test_concurrent_adds_get_distinct_addresses(plugins):
    work = []
    for number in range(CONTAINERS):
        plugin = plugins[FAST if number % 2 == 0 else IN_PROCESS]
        work.append((plugin, f"many{number:03d}-{uuid.uuid4().hex[:8]}", plugin.container()))

    with concurrent.futures.ThreadPoolExecutor(CONTAINERS) as pool:
        runs = list(pool.map(lambda item: item[0].run("ADD", item[1], item[2], args=f"K8S_POD_NAME={item[1][:7]}"), work))

    failures = [run.stdout + run.stderr for run in runs if run.returncode != 0]
    assert failures == []
    addresses = {container_id: container_address(run.document()).split("/")[0] for (_, container_id, _), run in zip(work, runs)}
    assert len(set(addresses.values())) == CONTAINERS

    plugin = plugins[FAST]
    assert plugin.reservations() == addresses
    for (_, container_id, netns), run in zip(work, runs):
        assert ipv4_addresses(Path(netns).name, "eth0") == [container_address(run.document())]
    with DirectoryStore(plugin.data_dir) as store:
        assert str(store.cursor()) in addresses.values()
    def registry() -> dict[str, str]:
        return {entry["id"]: entry["ip"] for entry in plugin.host.gateway.containers() if entry["id"] in addresses}

    # The gateway appends what the plugins announced a moment after they return.
    wait_until(lambda: registry() == addresses, 30, "every container in the registry")
    assert registry() == addresses
    # Under this load a fast-path plugin may find the gateway too busy to take
    # its request in time. It then does the work itself, so only most are served.
    served = sum(plugin.used_fast_path("ADD", container_id) for (_, container_id, _) in work[::2])
    print(f"the gateway served {served} of {CONTAINERS // 2} fast-path ADDs")
    assert served > 0

    with concurrent.futures.ThreadPoolExecutor(CONTAINERS) as pool:
        deletions = list(pool.map(lambda item: item[0].run("DEL", item[1], item[2]), work))

    assert [run.stdout + run.stderr for run in deletions if run.returncode != 0] == []
    assert plugin.reservations() == {}
    wait_until(lambda: registry() == {}, 30, "every container to leave the registry")
    with DirectoryStore(plugin.data_dir) as store:
        assert {str(address) for address in store.released()} == set(addresses.values())
