"""The real plugin binary, run in throwaway network namespaces.

Every plugin run happens inside a "host" namespace that the fixture creates
(through nsenter), with further namespaces standing in for containers. Nothing
is configured in the namespace the tests run in, and the only endpoint the
plugin is given is 127.0.0.1:9 inside the host namespace, where nothing listens.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from flatnet.cni import spec
from flatnet.events import outbox
from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED
from tests.conftest import require_root, skip_or_fail

pytestmark = pytest.mark.root

PLUGIN = Path(sys.executable).with_name("flatnet-cni")
HOST_ID = 7
GATEWAY = f"10.100.{HOST_ID}.1"
# Not flatnet's default name or MTU, so the checks prove the config is applied
# and a bridge leaked into the test runner's namespace would be recognisable.
BRIDGE = "fntest0"
MTU = 1400
PLUGIN_TIMEOUT_SECONDS = 60
VERSIONS = ["0.4.0", "1.0.0"]


@dataclasses.dataclass
class PluginRun:
    returncode: int
    stdout: str
    stderr: str

    def document(self) -> dict:
        """Parse stdout, which must hold exactly one JSON document."""
        decoder = json.JSONDecoder()
        text = self.stdout.strip()
        assert text, f"plugin printed nothing on stdout; stderr: {self.stderr}"
        document, end = decoder.raw_decode(text)
        assert text[end:].strip() == "", f"more than one JSON document on stdout: {self.stdout!r}"
        return document


def ip_json(*arguments: str):
    completed = subprocess.run(["ip", "-j", *arguments], capture_output=True, text=True, check=True, timeout=30)
    return json.loads(completed.stdout or "[]")


def ipv4_addresses(netns: str, device: str) -> list[str]:
    links = ip_json("-n", netns, "-4", "addr", "show", "dev", device)
    return [f"{entry['local']}/{entry['prefixlen']}" for link in links for entry in link["addr_info"]]


def link_names(netns: str) -> list[str]:
    return [link["ifname"] for link in ip_json("-n", netns, "link", "show")]


class PluginHost:
    """A host namespace with a data directory, and container namespaces on demand."""

    def __init__(self, data_dir: Path):
        self.name = f"fntest-cni-{uuid.uuid4().hex[:8]}"
        self.data_dir = data_dir
        self.namespaces: list[str] = []

    def add_namespace(self, name: str) -> None:
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
        self.namespaces.append(name)

    def start(self) -> None:
        self.add_namespace(self.name)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, timeout=30)

    def container(self) -> str:
        """Create a container namespace and return its path, as CNI_NETNS carries it."""
        name = f"fntest-cni-{uuid.uuid4().hex[:8]}"
        self.add_namespace(name)
        return f"/run/netns/{name}"

    def remove_container(self, netns: str) -> None:
        name = Path(netns).name
        subprocess.run(["ip", "netns", "del", name], check=True, timeout=30)
        self.namespaces.remove(name)

    def config(self, version: str = "1.0.0", **overrides) -> dict:
        config = {
            "cniVersion": version,
            "name": "flatnet",
            "type": "flatnet",
            "hostId": HOST_ID,
            "ipRange": f"10.100.{HOST_ID}.0/24",
            "bridge": BRIDGE,
            "mtu": MTU,
            "registryEndpoints": ["http://127.0.0.1:9"],
            "dataDir": str(self.data_dir),
        }
        config.update(overrides)
        return config

    def run(
        self,
        command: str,
        container_id: str = "",
        netns: str = "",
        *,
        version: str = "1.0.0",
        hostname: str = "",
        stdin: bytes | None = None,
        **overrides,
    ) -> PluginRun:
        environment = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(PLUGIN.parent),
        }
        if hostname:
            environment["CNI_ARGS"] = f"IgnoreUnknown=1;K8S_POD_NAME={hostname}"
        if stdin is None:
            stdin = json.dumps(self.config(version, **overrides)).encode()
        completed = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.name}", str(PLUGIN)],
            input=stdin,
            capture_output=True,
            env=environment,
            timeout=PLUGIN_TIMEOUT_SECONDS,
        )
        return PluginRun(completed.returncode, completed.stdout.decode(), completed.stderr.decode())

    def add(self, container_id: str, netns: str, **options) -> dict:
        run = self.run("ADD", container_id, netns, **options)
        assert run.returncode == 0, f"ADD of {container_id} failed: {run.stdout} {run.stderr}"
        return run.document()

    def remove_namespaces(self) -> None:
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)
        self.namespaces.clear()


def root_ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


@pytest.fixture
def host(tmp_path):
    require_root("the CNI plugin netns tests")
    if not PLUGIN.is_file():
        skip_or_fail(f"the plugin console script {PLUGIN} is not installed; run 'pip install -e .' in the venv")
    forwarding_before = root_ip_forward()

    plugin_host = PluginHost(tmp_path / "data")
    try:
        plugin_host.start()
        yield plugin_host
    finally:
        plugin_host.remove_namespaces()

    # The plugin must never have touched the test runner's namespace.
    assert BRIDGE not in link_names_of_runner()
    assert root_ip_forward() == forwarding_before


def link_names_of_runner() -> list[str]:
    return [link["ifname"] for link in ip_json("link", "show")]


def container_address(result: dict) -> str:
    return result["ips"][0]["address"]


# ADD


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_describes_interfaces(host, version):
    netns = host.container()

    result = host.add("c1", netns, version=version)

    assert result["cniVersion"] == version
    assert all(interface.get("mac") for interface in result["interfaces"])
    sandboxed = [interface for interface in result["interfaces"] if interface.get("sandbox")]
    assert [interface["name"] for interface in sandboxed] == ["eth0"]
    assert sandboxed[0]["sandbox"] == netns
    assert result["interfaces"][0]["name"] == BRIDGE


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_ips_point_at_container_interface(host, version):
    result = host.add("c1", host.container(), version=version)

    assert len(result["ips"]) == 1
    ip = result["ips"][0]
    assert ip["address"] == f"10.100.{HOST_ID}.10/24"
    assert ip["gateway"] == GATEWAY
    assert result["interfaces"][ip["interface"]]["name"] == "eth0"
    assert result["interfaces"][ip["interface"]].get("sandbox")
    if version == "0.4.0":
        assert ip["version"] == "4"
    else:
        assert "version" not in ip


@pytest.mark.parametrize("version", VERSIONS)
def test_add_configures_container_eth0(host, version):
    netns = host.container()
    name = Path(netns).name

    result = host.add("c1", netns, version=version)

    assert ipv4_addresses(name, "eth0") == [container_address(result)]
    routes = ip_json("-n", name, "route", "show", "default")
    assert [(route["gateway"], route["dev"]) for route in routes] == [(GATEWAY, "eth0")]
    eth0 = ip_json("-n", name, "link", "show", "eth0")[0]
    assert eth0["mtu"] == MTU
    assert "UP" in eth0["flags"]


def test_add_sets_bridge_gateway_and_mtu(host):
    host.add("c1", host.container())

    bridge = ip_json("-n", host.name, "link", "show", BRIDGE)[0]
    assert ipv4_addresses(host.name, BRIDGE) == [f"{GATEWAY}/24"]
    assert bridge["mtu"] == MTU
    assert "UP" in bridge["flags"]


def test_host_veth_is_attached_to_bridge(host):
    result = host.add("c1", host.container())
    host_veth = result["interfaces"][1]["name"]

    link = ip_json("-n", host.name, "link", "show", host_veth)[0]

    assert link["master"] == BRIDGE
    assert link["address"] == result["interfaces"][1]["mac"]


def test_two_containers_get_different_addresses(host):
    first = host.add("c1", host.container())
    second = host.add("c2", host.container())

    assert container_address(first) == f"10.100.{HOST_ID}.10/24"
    assert container_address(second) == f"10.100.{HOST_ID}.11/24"


def test_add_leaves_change_in_outbox(host):
    result = host.add("c1", host.container(), hostname="web-1")

    pending = outbox.pending(host.data_dir)

    assert len(pending) == 1
    change = outbox.read_change(pending[0])
    assert change.type == CONTAINER_ADDED
    assert change.data["hostname"] == "web-1"
    assert change.data["id"] == "c1"
    assert change.data["ip"] == container_address(result).split("/")[0]
    assert change.data["hostId"] == HOST_ID


def test_repeated_add_keeps_first_address(host):
    # The second ADD fails because eth0 exists, but it must not free the
    # address the first ADD gave, or the next container would get it too.
    netns = host.container()
    first = host.add("c1", netns)

    repeated = host.run("ADD", "c1", netns)
    other = host.add("c2", host.container())

    assert repeated.returncode == 1
    assert repeated.document()["code"] == spec.NETLINK_FAILURE
    assert ipv4_addresses(Path(netns).name, "eth0") == [container_address(first)]
    assert container_address(other) != container_address(first)


def test_check_after_add_exits_zero(host):
    netns = host.container()
    host.add("c1", netns)

    check = host.run("CHECK", "c1", netns)

    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == ""


# DEL


@pytest.mark.parametrize("version", VERSIONS)
def test_del_frees_address_for_next_add(host, version):
    netns = host.container()
    first = host.add("c1", netns, version=version)

    deleted = host.run("DEL", "c1", netns, version=version)
    second = host.add("c2", host.container(), version=version)

    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert deleted.stdout.strip() == ""
    assert "eth0" not in link_names(Path(netns).name)
    assert container_address(second) == container_address(first)


def test_repeated_del_exits_zero(host):
    netns = host.container()
    host.add("c1", netns)

    first = host.run("DEL", "c1", netns)
    second = host.run("DEL", "c1", netns)

    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.strip() == ""


def test_del_after_netns_gone_frees_address(host):
    netns = host.container()
    first = host.add("c1", netns)
    host.remove_container(netns)

    deleted = host.run("DEL", "c1", netns)
    second = host.add("c2", host.container())

    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert deleted.stdout.strip() == ""
    assert container_address(second) == container_address(first)


def test_del_without_netns_frees_address(host):
    first = host.add("c1", host.container())

    deleted = host.run("DEL", "c1", "")
    second = host.add("c2", host.container())

    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert container_address(second) == container_address(first)


def test_del_leaves_removal_in_outbox(host):
    netns = host.container()
    host.add("c1", netns)

    host.run("DEL", "c1", netns)

    changes = [outbox.read_change(path) for path in outbox.pending(host.data_dir)]
    assert [change.type for change in changes] == [CONTAINER_ADDED, CONTAINER_REMOVED]
    assert changes[1].data["id"] == "c1"


# VERSION and errors


@pytest.mark.parametrize("version", VERSIONS)
def test_version_lists_supported_versions(host, version):
    run = host.run("VERSION", stdin=json.dumps({"cniVersion": version}).encode())

    document = run.document()
    assert run.returncode == 0
    assert document["cniVersion"] == version
    assert "0.4.0" in document["supportedVersions"]
    assert "1.0.0" in document["supportedVersions"]


def test_ip_range_of_other_host_is_code_7(host):
    run = host.run("ADD", "c1", host.container(), ipRange="10.100.8.0/24")

    document = run.document()
    assert run.returncode == 1
    assert document["code"] == spec.INVALID_NETWORK_CONFIG
    assert "10.100.8.0/24" in document["msg"]
    assert f"hostId {HOST_ID}" in document["msg"]
    assert BRIDGE not in link_names(host.name)


def test_unsupported_cni_version_is_code_1(host):
    run = host.run("ADD", "c1", host.container(), version="9.9.9")

    document = run.document()
    assert run.returncode == 1
    assert document["code"] == spec.INCOMPATIBLE_VERSION
    assert "9.9.9" in document["msg"]


def test_invalid_json_is_code_6(host):
    run = host.run("ADD", "c1", host.container(), stdin=b'{"cniVersion": "1.0.0",')

    document = run.document()
    assert run.returncode == 1
    assert document["code"] == spec.DECODE_FAILURE


def test_missing_netns_on_add_is_code_4(host):
    run = host.run("ADD", "c1", "")

    document = run.document()
    assert run.returncode == 1
    assert document["code"] == spec.INVALID_ENVIRONMENT
    assert "CNI_NETNS" in document["msg"]


def test_add_into_missing_netns_frees_address(host):
    failed = host.run("ADD", "c1", f"/run/netns/fntest-cni-missing-{uuid.uuid4().hex[:8]}")
    later = host.add("c2", host.container())

    assert failed.returncode == 1
    assert failed.document()["code"] == spec.NETLINK_FAILURE
    assert container_address(later) == f"10.100.{HOST_ID}.10/24"
