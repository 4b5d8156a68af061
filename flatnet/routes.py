"""Kernel routes to the other hosts' container subnets: what flatnet wants, what the kernel has,
and the changes that make them match.

Every route flatnet adds carries its own route protocol number, ``FLATNET_PROTOCOL`` (``ip route``
shows ``proto 102``), and only routes with that number are ever changed or removed. Any other
route to a container subnet is reported as ``foreign`` and left alone.

Nebula 1.6.1 installs a kernel route for each of its ``tun.unsafe_routes`` when it starts
(protocol ``boot``, the metric of the entry, 0 without one) and never again. flatnet's routes
use their own metric (``[routes] metric``, 1-99), so the two never share a key: Nebula would fail
to start on an identical route, and flatnet never replaces Nebula's. `flatnet nebula config`
gives the unsafe routes metric 100, so the kernel prefers flatnet's route while it exists. In
mode ``dev`` both go into the same tun, and Nebula's stays as a fallback.

:func:`compare` and :func:`plan` are pure; :class:`RouteTable` is the only code here that
talks to the kernel, through pyroute2.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence

from flatnet import i18n
from flatnet.errors import FlatnetError
from flatnet.gateway.route_settings import CONTAINER_NETWORK, RouteMode, RouteSettings
from flatnet.logs import routes as logger

i18n.define({
    "routes.add_failed": ("failed to add route {route}: {cause}", "経路 {route} を追加できませんでした: {cause}"),
    "routes.replace_failed": ("failed to replace route {route}: {cause}", "経路 {route} を置き換えられませんでした: {cause}"),
    "routes.delete_failed": ("failed to delete route {route}: {cause}", "経路 {route} を削除できませんでした: {cause}"),
    "routes.lookup_failed": ("failed to look up the route to {address}: {cause}", "{address} への経路を検索できませんでした: {cause}"),
    "routes.no_device": (
        "device {device} does not exist; is Nebula running on this host?",
        "デバイス {device} がありません。このホストで Nebula は動いていますか？",
    ),
    "routes.unreachable": (
        "the next hop {via} is not on a directly connected network; check [routes] via",
        "次ホップ {via} は直接接続されたネットワーク上にありません。[routes] via を確認してください",
    ),
    "routes.netlink_failed": ("failed to open a netlink socket: {cause}", "netlink ソケットを開けませんでした: {cause}"),
    "routes.note_expired": ("host {host} expired", "ホスト {host} は期限切れ"),
    "routes.note_not_peer": ("host {host} is not a peer", "ホスト {host} はピアではありません"),
    "routes.note_own_subnet": ("this host's own subnet", "このホスト自身のサブネット"),
    "routes.note_not_container_subnet": ("not a container subnet", "コンテナーのサブネットではありません"),
    "routes.note_nebula": ("Nebula's unsafe route", "Nebula の unsafe route"),
    "routes.note_preferred": ("preferred over flatnet's (lower metric)", "flatnet の経路より優先（メトリックが小さい）"),
    "routes.note_blocked": (
        "blocked by {route}: remove it or change [routes] metric",
        "{route} が同じキーを使っています。削除するか [routes] metric を変更してください",
    ),
    "routes.note_other_path": ("goes another way", "別の経路を通ります"),
    "routes.note_extra": ("extra route at metric {metric}", "メトリック {metric} の余分な経路"),
})

# Route protocol number of flatnet's routes. The kernel does not interpret values above
# RTPROT_STATIC (4); this one is not in iproute2's rt_protos list.
FLATNET_PROTOCOL = 102
RTPROT_KERNEL = 2
# Nebula installs its unsafe routes with vishvananda/netlink's default protocol, boot, as `ip route add` does.
RTPROT_BOOT = 3
MAIN_TABLE = 254
RTN_UNICAST = 1
SCOPE_LINK = 253
SCOPE_NOWHERE = 255


class Status(enum.Enum):
    """The result of comparing one route with the routes flatnet wants."""

    OK = "ok"  # flatnet's route, as wanted
    MISSING = "missing"  # wanted, and the kernel has no route of flatnet's for it
    WRONG = "wrong"  # flatnet's route to a wanted prefix, through another path or metric
    STALE = "stale"  # flatnet's route to a host that left or expired
    FOREIGN = "foreign"  # not flatnet's: reported, never changed


class Action(enum.Enum):
    ADD = "add"
    REPLACE = "replace"
    DELETE = "delete"


@dataclasses.dataclass(frozen=True)
class Route:
    """One IPv4 route of the main table, as wanted or as the kernel has it."""

    prefix: ipaddress.IPv4Network
    device: str | None = None
    gateway: ipaddress.IPv4Address | None = None
    metric: int = 0
    protocol: int = FLATNET_PROTOCOL

    @property
    def is_flatnet(self) -> bool:
        return self.protocol == FLATNET_PROTOCOL

    @property
    def key(self) -> tuple[ipaddress.IPv4Network, int]:
        """Return prefix and metric, which tell routes of one table apart in the kernel (TOS is always 0 here)."""
        return self.prefix, self.metric

    def same_path(self, wanted: Route) -> bool:
        """Tell whether this route sends packets where ``wanted`` does.

        The kernel picks the device of a ``via`` route itself, so a wanted route without a
        device matches any.
        """
        if self.gateway != wanted.gateway:
            return False
        return wanted.device is None or self.device == wanted.device

    def describe(self) -> str:
        """Return the route in ``ip route`` words, e.g. ``10.100.2.0/24 dev nebula1 metric 50 proto 102``."""
        words = [str(self.prefix)]
        if self.gateway is not None:
            words += ["via", str(self.gateway)]
        if self.device is not None:
            words += ["dev", self.device]
        words += ["metric", str(self.metric), "proto", protocol_name(self.protocol)]
        return " ".join(words)


def protocol_name(protocol: int) -> str:
    names = {RTPROT_KERNEL: "kernel", RTPROT_BOOT: "boot", 4: "static", 16: "dhcp"}
    return names.get(protocol, str(protocol))


def container_subnet(host_id: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"10.100.{host_id}.0/24")


def subnet_host(prefix: ipaddress.IPv4Network) -> int | None:
    """Return the host id whose container subnet ``prefix`` is, or None."""
    host_id = prefix.network_address.packed[2]
    if prefix.prefixlen == 24 and prefix.subnet_of(CONTAINER_NETWORK) and 1 <= host_id <= 254:
        return host_id
    return None


def wanted_routes(live_peers: Iterable[int], settings: RouteSettings) -> list[Route]:
    """Return one route per live peer's container subnet, through Nebula in the mode that ``settings`` sets."""
    if settings.mode is RouteMode.OFF:
        return []
    routes = []
    for host_id in sorted(set(live_peers)):
        if settings.mode is RouteMode.DEV:
            route = Route(container_subnet(host_id), device=settings.device, metric=settings.metric)
        else:
            route = Route(container_subnet(host_id), gateway=settings.via, metric=settings.metric)
        routes.append(route)
    return routes


@dataclasses.dataclass(frozen=True)
class Note:
    """The reason for a row's status: a message key of the catalog and its values."""

    key: str
    values: tuple[tuple[str, object], ...] = ()

    def text(self, *, japanese: bool | None = None) -> str:
        return i18n.text(f"routes.note_{self.key}", japanese=japanese, **dict(self.values))


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of `flatnet routes show`: a prefix, its status, the wanted and the kernel's route."""

    prefix: ipaddress.IPv4Network
    status: Status
    wanted: Route | None = None
    kernel: Route | None = None
    notes: tuple[Note, ...] = ()

    @property
    def host_id(self) -> int | None:
        return subnet_host(self.prefix)

    @property
    def blocked(self) -> bool:
        return any(note.key == "blocked" for note in self.notes)

    def note_text(self, *, japanese: bool | None = None) -> str:
        return ", ".join(note.text(japanese=japanese) for note in self.notes)


@dataclasses.dataclass(frozen=True)
class Change:
    """One change to the kernel's routes, with the row that asked for it."""

    action: Action
    route: Route
    row: Row


@dataclasses.dataclass(frozen=True)
class Fleet:
    """This host and its peers: the configured ones, and those the gateway's liveness has expired."""

    host_id: int
    peers: frozenset[int]
    expired: frozenset[int] = frozenset()

    @property
    def live_peers(self) -> frozenset[int]:
        return self.peers - self.expired

    def why_unwanted(self, prefix: ipaddress.IPv4Network) -> Note:
        host = subnet_host(prefix)
        if host is None:
            return Note("not_container_subnet")
        if host == self.host_id:
            return Note("own_subnet")
        if host in self.expired:
            return Note("expired", (("host", host),))
        return Note("not_peer", (("host", host),))


def is_relevant(route: Route) -> bool:
    """Tell whether ``compare`` looks at a kernel route: flatnet's, or another to a container subnet.

    Connected routes (protocol ``kernel``) are the kernel's own, such as Nebula's network on its
    tun or this host's bridge, and are left out.
    """
    if route.is_flatnet:
        return True
    return route.protocol != RTPROT_KERNEL and route.prefix.subnet_of(CONTAINER_NETWORK)


def compare(
    wanted: Iterable[Route], kernel: Iterable[Route], fleet: Fleet, *, nebula_device: str | None = None,
) -> list[Row]:
    """Compare the wanted routes with the kernel's and return one row per route, sorted by prefix.

    A foreign route on ``nebula_device`` without a gateway is noted as Nebula's, since Nebula
    installs its unsafe routes there.
    """
    wanted_by_prefix = {route.prefix: route for route in wanted}
    relevant = [route for route in kernel if is_relevant(route)]
    rows: list[Row] = []

    for prefix, route in wanted_by_prefix.items():
        rows += _compare_prefix(route, [r for r in relevant if r.prefix == prefix], nebula_device)

    for route in relevant:
        if route.prefix in wanted_by_prefix:
            continue
        if route.is_flatnet:
            rows.append(Row(route.prefix, Status.STALE, kernel=route, notes=(fleet.why_unwanted(route.prefix),)))
        else:
            rows.append(Row(route.prefix, Status.FOREIGN, kernel=route, notes=_foreign_notes(route, None, nebula_device)))

    order = list(Status)
    return sorted(rows, key=lambda row: (row.prefix, order.index(row.status), row.kernel.metric if row.kernel else -1))


def _compare_prefix(wanted: Route, present: Sequence[Route], nebula_device: str | None) -> list[Row]:
    mine = [route for route in present if route.is_flatnet]
    foreign = [route for route in present if not route.is_flatnet]
    rows = [
        Row(wanted.prefix, Status.FOREIGN, wanted, route, _foreign_notes(route, wanted, nebula_device))
        for route in foreign
    ]

    exact = next((route for route in mine if route.metric == wanted.metric and route.same_path(wanted)), None)
    same_key = next((route for route in mine if route.key == wanted.key), None)
    if exact is not None:
        rows.append(Row(wanted.prefix, Status.OK, wanted, exact))
    elif same_key is not None:
        rows.append(Row(wanted.prefix, Status.WRONG, wanted, same_key, (Note("other_path"),)))
    else:
        blocker = next((route for route in foreign if route.key == wanted.key), None)
        notes = (Note("blocked", (("route", blocker.describe()),)),) if blocker is not None else ()
        rows.append(Row(wanted.prefix, Status.MISSING, wanted, None, notes))

    for route in mine:
        if route is not exact and route is not same_key:
            rows.append(Row(wanted.prefix, Status.WRONG, wanted, route, (Note("extra", (("metric", route.metric),)),)))
    return rows


def survey(table: RouteTable, settings: RouteSettings, fleet: Fleet) -> list[Row]:
    """Compare the routes ``settings`` wants for ``fleet`` with the kernel's main table."""
    wanted = wanted_routes(fleet.live_peers, settings)
    nebula_device = settings.device if settings.mode is RouteMode.DEV else None
    return compare(wanted, table.routes(), fleet, nebula_device=nebula_device)


def _foreign_notes(route: Route, wanted: Route | None, nebula_device: str | None) -> tuple[Note, ...]:
    notes = []
    if route.protocol == RTPROT_BOOT and nebula_device is not None and route.device == nebula_device and route.gateway is None:
        notes.append(Note("nebula"))
    if wanted is not None and route.metric < wanted.metric and not route.same_path(wanted):
        notes.append(Note("preferred"))
    return tuple(notes)


def plan(rows: Iterable[Row]) -> list[Change]:
    """Return the changes that bring the kernel to the wanted routes, deletions first.

    A missing route that a foreign route of the same key blocks gets no change, because
    adding it would fail and replacing it would overwrite a route that is not flatnet's.
    """
    deletions, additions = [], []
    for row in rows:
        if row.status is Status.STALE:
            deletions.append(Change(Action.DELETE, row.kernel, row))
        elif row.status is Status.WRONG and row.kernel.key == row.wanted.key:
            additions.append(Change(Action.REPLACE, row.wanted, row))
        elif row.status is Status.WRONG:
            deletions.append(Change(Action.DELETE, row.kernel, row))
        elif row.status is Status.MISSING and not row.blocked:
            additions.append(Change(Action.ADD, row.wanted, row))
    return deletions + additions


def blocked_rows(rows: Iterable[Row]) -> list[Row]:
    return [row for row in rows if row.blocked]


class RouteError(FlatnetError):
    """A failed netlink operation on a route; the message names the route and the cause."""

    def __init__(self, key: str, **values: object) -> None:
        self.key = key
        self.values = values
        super().__init__(i18n.text(key, **values))

    def english(self) -> str:
        """Return the message in English, for the logs."""
        values = {name: (value.english() if isinstance(value, RouteError) else value) for name, value in self.values.items()}
        return i18n.text(self.key, japanese=False, **values)


@dataclasses.dataclass(frozen=True)
class Lookup:
    """Where the kernel sends a packet to one address (RTM_GETROUTE)."""

    device: str | None
    gateway: ipaddress.IPv4Address | None
    source: ipaddress.IPv4Address | None


class RouteTable:
    """The main IPv4 routing table of the current network namespace, through one netlink socket."""

    def __init__(self) -> None:
        from pyroute2 import IPRoute

        try:
            self._ipr = IPRoute()
        except OSError as error:
            raise RouteError("routes.netlink_failed", cause=error.strerror or error) from None
        self._names: dict[int, str] = {}

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> RouteTable:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _device_names(self) -> dict[int, str]:
        return {link["index"]: link.get_attr("IFLA_IFNAME") for link in self._ipr.get_links()}

    def device_index(self, name: str) -> int | None:
        indexes = self._ipr.link_lookup(ifname=name)
        return indexes[0] if indexes else None

    def routes(self) -> list[Route]:
        """Return the unicast IPv4 routes of the main table."""
        names = self._device_names()
        routes = []
        for message in self._ipr.route("dump", family=socket.AF_INET, table=MAIN_TABLE):
            table = message.get_attr("RTA_TABLE") or message["table"]
            if table != MAIN_TABLE or message["type"] != RTN_UNICAST:
                continue
            destination = message.get_attr("RTA_DST") or "0.0.0.0"
            gateway = message.get_attr("RTA_GATEWAY")
            # A multipath route has no RTA_OIF; it shows with no device and no gateway.
            routes.append(Route(
                prefix=ipaddress.IPv4Network(f"{destination}/{message['dst_len']}"),
                device=names.get(message.get_attr("RTA_OIF")),
                gateway=ipaddress.IPv4Address(gateway) if gateway else None,
                metric=message.get_attr("RTA_PRIORITY") or 0,
                protocol=message["proto"],
            ))
        return routes

    def apply(self, change: Change) -> None:
        """Make one change; raise RouteError naming the route and the cause."""
        from pyroute2.netlink.exceptions import NetlinkError

        route = change.route
        arguments = {
            "dst": str(route.prefix), "table": MAIN_TABLE, "proto": FLATNET_PROTOCOL, "priority": route.metric,
        }
        try:
            if change.action is Action.DELETE:
                # RT_SCOPE_NOWHERE matches a route of any scope; the protocol keeps others' routes safe.
                self._ipr.route("del", scope=SCOPE_NOWHERE, **arguments)
                return
            if route.gateway is not None:
                arguments["gateway"] = str(route.gateway)
            else:
                index = self.device_index(route.device)
                if index is None:
                    raise _failure(change, RouteError("routes.no_device", device=route.device))
                arguments.update(oif=index, scope=SCOPE_LINK)
            self._ipr.route("replace" if change.action is Action.REPLACE else "add", **arguments)
        except NetlinkError as error:
            if change.action is Action.DELETE and error.code == errno.ESRCH:
                return  # already gone: the wanted end state
            raise _failure(change, _cause(error.code, route)) from None

    def lookup(self, address: ipaddress.IPv4Address) -> Lookup | None:
        """Return where the kernel would send a packet to ``address``, or None when it has no route."""
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            answer = self._ipr.route("get", dst=str(address))
        except NetlinkError as error:
            if error.code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                return None
            raise RouteError("routes.lookup_failed", address=address, cause=os.strerror(error.code)) from None
        message = answer[0]
        gateway = message.get_attr("RTA_GATEWAY")
        source = message.get_attr("RTA_PREFSRC")
        return Lookup(
            device=self._device_names().get(message.get_attr("RTA_OIF")),
            gateway=ipaddress.IPv4Address(gateway) if gateway else None,
            source=ipaddress.IPv4Address(source) if source else None,
        )


def _cause(code: int, route: Route) -> str | RouteError:
    if code == errno.ENODEV:
        return RouteError("routes.no_device", device=route.device)
    if code == errno.ENETUNREACH and route.gateway is not None:
        return RouteError("routes.unreachable", via=route.gateway)
    return os.strerror(code)


def _failure(change: Change, cause: str | RouteError) -> RouteError:
    return RouteError(f"routes.{change.action.value}_failed", route=change.route.describe(), cause=cause)


@dataclasses.dataclass
class ApplyResult:
    done: list[Change] = dataclasses.field(default_factory=list)
    failed: list[tuple[Change, RouteError]] = dataclasses.field(default_factory=list)


def apply(table: RouteTable, changes: Iterable[Change], *, recovered: frozenset = frozenset()) -> ApplyResult:
    """Make ``changes`` one by one, logging each at INFO; a failure is recorded and the rest go on.

    A route whose key is in ``recovered`` had been in place and was removed by something else;
    putting it back is logged as recovered, at WARNING.
    """
    result = ApplyResult()
    for change in changes:
        try:
            table.apply(change)
        except RouteError as error:
            result.failed.append((change, error))
            continue
        result.done.append(change)
        notes = change.row.note_text(japanese=False)
        reason = f" ({notes})" if notes else ""
        if change.action is Action.ADD and change.route.key in recovered:
            logger.warning("recovered route %s: something else had removed it", change.route.describe())
        elif change.action is Action.DELETE:
            logger.info("deleted route %s: %s%s", change.route.describe(), change.row.status.value, reason)
        else:
            logger.info("%s route %s%s", "added" if change.action is Action.ADD else "replaced", change.route.describe(), reason)
    return result
