"""The pure part of route reconcile: wanted routes, comparison with the kernel's, the plan."""

import ipaddress

import pytest
from pydantic import ValidationError

from flatnet.gateway.route_settings import RouteMode, RouteSettings
from flatnet.routes import (
    FLATNET_PROTOCOL, RTPROT_BOOT, RTPROT_KERNEL, Action, Fleet, Route, Status, compare, plan, subnet_host, wanted_routes,
)

DEV = RouteSettings(mode=RouteMode.DEV, device="nebula1", metric=50)
VIA = RouteSettings(mode=RouteMode.VIA, via="198.18.103.1", metric=50)
FLEET = Fleet(host_id=1, peers=frozenset({2, 3}))


def net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


def flatnet_route(prefix: str, device: str | None = "nebula1", metric: int = 50, gateway: str | None = None) -> Route:
    return Route(net(prefix), device=device, gateway=ipaddress.IPv4Address(gateway) if gateway else None, metric=metric)


def other_route(prefix: str, device: str = "nebula1", metric: int = 0, protocol: int = RTPROT_BOOT, gateway=None) -> Route:
    return Route(net(prefix), device=device, gateway=gateway, metric=metric, protocol=protocol)


def statuses(rows) -> list[tuple[str, str]]:
    return [(str(row.prefix), row.status.value) for row in rows]


def test_dev_mode_wants_one_route_per_live_peer():
    routes = wanted_routes(FLEET.live_peers, DEV)

    assert routes == [flatnet_route("10.100.2.0/24"), flatnet_route("10.100.3.0/24")]
    assert all(route.protocol == FLATNET_PROTOCOL for route in routes)


def test_via_mode_wants_gateway_without_device():
    routes = wanted_routes([2], VIA)

    assert routes == [flatnet_route("10.100.2.0/24", device=None, gateway="198.18.103.1")]


def test_off_mode_wants_nothing():
    assert wanted_routes([2, 3], RouteSettings()) == []


def test_expired_peer_is_not_live():
    fleet = Fleet(host_id=1, peers=frozenset({2, 3}), expired=frozenset({3}))

    assert fleet.live_peers == {2}


def test_matching_kernel_route_is_ok():
    rows = compare(wanted_routes([2], DEV), [flatnet_route("10.100.2.0/24")], FLEET)

    assert statuses(rows) == [("10.100.2.0/24", "ok")]
    assert plan(rows) == []


def test_missing_route_is_added():
    rows = compare(wanted_routes([2], DEV), [], FLEET)
    changes = plan(rows)

    assert statuses(rows) == [("10.100.2.0/24", "missing")]
    assert [(change.action, change.route) for change in changes] == [(Action.ADD, flatnet_route("10.100.2.0/24"))]


def test_route_of_flatnet_through_other_device_is_replaced():
    rows = compare(wanted_routes([2], DEV), [flatnet_route("10.100.2.0/24", device="eth0")], FLEET)
    changes = plan(rows)

    assert statuses(rows) == [("10.100.2.0/24", "wrong")]
    assert [(change.action, change.route) for change in changes] == [(Action.REPLACE, flatnet_route("10.100.2.0/24"))]


def test_route_at_old_metric_is_redone():
    rows = compare(wanted_routes([2], DEV), [flatnet_route("10.100.2.0/24", metric=70)], FLEET)
    changes = plan(rows)

    assert statuses(rows) == [("10.100.2.0/24", "missing"), ("10.100.2.0/24", "wrong")]
    assert [change.action for change in changes] == [Action.DELETE, Action.ADD]
    assert changes[0].route.metric == 70
    assert changes[1].route.metric == 50


def test_expired_host_route_is_stale_and_deleted():
    fleet = Fleet(host_id=1, peers=frozenset({2, 3}), expired=frozenset({3}))
    kernel = [flatnet_route("10.100.2.0/24"), flatnet_route("10.100.3.0/24")]

    rows = compare(wanted_routes(fleet.live_peers, DEV), kernel, fleet)
    changes = plan(rows)

    assert statuses(rows) == [("10.100.2.0/24", "ok"), ("10.100.3.0/24", "stale")]
    assert rows[1].note_text(japanese=False) == "host 3 expired"
    assert [(change.action, str(change.route.prefix)) for change in changes] == [(Action.DELETE, "10.100.3.0/24")]


def test_route_of_host_no_longer_configured_is_stale():
    rows = compare([], [flatnet_route("10.100.9.0/24")], FLEET)

    assert statuses(rows) == [("10.100.9.0/24", "stale")]
    assert rows[0].note_text(japanese=False) == "host 9 is not a peer"


def test_route_to_own_subnet_is_stale():
    rows = compare([], [flatnet_route("10.100.1.0/24")], FLEET)

    assert rows[0].note_text(japanese=False) == "this host's own subnet"


def test_foreign_route_to_another_prefix_is_left_alone():
    kernel = [flatnet_route("10.100.2.0/24"), other_route("10.100.77.0/24", protocol=4)]

    rows = compare(wanted_routes([2], DEV), kernel, FLEET, nebula_device="nebula1")

    assert statuses(rows) == [("10.100.2.0/24", "ok"), ("10.100.77.0/24", "foreign")]
    assert plan(rows) == []


def test_nebula_route_is_foreign_nebula():
    kernel = [flatnet_route("10.100.2.0/24"), other_route("10.100.2.0/24", metric=100)]

    rows = compare(wanted_routes([2], DEV), kernel, FLEET, nebula_device="nebula1")

    assert statuses(rows) == [("10.100.2.0/24", "ok"), ("10.100.2.0/24", "foreign")]
    assert rows[1].note_text(japanese=False) == "Nebula's unsafe route"
    assert plan(rows) == []


def test_lower_metric_foreign_route_is_preferred():
    foreign = other_route("10.100.2.0/24", device="eth0", gateway=ipaddress.IPv4Address("192.168.1.1"))

    rows = compare(wanted_routes([2], DEV), [foreign], FLEET, nebula_device="nebula1")

    foreign_row = next(row for row in rows if row.status is Status.FOREIGN)
    assert "preferred over flatnet's" in foreign_row.note_text(japanese=False)


def test_foreign_route_with_same_key_blocks_the_add():
    blocker = other_route("10.100.2.0/24", metric=50, protocol=4)

    rows = compare(wanted_routes([2], DEV), [blocker], FLEET)

    missing = next(row for row in rows if row.status is Status.MISSING)
    assert missing.blocked
    assert "blocked by 10.100.2.0/24 dev nebula1 metric 50 proto static" in missing.note_text(japanese=False)
    assert plan(rows) == []


def test_connected_routes_are_ignored():
    kernel = [
        other_route("10.100.0.0/24", protocol=RTPROT_KERNEL),
        other_route("10.100.1.0/24", device="flatnet0", protocol=RTPROT_KERNEL),
        other_route("198.18.0.0/24", device="eth0", protocol=RTPROT_KERNEL),
        other_route("0.0.0.0/0", device="eth0", protocol=RTPROT_BOOT),
    ]

    assert compare([], kernel, FLEET) == []


def test_via_route_matches_whatever_device_kernel_chose():
    kernel = [flatnet_route("10.100.2.0/24", device="eth0", gateway="198.18.103.1")]

    rows = compare(wanted_routes([2], VIA), kernel, FLEET)

    assert statuses(rows) == [("10.100.2.0/24", "ok")]


def test_plan_deletes_before_adding():
    fleet = Fleet(host_id=1, peers=frozenset({2, 3}), expired=frozenset({3}))
    kernel = [flatnet_route("10.100.3.0/24")]

    changes = plan(compare(wanted_routes(fleet.live_peers, DEV), kernel, fleet))

    assert [change.action for change in changes] == [Action.DELETE, Action.ADD]


def test_subnet_host_reads_third_byte():
    assert subnet_host(net("10.100.7.0/24")) == 7
    assert subnet_host(net("10.100.0.0/24")) is None
    assert subnet_host(net("10.100.7.0/25")) is None
    assert subnet_host(net("192.168.7.0/24")) is None


def test_describe_reads_like_ip_route():
    assert flatnet_route("10.100.2.0/24").describe() == "10.100.2.0/24 dev nebula1 metric 50 proto 102"
    assert other_route("10.100.2.0/24", metric=100).describe() == "10.100.2.0/24 dev nebula1 metric 100 proto boot"


@pytest.mark.parametrize(("table", "message"), [
    ({"mode": "via"}, "mode 'via' needs via"),
    ({"mode": "via", "via": "10.100.3.5"}, "inside the container network"),
    ({"mode": "dev", "device": "nebula1/x"}, "not a Linux interface name"),
    ({"mode": "dev", "device": "a-name-longer-than-15"}, "not a Linux interface name"),
    ({"mode": "dev", "metric": 0}, "greater than or equal to 1"),
    ({"mode": "dev", "metric": 100}, "less than or equal to 99"),
    ({"mode": "sideways"}, "'dev', 'via' or 'off'"),
])
def test_invalid_route_settings_name_the_rule(table, message):
    with pytest.raises(ValidationError) as raised:
        RouteSettings.model_validate(table)

    assert message in str(raised.value)
