"""Histories with known answers, written as a gateway writes them.

:class:`Fleet` keeps one gateway's data directory: every origin's log (the
gateway's own log and its replicas, written with ``OriginLog``), the
gateway's view (a registry ``View`` that receives an origin's events only
when the test delivers them, as a lagging stream would), and its decision log
(``DecisionLog``), with each request routed by the proxy's ``Router``. Times
are explicit POSIX times, so a test can state the exact lag it expects.
"""

from __future__ import annotations

import asyncio
import types
import uuid
from pathlib import Path

import orjson

from flatnet.events import snapshot as snapshots
from flatnet.events.log import OriginLog
from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Event
from flatnet.gateway import wire
from flatnet.gateway.decisions import DecisionLog, DecisionRecord
from flatnet.gateway.proxy import Router
from flatnet.gateway.settings import Settings
from flatnet.registry import Container, View, format_time

START = 1_800_000_000.0
NODE = "7d7c8f4e-0f6a-4d8e-9b1e-3c3a2f1d5e60"


class ViewRoutes:
    """A RoutingState over a plain View, with the lookups the gateway's GatewayRoutes makes."""

    def __init__(self, settings: Settings, view: View):
        self.settings = settings
        self.view = view
        self.expired: frozenset[int] = frozenset()
        self.silent: dict[int, float] = {}
        self.fleet: Fleet | None = None

    def lookup(self, name: str) -> tuple[Container | None, frozenset[int]]:
        matches = self.view.named(name, expired_origins=self.expired)
        return (matches[0] if matches else None), self.expired

    def lookup_expired(self, name: str) -> Container | None:
        matches = self.view.named(name)
        return matches[0] if matches else None

    def vector(self) -> dict[int, int]:
        return dict(self.view.vector)

    def silent_seconds(self, origin: int) -> float:
        return 0.0 if origin == self.settings.host_id else self.silent.get(origin, 0.0)

    def mark_stale(self, name: str, container: Container) -> None:
        pass

    async def pull(self, origin: int) -> None:
        self.fleet.deliver(origin)

    def observe(self, batch: list[DecisionRecord]) -> None:
        pass


class Fleet:
    """One gateway's data directory, filled event by event and request by request."""

    def __init__(self, data_dir: Path, *, host_id: int = 1, peers: tuple[int, ...] = (2, 3), stale_policy: str = "warn"):
        self.data_dir = data_dir
        self.host_id = host_id
        self.settings = Settings.model_validate({
            "host_id": host_id, "data_dir": str(data_dir), "api_listen": f"127.0.{host_id}.1:8080",
            "proxy_listen": f"127.0.{host_id}.1:8000", "stale_policy": stale_policy,
            "peers": [{"host_id": peer, "api": f"http://10.100.0.{peer}:8080"} for peer in peers],
        })
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "node.json").write_text(orjson.dumps({"node": NODE, "epoch": 1}).decode())
        # The gateway opens its own log at start, before it has any event.
        self.logs: dict[int, OriginLog] = {host_id: OriginLog(data_dir / "log" / str(host_id), host_id)}
        # Events appended to each origin's log but not yet in the gateway's view.
        self.undelivered: dict[int, list[Event]] = {}
        self.view = View()
        self.truth = View()
        self.state = ViewRoutes(self.settings, self.view)
        self.state.fleet = self
        self.router = Router(self.state, types.SimpleNamespace(observers=[]))
        self.records: list[DecisionRecord] = []
        self._instances: dict[str, str] = {}

    # The owners' logs

    def add(
        self, origin: int, name: str, *, at: float, container_id: str | None = None, ports: tuple[int, ...] = (80,), number: int = 10,
        aliases: tuple[str, ...] = (),
    ) -> str:
        """Append ``container.added`` to ``origin``'s log at time ``at``; the view gets it on delivery."""
        container_id = container_id or uuid.uuid4().hex
        created = format_time(at)
        self._instances[container_id] = created
        data = {
            "id": container_id, "ip": f"10.100.{origin}.{number}", "hostname": name, "ports": list(ports),
            "hostId": origin, "createdAt": created, "ifname": "eth0",
        }
        if aliases:
            data["aliases"] = list(aliases)
        self._append(origin, CONTAINER_ADDED, data, at)
        return container_id

    def remove(self, origin: int, container_id: str, *, at: float) -> None:
        data = {"id": container_id, "reason": "deleted", "createdAt": self._instances[container_id]}
        self._append(origin, CONTAINER_REMOVED, data, at)

    def _append(self, origin: int, event_type: str, data: dict, at: float) -> None:
        log = self.logs.get(origin)
        if log is None:
            log = self.logs[origin] = OriginLog(self.data_dir / "log" / str(origin), origin)
        # Each host's gateway has a node id of its own, and node.json contains this gateway's.
        node = NODE if origin == self.host_id else str(uuid.UUID(int=origin))
        event = Event(origin, log.head + 1, format_time(at), node, 1, str(uuid.uuid4()), event_type, 1, data)
        log.append(event)
        self.truth.apply(event)
        self.undelivered.setdefault(origin, []).append(event)
        if origin == self.host_id:
            # The gateway applies its own events as soon as they are durable.
            self.deliver(origin)

    def deliver(self, origin: int | None = None) -> None:
        """Apply the events ``origin`` (every origin, by default) has sent so far to the gateway's view."""
        for each in ([origin] if origin is not None else sorted(self.undelivered)):
            for event in self.undelivered.pop(each, []):
                self.view.apply(event)

    # Requests

    def request(
        self, name: str, *, at: float, hop: int | None = None, expired: tuple[int, ...] = (), status: int = 200,
        silent: dict[int, float] | None = None, not_here: bool = True,
    ) -> DecisionRecord:
        """Route a request for ``name``.domain at time ``at`` as the gateway's proxy does, and record it.

        With ``not_here``, a request routed to a peer whose own log no longer
        has the container gets the "not here" response, and the Router's retry
        runs, pulling that peer's events; without it, the request is recorded
        as routed (as when the connection failed first), with ``status``.
        """
        self.state.expired = frozenset(expired)
        self.state.silent = dict(silent or {})
        host = f"{name}.{self.settings.domain}".encode()
        headers = [(b"Host", host)]
        fields = {b"host": [host]}
        if hop is not None:
            headers.append((b"X-Flatnet-Hop", b"%d" % hop))
            fields[b"x-flatnet-hop"] = [b"%d" % hop]
        head = wire.RequestHead(b"GET", b"/", "1.1", headers, True, False, wire.Framing.NONE, fields)
        route = self.router.route(head, "198.18.0.100", from_peers=hop is not None)
        if not_here and route.peer is not None and route.container is not None and self.truth.containers.get(route.container.id) != route.container:
            exchange = types.SimpleNamespace(route=route, claimed_owner=None)
            route = asyncio.run(self.router.retry_after_not_here(exchange, replayable=True))
        record = route.record
        record.ts = at
        record.status = route.answer.status if route.answer is not None else status
        self.records.append(record)
        return record

    # Snapshots and closing

    def snapshot(self, *, at: float) -> Path:
        """Write a snapshot of every origin's log as it is now, as the journal writes one."""
        state = self.truth.export_state()
        prepared = snapshots.Snapshot(
            vector=dict(self.truth.vector), view=state, digest=snapshots.compute_digest(self.truth.vector, state),
            origin=self.host_id, node=NODE, created_at=format_time(at),
        )
        return snapshots.write_snapshot(snapshots.snapshot_dir(self.data_dir), prepared).path

    def close(self) -> None:
        """Write the decision records through the gateway's DecisionLog, and close the logs."""
        for log in self.logs.values():
            log.close()

        async def write() -> None:
            decisions = DecisionLog(self.data_dir)
            for record in self.records:
                decisions.add(record)
            await asyncio.sleep(0)
            decisions.close()

        asyncio.run(write())
        self.records = []

    def config(self) -> Path:
        """Write the gateway's config file and return its path."""
        path = self.data_dir.parent / f"gateway-{self.host_id}.toml"
        lines = [
            f"host_id = {self.host_id}", f'data_dir = "{self.data_dir}"',
            f'api_listen = "127.0.{self.host_id}.1:8080"', f'proxy_listen = "127.0.{self.host_id}.1:8000"',
            f'stale_policy = "{self.settings.stale_policy.value}"',
        ]
        for peer in self.settings.peers:
            lines += ["[[peers]]", f"host_id = {peer.host_id}", f'api = "{peer.base_url}"']
        path.write_text("\n".join(lines) + "\n")
        return path
