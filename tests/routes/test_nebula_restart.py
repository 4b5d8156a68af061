"""`flatnet nebula config --write FILE --restart PID` against a real Nebula in a throwaway namespace."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flatnet import nebula
from tests.conftest import skip_or_fail
from tests.gateway.harness import wait_until
from tests.routes.conftest import routes

pytestmark = pytest.mark.root

FLATNET = str(Path(sys.executable).with_name("flatnet"))


def _gateway_config(tmp_path: Path, peers: list[int]) -> Path:
    path = tmp_path / "gateway.toml"
    lines = ["host_id = 1", f'data_dir = "{tmp_path / "data"}"', 'api_listen = "10.100.0.1:8080"',
             'proxy_listen = "127.0.0.1:8000"']
    for peer in peers:
        lines += ["[[peers]]", f"host_id = {peer}", f'api = "http://10.100.0.{peer}:8080"']
    path.write_text("\n".join(lines) + "\n")
    return path


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture
def nebula_host(host_netns, tmp_path):
    """Nebula with host 1's certificate, running in the namespace; yields (config path, pid holder)."""
    if shutil.which("nebula") is None or shutil.which("nebula-cert") is None:
        skip_or_fail("needs nebula and nebula-cert (apt-get install -y nebula)")
    subprocess.run(["ip", "-n", host_netns, "link", "del", "nebula1"], check=True, timeout=30)
    nebula.create_ca("flatnet-test", tmp_path / "ca.crt", tmp_path / "ca.key")
    nebula.sign(1, ca_crt=tmp_path / "ca.crt", ca_key=tmp_path / "ca.key",
                out_crt=tmp_path / "h1.crt", out_key=tmp_path / "h1.key")
    config = tmp_path / "nebula.yml"
    config.write_text(yaml.safe_dump({
        "pki": {"ca": str(tmp_path / "ca.crt"), "cert": str(tmp_path / "h1.crt"), "key": str(tmp_path / "h1.key")},
        "lighthouse": {"am_lighthouse": True},
        "listen": {"host": "127.0.0.1", "port": 4242},
        "tun": {"dev": "nebula1", "mtu": 1300},
    }))
    nebula.update_config_file(config, 1, [2])
    with open(tmp_path / "nebula.log", "ab") as log:
        process = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{host_netns}", "nebula", "-config", str(config)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    pids = [process.pid]
    try:
        wait_until(lambda: routes(host_netns, "10.100.2.0/24"), 10, "Nebula's unsafe route to 10.100.2.0/24")
        yield config, pids
    finally:
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        process.wait(timeout=10)
        for pid in pids[1:]:
            wait_until(lambda pid=pid: not _is_running(pid), 10, f"nebula {pid} to stop")


def test_write_and_restart_pid_brings_the_new_route(host_netns, tmp_path, nebula_host):
    config, pids = nebula_host

    result = subprocess.run(
        [FLATNET, "nebula", "config", "--config", str(_gateway_config(tmp_path, [2, 3])),
         "--write", str(config), "--restart", str(pids[0])],
        capture_output=True, text=True, timeout=60, env={**os.environ, "LANG": "C"},
    )
    assert result.returncode == 0, result.stderr
    new_pid = int(result.stdout.split("is now pid")[1])
    pids.append(new_pid)

    assert f"updated {config}; unsafe routes: 10.100.2.0/24 via 10.100.0.2, 10.100.3.0/24 via 10.100.0.3" in result.stdout
    assert not _is_running(pids[0])
    assert _is_running(new_pid)
    wait_until(lambda: routes(host_netns, "10.100.3.0/24"), 10, "the new unsafe route after the restart")
    assert routes(host_netns, "10.100.3.0/24") == ["10.100.3.0/24 dev nebula1 scope link metric 100"]


def test_unchanged_config_is_not_restarted(tmp_path, nebula_host):
    config, pids = nebula_host

    result = subprocess.run(
        [FLATNET, "nebula", "config", "--config", str(_gateway_config(tmp_path, [2])),
         "--write", str(config), "--restart", str(pids[0])],
        capture_output=True, text=True, timeout=60, env={**os.environ, "LANG": "C"},
    )

    assert result.returncode == 0, result.stderr
    assert "unchanged" in result.stdout
    assert "Nebula not restarted: its config did not change" in result.stdout
    assert _is_running(pids[0])
