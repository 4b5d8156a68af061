"""The gateway keeps the routes right: at start, when a peer expires or returns, and after a hand delete.

Gateways listen on 127.0.<host>.1 inside one throwaway namespace, which also has a tun called
nebula1 for the routes to go into; no Nebula runs, the routes only have to be right.
"""

import pytest

from tests.gateway.harness import GatewayProcess, wait_until
from tests.routes.conftest import ip, routes

pytestmark = pytest.mark.root

FLATNET_ROUTE = "dev nebula1 proto 102 scope link metric 50 linkdown"


def _gateway(netns, tmp_path, host_id, peers, *, ttl=300, interval=1) -> GatewayProcess:
    gateway = GatewayProcess(netns, tmp_path, host_id, peers, ttl=ttl, heartbeat=1)
    # [routes] may follow the [[peers]] tables: a TOML table header ends the array before it.
    gateway.config.write_text(gateway.config.read_text() + f'\n[routes]\nmode = "dev"\ninterval = {interval}\n')
    return gateway


@pytest.fixture
def gateways():
    started: list[GatewayProcess] = []
    yield started
    for gateway in started:
        gateway.stop()


def _flatnet_routes(netns: str, prefix: str) -> list[str]:
    return [line for line in routes(netns, prefix) if "proto 102" in line]


def test_gateway_adds_routes_to_its_peers_at_start(host_netns, tmp_path, gateways):
    gateway = _gateway(host_netns, tmp_path, 1, [2, 3])
    gateway.start()
    gateways.append(gateway)

    wait_until(lambda: _flatnet_routes(host_netns, "10.100.3.0/24"), 10, "the route to host 3")

    assert routes(host_netns, "10.100.2.0/24") == [f"10.100.2.0/24 {FLATNET_ROUTE}"]
    assert "added route 10.100.2.0/24 dev nebula1 metric 50 proto 102" in gateway.log_text()


def test_route_deleted_by_hand_comes_back_as_recovered(host_netns, tmp_path, gateways):
    gateway = _gateway(host_netns, tmp_path, 1, [2])
    gateway.start()
    gateways.append(gateway)
    wait_until(lambda: _flatnet_routes(host_netns, "10.100.2.0/24"), 10, "the route to host 2")
    ip(host_netns, "route", "add", "10.100.77.0/24", "dev", "nebula1", "proto", "static")

    ip(host_netns, "route", "del", "10.100.2.0/24", "proto", "102", "metric", "50")

    wait_until(lambda: _flatnet_routes(host_netns, "10.100.2.0/24"), 10, "the route to host 2 to come back")
    assert "WARNING flatnet.routes: recovered route 10.100.2.0/24 dev nebula1 metric 50 proto 102" in gateway.log_text()
    assert routes(host_netns, "10.100.77.0/24") == ["10.100.77.0/24 dev nebula1 proto static scope link linkdown"]


def test_expired_peer_loses_its_route_until_it_returns(host_netns, tmp_path, gateways):
    gateway = _gateway(host_netns, tmp_path, 1, [2], ttl=3)
    gateway.start()
    gateways.append(gateway)
    wait_until(lambda: _flatnet_routes(host_netns, "10.100.2.0/24"), 10, "the route to host 2")

    wait_until(lambda: not _flatnet_routes(host_netns, "10.100.2.0/24"), 15, "host 2 to expire and lose its route")
    assert "deleted route 10.100.2.0/24 dev nebula1 metric 50 proto 102: stale (host 2 expired)" in gateway.log_text()

    peer = _gateway(host_netns, tmp_path, 2, [1], ttl=3)
    peer.start()
    gateways.append(peer)

    wait_until(lambda: _flatnet_routes(host_netns, "10.100.2.0/24"), 30, "host 2 to return and get its route back")


def test_missing_device_is_logged_once_then_fixed(host_netns, tmp_path, gateways):
    ip(host_netns, "link", "del", "nebula1")
    gateway = _gateway(host_netns, tmp_path, 1, [2])
    gateway.start()
    gateways.append(gateway)
    wait_until(lambda: "device nebula1 does not exist" in gateway.log_text(), 10, "the missing device in the log")
    wait_until(lambda: gateway.log_text().count("retrying in 1 s") >= 3, 10, "a few more reconciles")

    ip(host_netns, "tuntap", "add", "nebula1", "mode", "tun")
    ip(host_netns, "link", "set", "nebula1", "up")

    wait_until(lambda: _flatnet_routes(host_netns, "10.100.2.0/24"), 10, "the route once nebula1 exists")
    log = gateway.log_text()
    assert log.count("ERROR flatnet.routes: failed to add route 10.100.2.0/24") == 1
    assert "route problem of 10.100.2.0/24 resolved" in log


# With an interval this long, only the kernel's notifications can bring a route back within the test.
NOTIFIED_ONLY = 600


def test_deleted_route_returns_on_notification(host_netns, tmp_path, gateways):
    gateway = _gateway(host_netns, tmp_path, 1, [2], interval=NOTIFIED_ONLY)
    gateway.start()
    gateways.append(gateway)
    wait_until(lambda: _flatnet_routes(host_netns, "10.100.2.0/24"), 10, "the route to host 2")

    ip(host_netns, "route", "del", "10.100.2.0/24", "proto", "102", "metric", "50")

    wait_until(lambda: _flatnet_routes(host_netns, "10.100.2.0/24"), 10, "the route to host 2 to come back")
    assert "recovered route 10.100.2.0/24 dev nebula1 metric 50 proto 102" in gateway.log_text()


def test_recreated_tun_gets_routes_back(host_netns, tmp_path, gateways):
    gateway = _gateway(host_netns, tmp_path, 1, [2, 3], interval=NOTIFIED_ONLY)
    gateway.start()
    gateways.append(gateway)
    wait_until(lambda: _flatnet_routes(host_netns, "10.100.3.0/24"), 10, "the route to host 3")

    # What a Nebula restart does to the routes: its device, and every route on it, goes and comes back.
    ip(host_netns, "link", "del", "nebula1")
    assert _flatnet_routes(host_netns, "10.100.2.0/24") == []
    ip(host_netns, "tuntap", "add", "nebula1", "mode", "tun")
    ip(host_netns, "link", "set", "nebula1", "up")
    ip(host_netns, "addr", "add", "10.100.0.1/24", "dev", "nebula1")

    wait_until(lambda: _flatnet_routes(host_netns, "10.100.2.0/24"), 10, "the route to host 2 to come back")
    wait_until(lambda: _flatnet_routes(host_netns, "10.100.3.0/24"), 10, "the route to host 3 to come back")
    assert routes(host_netns, "10.100.2.0/24") == [f"10.100.2.0/24 {FLATNET_ROUTE}"]
    assert routes(host_netns, "10.100.3.0/24") == [f"10.100.3.0/24 {FLATNET_ROUTE}"]
    log = gateway.log_text()
    assert "recovered route 10.100.2.0/24 dev nebula1 metric 50 proto 102" in log
    assert "recovered route 10.100.3.0/24 dev nebula1 metric 50 proto 102" in log
