"""A gateway start that cannot be safe stops before it touches anything."""

import subprocess
import sys

import pytest

from tests.gateway.harness import GatewayProcess, wait_until

pytestmark = pytest.mark.root


def test_second_gateway_on_one_data_dir_is_rejected(fleet):
    gateway = fleet(host_ids=(1,))[1]
    gateway.add_container("kept", "10.100.1.10")
    node_before = (gateway.data_dir / "node.json").read_text()

    result = subprocess.run(
        ["nsenter", f"--net=/run/netns/{gateway.netns}", sys.executable, "-m", "flatnet", "gateway",
         "--config", str(gateway.config)],
        capture_output=True, text=True, timeout=30,
    )

    assert result.returncode == 1
    assert f"in use by another gateway (pid {gateway.process.pid})" in result.stderr
    assert (gateway.data_dir / "node.json").read_text() == node_before
    assert [entry["hostname"] for entry in gateway.containers()] == ["kept"]


def test_unwritable_data_dir_is_named(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(
        'host_id = 1\ndata_dir = "/proc/flatnet-test"\napi_listen = "127.0.0.1:1"\nproxy_listen = "127.0.0.1:2"\n'
    )

    result = subprocess.run([sys.executable, "-m", "flatnet", "gateway", "--config", str(config)],
                            capture_output=True, text=True, timeout=30)

    assert result.returncode == 1
    assert "cannot use data_dir /proc/flatnet-test" in result.stderr
    assert "Traceback" not in result.stderr


def test_second_node_with_a_live_host_id_is_rejected(fleet, tmp_path):
    gateways = fleet()
    wait_until(lambda: gateways[2].health()["peers"]["1"]["state"] == "connected", 10, "gateway 2 following gateway 1")
    twin = GatewayProcess(gateways[1].netns, tmp_path / "twin", 1, [2])

    result = subprocess.run(
        ["nsenter", f"--net=/run/netns/{twin.netns}", sys.executable, "-m", "flatnet", "gateway", "--config", str(twin.config)],
        capture_output=True, text=True, timeout=30,
    )

    node = gateways[1].health()["node"]
    assert result.returncode == 1
    assert f"host id 1 is held by node {node}" in result.stderr
    assert "peer 2" in result.stderr


def test_restarted_node_keeps_its_host_id(fleet):
    gateways = fleet()
    wait_until(lambda: gateways[2].health()["peers"]["1"]["state"] == "connected", 10, "gateway 2 following gateway 1")

    gateways[1].stop()
    gateways[1].start()

    assert gateways[1].health()["hostId"] == 1
