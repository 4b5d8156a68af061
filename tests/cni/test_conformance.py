"""The CNI conformance matrix: every command in every cniVersion, on both paths.

Each cell runs the same scenario on the fast path and in-process, each with a
fresh data directory, checks what the specification asks of each result, and
checks that the two results are equal up to the random parts (MACs, host veth
names, namespace names).
"""

from __future__ import annotations

import json
import uuid

import pytest

from flatnet.cni import spec
from tests.cni.conftest import FAST, IN_PROCESS, PATHS, Plugin, PluginRun, normalized

pytestmark = pytest.mark.root

VERSIONS = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]
COMMANDS = ["ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS"]


def scenario(plugin: Plugin, command: str, version: str) -> PluginRun:
    """Run ``command`` as a runtime would after whatever it needs first, and return its run."""
    container_id = f"conformance{uuid.uuid4().hex[:8]}"
    if command == "VERSION":
        return plugin.run("VERSION", stdin=json.dumps({"cniVersion": version}).encode())
    if command in ("GC", "STATUS"):
        plugin.add(f"{container_id}-kept", plugin.container(), version="1.1.0")
        plugin.add(f"{container_id}-stale", plugin.container(), version="1.1.0")
        valid = [{"containerID": f"{container_id}-kept", "ifname": "eth0"}]
        return plugin.run(command, version=version, **{"cni.dev/valid-attachments": valid})

    netns = plugin.container()
    if command == "ADD":
        return plugin.run("ADD", container_id, netns, version=version)
    result = plugin.add(container_id, netns, version="1.0.0" if version == "1.1.0" else version)
    return plugin.run(command, container_id, netns, version=version, prevResult=result)


def expect(command: str, version: str, run: PluginRun, plugin: Plugin) -> None:
    """What the specification asks of ``run``."""
    allowed = spec.version_tuple(version) >= spec.version_tuple(spec.FIRST_VERSION.get(command, "0.1.0"))
    if not allowed:
        assert run.returncode == 1
        assert run.document()["code"] == spec.INCOMPATIBLE_VERSION
        assert run.document()["cniVersion"] == version
        return
    assert run.returncode == 0, run.stdout + run.stderr

    if command == "VERSION":
        assert run.document() == {"cniVersion": version, "supportedVersions": list(spec.SUPPORTED_VERSIONS)}
    elif command == "ADD":
        result = run.document()
        assert result["cniVersion"] == version
        container = result["interfaces"][result["ips"][0]["interface"]]
        assert container["name"] == "eth0"
        assert container["sandbox"]
        assert container["mac"]
        assert ("version" in result["ips"][0]) is (spec.version_tuple(version) < (1, 0, 0))
        assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.100.7.1"}]
    else:
        assert run.stdout == ""
    if command == "GC":
        assert [container_id[-5:] for container_id in plugin.reservations()] == ["-kept"]


@pytest.fixture
def pair(plugin_hosts, tmp_path):
    plugins = {path: Plugin(plugin_hosts[path], path, tmp_path / path) for path in PATHS}
    yield plugins
    for plugin in plugins.values():
        plugin.remove_containers()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("command", COMMANDS)
def test_conformance(pair, command, version):
    gateway = pair[FAST].host.gateway
    served_before = gateway.log_text().count(f"fast path {command} ")

    runs = {path: scenario(plugin, command, version) for path, plugin in pair.items()}

    for path, run in runs.items():
        expect(command, version, run, pair[path])
    assert normalized(runs[FAST].stdout) == normalized(runs[IN_PROCESS].stdout)
    assert runs[FAST].returncode == runs[IN_PROCESS].returncode
    served = gateway.log_text().count(f"fast path {command} ") - served_before
    # VERSION never reaches the gateway; every other command does on the fast path.
    assert served == (0 if command == "VERSION" else 1)
