"""The gateway's route reconcile: keeps the kernel's routes to the live peers' subnets right.

A peer's subnet is routed while the peer is configured and not expired. The same rule makes
its containers routable in the view, and peers start with a full TTL. Every second the task
checks whether the set of live peers changed (a peer expired or came back), and reconciles at
once if it did. The kernel's notifications (see route_watch) also wake it at once when one of
flatnet's routes is deleted or the device its routes use comes back, as after a Nebula restart.
Otherwise it reconciles every ``[routes] interval`` seconds, which catches what the
notifications cannot tell. A peer removed from the config leaves with the next reconcile after
the gateway reads the new config: its route is stale and goes.

The gateway leaves its routes in place when it stops, so containers keep reaching each other
while it restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time

from flatnet.gateway.route_settings import RouteMode, RouteSettings
from flatnet.gateway.route_watch import RouteWatch
from flatnet.gateway.state import Gateway
from flatnet.logs import routes as logger
from flatnet.routes import Action, ApplyResult, Fleet, RouteError, RouteTable, Status, apply, plan, survey

TICK_SECONDS = 1.0
# After a notification, a short wait lets a burst of them (a device created, brought up and
# given its address) settle into one reconcile.
SETTLE_SECONDS = 0.2


class RouteReconciler:
    """Reconciles one gateway's routes, remembering which were in place to tell a recovery apart."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        # Keys (prefix, metric) of flatnet's routes that were in place after the last reconcile.
        self.in_place: set[tuple[ipaddress.IPv4Network, int]] = set()
        # What failed in the last reconcile, by prefix (or 'netlink'), as logged.
        self._problems: dict[str, str] = {}

    @property
    def settings(self) -> RouteSettings:
        # Read on every use: a reload of the gateway config replaces gateway.settings.
        return self.gateway.settings.routes

    def fleet(self) -> Fleet:
        peers = frozenset(peer.host_id for peer in self.gateway.settings.peers)
        return Fleet(self.gateway.settings.host_id, peers, self.gateway.expired_origins() & peers)

    def reconcile(self, fleet: Fleet) -> ApplyResult | None:
        """Make the kernel match ``fleet``; log what changed and what failed. Runs in a worker thread."""
        if self.settings.mode is RouteMode.OFF:
            return None
        try:
            with RouteTable() as table:
                rows = survey(table, self.settings, fleet)
                result = apply(table, plan(rows), recovered=frozenset(self.in_place))
        except RouteError as error:
            self._report({"netlink": error.english()})
            return None

        failed = {change.route.key for change, _ in result.failed}
        self.in_place = {row.kernel.key for row in rows if row.status is Status.OK}
        self.in_place |= {change.route.key for change in result.done if change.action is not Action.DELETE}
        self.in_place -= failed

        problems = {str(change.route.prefix): error.english() for change, error in result.failed}
        for row in rows:
            if row.blocked:
                problems[str(row.prefix)] = f"route {row.wanted.describe()} not added: {row.note_text(japanese=False)}"
        self._report(problems)
        return result

    def _report(self, problems: dict[str, str]) -> None:
        # The same failure every interval would flood the log: it is an ERROR once, then DEBUG.
        for key, message in problems.items():
            if self._problems.get(key) == message:
                logger.debug("%s; retrying in %.0f s", message, self.settings.interval)
            else:
                logger.error("%s; retrying in %.0f s", message, self.settings.interval)
        for key in self._problems.keys() - problems.keys():
            logger.info("route problem of %s resolved", key)
        self._problems = problems


async def reconcile_routes(gateway: Gateway) -> None:
    """Reconcile when the live peers change and every ``[routes] interval`` seconds, until cancelled."""
    reconciler = RouteReconciler(gateway)
    settings = reconciler.settings
    logger.info(
        "keeping routes to the peers' subnets (mode %s, metric %d, every %.0f s)",
        settings.mode.value, settings.metric, settings.interval,
    )
    watch = RouteWatch(lambda: reconciler.settings)
    watch.open()
    last_live: frozenset[int] | None = None
    last_run = float("-inf")
    try:
        while True:
            notified = watch.changed.is_set()
            if notified:
                await asyncio.sleep(SETTLE_SECONDS)
                watch.changed.clear()

            fleet = reconciler.fleet()
            now = time.monotonic()
            if notified or fleet.live_peers != last_live or now - last_run >= reconciler.settings.interval:
                if last_live is not None and fleet.live_peers != last_live:
                    logger.info("live peers changed from %s to %s", sorted(last_live), sorted(fleet.live_peers))
                await asyncio.to_thread(reconciler.reconcile, fleet)
                last_live, last_run = fleet.live_peers, now

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.changed.wait(), TICK_SECONDS)
    finally:
        watch.close()


def start(gateway: Gateway) -> list[asyncio.Task]:
    """Start the reconcile task unless ``[routes] mode`` is off; return the tasks started."""
    if gateway.settings.routes.mode is RouteMode.OFF:
        return []
    return [asyncio.create_task(reconcile_routes(gateway), name="routes")]
