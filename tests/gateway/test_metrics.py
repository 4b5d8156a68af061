"""GET /metrics moves as the gateway works: a scripted scenario on two real gateways."""

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flatnet.events import outbox
from flatnet.events.record import CONTAINER_ADDED, Change
from tests.gateway.harness import http, wait_until

pytestmark = pytest.mark.root


def _samples(gateway) -> dict[tuple[str, tuple], float]:
    status, body = http(gateway.netns, "GET", f"{gateway.api}/metrics")
    assert status == 200, body
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(gateway, name: str, **labels) -> float:
    return _samples(gateway).get((name, tuple(sorted(labels.items()))), 0.0)


def test_peer_events_are_counted(fleet):
    gateways = fleet()

    gateways[2].add_container("counted", "10.100.2.10")

    wait_until(lambda: _value(gateways[1], "flatnet_events_appended_total", origin="2") == 1, 5, "the append counted on gateway 1")
    assert _value(gateways[1], "flatnet_events_applied_total", origin="2") == 1
    assert _value(gateways[1], "flatnet_containers", host="2") == 1
    assert _value(gateways[1], "flatnet_log_head", origin="2") == 1
    assert _value(gateways[1], "flatnet_peer_connected", peer="2") == 1
    assert _value(gateways[1], "flatnet_peer_lag_events", peer="2") == 0


def test_proxy_requests_are_counted_by_decision(fleet):
    gateway = fleet(host_ids=(1,))[1]

    for _ in range(3):
        http(gateway.netns, "GET", f"{gateway.proxy}/", headers={"Host": "nobody.flatnet"})

    assert _value(gateway, "flatnet_proxy_requests_total", decision="not-found", status="404") == 3
    assert _value(gateway, "flatnet_proxy_request_duration_seconds_count", decision="not-found") == 3


def test_lost_peer_shows_in_reconnects_and_expiry(fleet):
    gateways = fleet(ttl=2, heartbeat=0.5)

    gateways[2].stop()

    wait_until(lambda: _value(gateways[1], "flatnet_stream_reconnects_total", peer="2") >= 1, 5, "a reconnect counted")
    assert _value(gateways[1], "flatnet_peer_connected", peer="2") == 0
    wait_until(lambda: _value(gateways[1], "flatnet_expired_origins") == 1, 10, "peer 2 counted as expired")


def test_outbox_depth_drops_when_drained(fleet):
    gateway = fleet(host_ids=(1,))[1]
    change = Change(
        id=str(uuid.uuid4()), type=CONTAINER_ADDED, ts="2026-12-04T10:00:00.000Z",
        data={"id": "e" * 12, "ip": "10.100.1.40", "hostname": "late", "ports": [], "hostId": 1,
              "createdAt": "2026-12-04T10:00:00.000Z", "ifname": "eth0"},
    )

    outbox.write_change(gateway.data_dir, change)

    wait_until(lambda: _value(gateway, "flatnet_outbox_depth") == 0 and _value(gateway, "flatnet_containers", host="1") == 1,
               10, "the outbox drained into the view")
    assert _value(gateway, "flatnet_events_appended_total", origin="1") == 1
