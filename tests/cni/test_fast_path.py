"""The plugin's fast path: when it hands a command to the gateway, and when it does the work itself."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from flatnet.cni import launcher, spec
from tests.cni.conftest import BRIDGE, FAST, HOST_ID, IN_PROCESS, Plugin, PluginHost, container_address, link_names
from tests.gateway.harness import http

pytestmark = pytest.mark.root


class FakeGateway:
    """A Unix socket that accepts connections, then replies with ``answer`` (None: never), counting them."""

    def __init__(self, path: Path, *, answer: bytes | None):
        self.path = path
        self.answer = answer
        self.connections = 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        self.server.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        held = []
        while not self.stopped.is_set():
            try:
                connection, _ = self.server.accept()
            except socket.timeout:
                continue
            self.connections += 1
            if self.answer is None:
                # A hung gateway keeps the connection open and sends nothing.
                held.append(connection)
                continue
            connection.sendall(self.answer)
            connection.close()
        for connection in held:
            connection.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.server.close()


@pytest.fixture
def in_process(plugin_hosts, tmp_path):
    plugin = Plugin(plugin_hosts[IN_PROCESS], IN_PROCESS, tmp_path / "data")
    yield plugin
    plugin.remove_containers()


@pytest.fixture
def fast(plugin_hosts, tmp_path):
    plugin = Plugin(plugin_hosts[FAST], FAST, tmp_path / "data")
    yield plugin
    plugin.remove_containers()


def short_socket_path() -> Path:
    return Path(f"/tmp/fntest-{uuid.uuid4().hex[:8]}.sock")


@pytest.mark.parametrize("answer", [None, launcher.REFUSED, b""], ids=["hung", "refused", "closed"])
def test_gateway_that_does_not_take_request_is_bypassed(in_process, answer):
    path = short_socket_path()
    gateway = FakeGateway(path, answer=answer)
    try:
        container_id = uuid.uuid4().hex
        result = in_process.add(container_id, in_process.container(), socket=str(path))
    finally:
        gateway.close()
        path.unlink(missing_ok=True)

    assert gateway.connections == 1
    assert container_address(result) == f"10.100.{HOST_ID}.10/24"
    assert list(in_process.reservations()) == [container_id]


def test_stale_socket_file_is_bypassed(in_process):
    path = short_socket_path()
    left_over = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left_over.bind(str(path))
    left_over.close()
    try:
        result = in_process.add(uuid.uuid4().hex, in_process.container(), socket=str(path))
    finally:
        path.unlink(missing_ok=True)

    assert container_address(result) == f"10.100.{HOST_ID}.10/24"


def test_version_never_connects(in_process):
    path = short_socket_path()
    gateway = FakeGateway(path, answer=b"0\n{}")
    try:
        run = in_process.run("VERSION", socket=str(path))
    finally:
        gateway.close()
        path.unlink(missing_ok=True)

    assert run.returncode == 0
    assert run.document()["supportedVersions"] == list(spec.SUPPORTED_VERSIONS)
    assert gateway.connections == 0


def test_launcher_loads_no_python_module_beyond_startup(tmp_path):
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        f"sys.path.insert(0, {str(Path(launcher.__file__).parent)!r})\n"
        "import launcher\n"
        "launcher.respond({b'CNI_COMMAND': b'VERSION'}, b'{\"cniVersion\": \"1.0.0\"}')\n"
        f"launcher.ask_gateway({str(tmp_path / 'none.sock')!r}, {{'CNI_COMMAND': 'ADD'}}, b'{{}}')\n"
        "print(sorted(set(sys.modules) - before))\n"
    )

    completed = subprocess.run([sys.executable, "-SI", "-c", probe], capture_output=True, text=True, check=True)

    assert completed.stdout.strip() == str(["_json", "_socket", "launcher"])


def test_gateway_works_in_the_plugins_namespace(fast, tmp_path):
    # A second host namespace without a gateway: its plugin uses host 7's
    # socket, so the gateway must do the host side of the work in this one.
    other = PluginHost(tmp_path / "other", gateway=False)
    other.start()
    try:
        guest = Plugin(other, IN_PROCESS, tmp_path / "guest-data")
        netns = other.container()
        container_id = uuid.uuid4().hex

        result = guest.add(container_id, netns, socket=fast.config()["socket"])

        assert BRIDGE in link_names(other.name)
        assert result["interfaces"][1]["name"] in link_names(other.name)
        assert result["interfaces"][1]["name"] not in link_names(fast.name)
        assert fast.used_fast_path("ADD", container_id)
    finally:
        other.stop()


def test_gateway_rejects_config_of_another_host(fast):
    container_id, netns = uuid.uuid4().hex, fast.container()

    run = fast.run("ADD", container_id, netns, hostId=8, ipRange="10.100.8.0/24")

    assert run.returncode == 1
    assert run.document()["code"] == spec.INVALID_NETWORK_CONFIG
    assert "hostId 8" in run.document()["msg"]
    assert fast.reservations() == {}
    assert "eth0" not in link_names(Path(netns).name)


def test_gateway_refuses_malformed_request(fast):
    path = fast.config()["socket"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.connect(path)
        connection.sendall(b"HELLO 1 2 3\n")
        answer = connection.recv(16)

    assert answer == launcher.REFUSED


def test_gateway_serves_fast_path_results_as_in_process(fast, in_process):
    container_ids = [uuid.uuid4().hex for _ in range(2)]

    results = {
        plugin.path: [plugin.add(container_id, plugin.container(), args="K8S_POD_NAME=same") for container_id in container_ids]
        for plugin in (fast, in_process)
    }

    for fast_result, in_process_result in zip(results[FAST], results[IN_PROCESS]):
        assert container_address(fast_result) == container_address(in_process_result)
        assert [interface["name"] for interface in fast_result["interfaces"]][::2] == ["fntest0", "eth0"]
        assert json.dumps(fast_result).count("sandbox") == json.dumps(in_process_result).count("sandbox")


def test_console_script_runs_the_same_launcher(in_process):
    console_script = Path(sys.executable).with_name("flatnet-cni")
    environment = {"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}

    version = subprocess.run([str(console_script)], input=b'{"cniVersion": "0.4.0"}', capture_output=True, env=environment)
    broken = subprocess.run([str(console_script)], input=b"{", capture_output=True, env=dict(environment, CNI_COMMAND="ADD"))

    assert version.returncode == 0
    assert json.loads(version.stdout) == spec.version_result({"cniVersion": "0.4.0"})
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["code"] == spec.DECODE_FAILURE


def test_socket_path_longer_than_sun_path_works(tmp_path):
    # Unix socket addresses hold 107 bytes of path; both ends go through the directory's fd.
    host = PluginHost(tmp_path / ("long-directory-name-" * 5), gateway=True)
    host.start()
    try:
        plugin = Plugin(host, FAST, tmp_path / "data")
        assert len(plugin.config()["socket"]) > launcher.MAX_SOCKET_PATH
        container_id = uuid.uuid4().hex

        plugin.add(container_id, plugin.container())

        assert plugin.used_fast_path("ADD", container_id)
    finally:
        host.stop()



def _metric(host: PluginHost, sample: str) -> float:
    status, body = http(host.name, "GET", f"{host.gateway.api}/metrics")
    assert status == 200, body
    for line in body.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_fast_path_commands_are_counted_in_metrics(fast):
    added = 'flatnet_plugin_commands_total{command="ADD",path="fast",result="ok"}'
    deleted = 'flatnet_plugin_commands_total{command="DEL",path="fast",result="ok"}'
    timed = 'flatnet_plugin_command_duration_seconds_count{command="ADD",path="fast"}'
    before = {name: _metric(fast.host, name) for name in (added, deleted, timed)}
    netns = fast.container()
    container_id = uuid.uuid4().hex

    fast.add(container_id, netns)
    fast.delete(container_id, netns)

    assert _metric(fast.host, added) == before[added] + 1
    assert _metric(fast.host, deleted) == before[deleted] + 1
    assert _metric(fast.host, timed) == before[timed] + 1
