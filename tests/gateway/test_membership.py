"""Peers added to or removed from the config are picked up on SIGHUP, without a restart."""

import os
import signal

import pytest

from tests.gateway.harness import GatewayProcess, wait_until

pytestmark = pytest.mark.root


def _reconfigure(gateway: GatewayProcess, peers: list[int]) -> None:
    fresh = GatewayProcess(gateway.netns, gateway.dir.parent, gateway.host_id, peers)
    assert fresh.config == gateway.config
    os.kill(gateway.process.pid, signal.SIGHUP)


def _hostnames(gateway) -> dict[str, int]:
    return {entry["hostname"]: entry["ttl"] for entry in gateway.containers()}


def test_peer_added_on_sighup_is_followed(fleet):
    lonely = fleet(host_ids=(1,))[1]
    other = fleet(host_ids=(2,))[2]
    other.add_container("joined", "10.100.2.10")

    _reconfigure(lonely, [2])

    wait_until(lambda: "joined" in _hostnames(lonely), 10, "peer 2's container on gateway 1")
    assert "peers now [2]" in lonely.log_text()
    assert lonely.health()["peers"]["2"]["state"] == "connected"


def test_peer_removed_on_sighup_expires(fleet):
    gateways = fleet()
    gateways[2].add_container("leaving", "10.100.2.10")
    wait_until(lambda: "leaving" in _hostnames(gateways[1]), 10, "peer 2's container on gateway 1")

    _reconfigure(gateways[1], [])

    wait_until(lambda: _hostnames(gateways[1]).get("leaving") == 0, 10, "peer 2's container to expire")
    assert "2" not in gateways[1].health()["peers"]


def test_broken_config_on_sighup_changes_nothing(fleet):
    gateways = fleet()
    wait_until(lambda: gateways[1].health()["peers"]["2"]["state"] == "connected", 10, "gateway 1 following peer 2")
    gateways[1].config.write_text("host_id = = 1\n")

    os.kill(gateways[1].process.pid, signal.SIGHUP)

    wait_until(lambda: "config reload failed" in gateways[1].log_text(), 10, "the reload failure in the log")
    assert gateways[1].health()["peers"]["2"]["state"] == "connected"
