"""Which rtnetlink notifications wake the gateway's route reconcile, from hand-built messages."""

import ipaddress
import struct

import pytest

from flatnet.gateway.route_settings import RouteSettings
from flatnet.gateway.route_watch import IFF_UP, IFLA_IFNAME, NLMSG_OVERRUN, RTM_DELROUTE, RTM_NEWADDR, RTM_NEWLINK, wakes_reconcile
from flatnet.routes import FLATNET_PROTOCOL

DEV = RouteSettings(mode="dev", device="nebula1")
VIA = RouteSettings(mode="via", via=ipaddress.IPv4Address("172.20.48.1"))


def message(kind: int, payload: bytes) -> bytes:
    body = struct.pack("=IHHII", 16 + len(payload), kind, 0, 0, 0) + payload
    return body + b"\0" * (-len(body) % 4)


def link(name: str, flags: int) -> bytes:
    attribute = name.encode() + b"\0"
    payload = struct.pack("=BxHiII", 0, 0, 7, flags, 0) + struct.pack("=HH", 4 + len(attribute), IFLA_IFNAME) + attribute
    return message(RTM_NEWLINK, payload + b"\0" * (-len(payload) % 4))


def deleted_route(protocol: int) -> bytes:
    return message(RTM_DELROUTE, struct.pack("=BBBBBBBBI", 2, 24, 0, 0, 254, protocol, 253, 1, 0))


@pytest.mark.parametrize(
    ("data", "settings", "wakes"),
    [
        (deleted_route(FLATNET_PROTOCOL), DEV, True),
        (deleted_route(4), DEV, False),
        (link("nebula1", IFF_UP), DEV, True),
        (link("nebula1", 0), DEV, False),
        (link("veth1234", IFF_UP), DEV, False),
        (link("veth1234", IFF_UP), VIA, True),
        (message(RTM_NEWADDR, b"\0" * 8), VIA, True),
        (message(RTM_NEWADDR, b"\0" * 8), DEV, False),
        (message(NLMSG_OVERRUN, b""), DEV, True),
        (link("veth1234", IFF_UP) + deleted_route(FLATNET_PROTOCOL), DEV, True),
        (b"\x05\x00", DEV, False),
    ],
    ids=[
        "flatnet-route-deleted", "foreign-route-deleted", "device-up", "device-down", "other-link-dev-mode",
        "other-link-via-mode", "address-via-mode", "address-dev-mode", "overrun", "second-message", "truncated",
    ],
)
def test_notification_wakes_reconcile(data, settings, wakes):
    assert wakes_reconcile(data, settings) is wakes
