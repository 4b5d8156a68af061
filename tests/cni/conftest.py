"""The real plugin, run in throwaway network namespaces, on its fast path and in-process.

Every plugin run happens inside a "host" namespace that a fixture creates, with
further namespaces standing in for containers. The plugin executable is the one
the lab installs: a launcher started with ``python -SI``. On the fast path a real
gateway runs in the host namespace and serves the plugin's socket; in-process,
the config's ``socket`` points where nothing listens, so the plugin does the work
itself. Nothing is configured in the namespace the tests run in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import pytest

from flatnet.cni import launcher
from flatnet.cni.store import DirectoryStore
from flatnet.events import outbox
from tests.conftest import require_root
from tests.gateway.harness import GatewayProcess

HOST_ID = 7
GATEWAY = f"10.100.{HOST_ID}.1"
# Not flatnet's default name or MTU, so the checks prove the config is applied
# and a bridge leaked into the test runner's namespace would be recognisable.
BRIDGE = "fntest0"
MTU = 1400
PLUGIN_TIMEOUT_SECONDS = 120
FAST = "fast"
IN_PROCESS = "in-process"
PATHS = (FAST, IN_PROCESS)


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


def write_plugin(directory: Path) -> Path:
    """Write the plugin executable as the lab installs it, and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    plugin = directory / "flatnet"
    plugin.write_text(launcher.render_script(
        sys.executable, sysconfig.get_paths()["purelib"], str(Path(launcher.__file__).parent)
    ))
    plugin.chmod(0o755)
    return plugin


class PluginHost:
    """A host namespace with the plugin, and a gateway serving its socket when ``gateway`` is set."""

    def __init__(self, workdir: Path, *, gateway: bool):
        self.name = f"fntest-cni-{uuid.uuid4().hex[:8]}"
        self.workdir = workdir
        self.plugin = write_plugin(workdir / "bin")
        self.namespaces: list[str] = []
        self.gateway = GatewayProcess(self.name, workdir, HOST_ID, []) if gateway else None

    def start(self) -> None:
        self._add_namespace(self.name)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, timeout=30)
        if self.gateway is not None:
            self.gateway.start()

    def _add_namespace(self, name: str) -> None:
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
        self.namespaces.append(name)

    def container(self) -> str:
        """Create a container namespace and return its path, as CNI_NETNS carries it."""
        name = f"fntest-cni-{uuid.uuid4().hex[:8]}"
        self._add_namespace(name)
        return f"/run/netns/{name}"

    def remove_container(self, netns: str) -> None:
        name = Path(netns).name
        subprocess.run(["ip", "netns", "del", name], check=True, timeout=30)
        self.namespaces.remove(name)

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)
        self.namespaces.clear()

    def host_veths(self) -> list[str]:
        return [name for name in link_names(self.name) if name.startswith("veth")]


class Plugin:
    """The plugin on one path, with a data directory of its own on the shared host."""

    def __init__(self, host: PluginHost, path: str, data_dir: Path):
        self.host = host
        self.path = path
        self.data_dir = data_dir
        self.containers: list[str] = []

    @property
    def name(self) -> str:
        return self.host.name

    def container(self) -> str:
        netns = self.host.container()
        self.containers.append(netns)
        return netns

    def remove_container(self, netns: str) -> None:
        self.host.remove_container(netns)
        self.containers.remove(netns)

    def remove_containers(self) -> None:
        for netns in list(self.containers):
            self.remove_container(netns)

    def config(self, version: str = "1.0.0", **overrides) -> dict:
        config = {
            "cniVersion": version,
            "name": "flatnet",
            "type": "flatnet",
            "hostId": HOST_ID,
            "ipRange": f"10.100.{HOST_ID}.0/24",
            "bridge": BRIDGE,
            "mtu": MTU,
            "dataDir": str(self.data_dir),
        }
        gateway = self.host.gateway
        if self.path == FAST:
            config["socket"] = str(gateway.data_dir / launcher.SOCKET_NAME)
            config["registryEndpoints"] = [gateway.api]
        else:
            config["socket"] = str(self.host.workdir / "no-gateway.sock")
            # The in-process path posts to the gateway when there is one, else writes the outbox.
            config["registryEndpoints"] = [gateway.api] if gateway is not None else ["http://127.0.0.1:9"]
        config.update(overrides)
        return config

    def run(
        self,
        command: str,
        container_id: str = "",
        netns: str = "",
        *,
        version: str = "1.0.0",
        args: str = "",
        ifname: str = "eth0",
        stdin: bytes | None = None,
        fault: str = "",
        locale: dict[str, str] | None = None,
        **overrides,
    ) -> PluginRun:
        environment = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": ifname,
            "CNI_PATH": str(self.host.plugin.parent),
            "CNI_ARGS": args,
        }
        if fault:
            environment["FLATNET_CNI_FAULT"] = fault
        # Locale variables such as LANG, as podman passes its own on to the plugin.
        environment.update(locale or {})
        if stdin is None:
            stdin = json.dumps(self.config(version, **overrides)).encode()
        completed = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.host.name}", str(self.host.plugin)],
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

    def delete(self, container_id: str, netns: str = "", **options) -> None:
        run = self.run("DEL", container_id, netns, **options)
        assert run.returncode == 0, f"DEL of {container_id} failed: {run.stdout} {run.stderr}"
        assert run.stdout == ""

    def reservations(self) -> dict[str, str]:
        """Reserved addresses by container id."""
        with DirectoryStore(self.data_dir) as store:
            return {reservation.container_id: str(address) for address, reservation in store.reserved().items()}

    def announced(self) -> list[dict]:
        """The changes this plugin's runs announced, oldest first.

        Without a gateway they wait in the outbox. With one, a change is in
        the gateway's outbox until it is in the gateway's log: the outbox is
        read first, so a change drained in between shows up twice, not never.
        """
        if self.host.gateway is None:
            return [{"type": change.type, **change.data} for change in map(outbox.read_change, outbox.pending(self.data_dir))]
        waiting = []
        for path in outbox.pending(self.host.gateway.data_dir):
            try:
                waiting.append(outbox.read_change(path))
            except FileNotFoundError:
                continue
        logged, seen = [], set()
        for segment in sorted((self.host.gateway.data_dir / "log" / str(HOST_ID)).glob("*.jsonl")):
            for line in segment.read_text().splitlines():
                record = json.loads(line)
                seen.add(record["id"])
                logged.append({"type": record["type"], **record["data"]})
        return logged + [{"type": change.type, **change.data} for change in waiting if change.id not in seen]

    def used_fast_path(self, command: str, container_id: str) -> bool:
        log = self.host.gateway.log_text() if self.host.gateway is not None else ""
        return f"fast path {command} {container_id}/" in log


def container_address(result: dict) -> str:
    return result["ips"][0]["address"]


def normalized(text: str) -> str:
    """``text`` with what differs between two otherwise equal runs replaced by placeholders."""
    text = re.sub(r"\b[0-9a-f]{2}(:[0-9a-f]{2}){5}\b", "<mac>", text)
    text = re.sub(r"\bveth[0-9a-f]{8}\b", "<veth>", text)
    return re.sub(r"/run/netns/fntest-cni-[0-9a-f]{8}", "<netns>", text)


def runner_links() -> list[str]:
    return [link["ifname"] for link in ip_json("link", "show")]


def root_ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


@pytest.fixture(scope="module")
def plugin_hosts(tmp_path_factory):
    """A host with a gateway (the fast path) and one without (in-process), for the whole module."""
    require_root("the CNI plugin netns tests", tools=("ip", "nsenter", "curl"))
    forwarding_before = root_ip_forward()
    hosts = {
        FAST: PluginHost(tmp_path_factory.mktemp("fast"), gateway=True),
        IN_PROCESS: PluginHost(tmp_path_factory.mktemp("inproc"), gateway=False),
    }
    try:
        for host in hosts.values():
            host.start()
        yield hosts
    finally:
        for host in hosts.values():
            host.stop()

    # The plugin must never have touched the test runner's namespace.
    assert BRIDGE not in runner_links()
    assert root_ip_forward() == forwarding_before


@pytest.fixture(params=PATHS)
def plugin(request, plugin_hosts, tmp_path) -> Plugin:
    """The plugin on each path in turn, with a fresh data directory."""
    plugin = Plugin(plugin_hosts[request.param], request.param, tmp_path / "data")
    yield plugin
    plugin.remove_containers()
