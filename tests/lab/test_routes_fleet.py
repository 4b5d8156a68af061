"""Routes kept by the gateways on a 3-host lab whose h3 joins later: join, hand delete, expiry, leave.

The lab's TTL is 6 s, so an expiry takes seconds. Every host runs Nebula itself (mode ``dev``);
its unsafe routes sit at metric 100 next to flatnet's at metric 50.
"""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.gateway.harness import wait_until
from tests.lab.conftest import built_lab
from tests.lab.test_end_to_end import _require_lab_tools

pytestmark = pytest.mark.lab

FLATNET = str(Path(sys.executable).parent / "flatnet")
TTL = 6
# A reconcile runs every 10 s; a test waits a little longer than that for a route to come back.
RECONCILE_WAIT = 15
# A follower reconnects with a backoff of up to 10 s (times a jitter of up to 1.5) after its peer was gone.
RETURN_WAIT = 40


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _require_lab_tools()
    with built_lab(tmp_path_factory, hosts=3, ttl=TTL, joined_later=(3,)) as built:
        yield built


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def flatnet_routes(lab, host: str, prefix: str) -> list[str]:
    return lab.exec(host, ["ip", "route", "show", prefix, "proto", "102"], check=True).stdout.splitlines()


def all_routes(lab, host: str, prefix: str) -> list[str]:
    return lab.exec(host, ["ip", "route", "show", prefix], check=True).stdout.splitlines()


def ping_from(lab, host: str, container: str, address: str) -> subprocess.CompletedProcess:
    return lab.podman(host, "exec", container, "ping", "-c", "2", "-W", "2", address, check=False)


def routes_show(lab, host: str) -> list[dict]:
    config = str(lab.paths.gateway_config(host))
    result = lab.exec(host, [FLATNET, "routes", "show", "--json", "--config", config], check=True)
    return json.loads(result.stdout)


def test_joined_host_and_h1_containers_reach_each_other(lab):
    first, third = _name("join-a"), _name("join-c")
    address_1 = lab.run_web("h1", first)
    assert all_routes(lab, "h1", "10.100.3.0/24") == []

    lab.join("h3")
    address_3 = lab.run_web("h3", third)
    try:
        wait_until(lambda: flatnet_routes(lab, "h1", "10.100.3.0/24"), RECONCILE_WAIT, "h1's route to h3")
        wait_until(lambda: flatnet_routes(lab, "h3", "10.100.1.0/24"), RECONCILE_WAIT, "h3's route to h1")
        wait_until(lambda: lab.health("h1").body["peers"]["3"]["state"] == "connected", 15, "gateway 1 to hear h3")
        outbound = ping_from(lab, "h1", first, address_3)
        inbound = ping_from(lab, "h3", third, address_1)
    finally:
        lab.podman("h1", "rm", "-f", "-t", "0", first)
        lab.podman("h3", "rm", "-f", "-t", "0", third)

    print(all_routes(lab, "h1", "10.100.3.0/24"))
    assert outbound.returncode == 0, outbound.stdout + outbound.stderr
    assert inbound.returncode == 0, inbound.stdout + inbound.stderr
    assert flatnet_routes(lab, "h1", "10.100.3.0/24") == ["10.100.3.0/24 dev nebula1 scope link metric 50 "]
    assert "10.100.3.0/24 dev nebula1 scope link metric 100 " in all_routes(lab, "h1", "10.100.3.0/24")


def test_deleted_route_recovered_foreign_kept(lab):
    lab.exec("h1", ["ip", "route", "add", "10.100.77.0/24", "dev", "nebula1", "proto", "static"], check=True)
    try:
        lab.exec("h1", ["ip", "route", "del", "10.100.2.0/24", "proto", "102", "metric", "50"], check=True)
        assert flatnet_routes(lab, "h1", "10.100.2.0/24") == []

        wait_until(lambda: flatnet_routes(lab, "h1", "10.100.2.0/24"), RECONCILE_WAIT, "h1's route to h2 to come back")
        shown = routes_show(lab, "h1")
        foreign = all_routes(lab, "h1", "10.100.77.0/24")
    finally:
        lab.exec("h1", ["ip", "route", "del", "10.100.77.0/24", "proto", "static"], check=False)

    print(json.dumps(shown, indent=1))
    assert "recovered route 10.100.2.0/24 dev nebula1 metric 50 proto 102" in lab.gateway_log("h1")
    assert foreign == ["10.100.77.0/24 dev nebula1 proto static scope link "]
    by_status = {(row["prefix"], row["status"]) for row in shown}
    assert ("10.100.2.0/24", "ok") in by_status
    assert ("10.100.77.0/24", "foreign") in by_status
    nebula_rows = [row for row in shown if row["prefix"] == "10.100.2.0/24" and row["status"] == "foreign"]
    assert [row["notes"] for row in nebula_rows] == [["nebula"]]


def test_expired_host_route_goes_and_returns(lab):
    wait_until(lambda: flatnet_routes(lab, "h1", "10.100.3.0/24"), RECONCILE_WAIT, "h1's route to h3")

    lab.stop("h3", "gateway")
    try:
        wait_until(lambda: not flatnet_routes(lab, "h1", "10.100.3.0/24"), TTL + RECONCILE_WAIT, "h3 to expire on h1")
        print(all_routes(lab, "h1", "10.100.3.0/24"))
        assert "deleted route 10.100.3.0/24 dev nebula1 metric 50 proto 102: stale (host 3 expired)" in lab.gateway_log("h1")
    finally:
        lab.start("h3", "gateway")

    wait_until(lambda: flatnet_routes(lab, "h1", "10.100.3.0/24"), RETURN_WAIT, "h3 to return with its route")


def test_leaving_host_loses_flatnet_and_nebula_routes(lab):
    lab.leave("h3")
    try:
        wait_until(lambda: not flatnet_routes(lab, "h2", "10.100.3.0/24"), RECONCILE_WAIT, "h2's route to h3 to go")
        remaining = all_routes(lab, "h2", "10.100.3.0/24")
    finally:
        lab.join("h3")

    assert remaining == []
    wait_until(lambda: flatnet_routes(lab, "h2", "10.100.3.0/24"), RECONCILE_WAIT, "h2's route to h3 after rejoining")
