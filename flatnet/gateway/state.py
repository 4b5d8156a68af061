"""The gateway's shared state: settings, journal, liveness and peer status."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import ipaddress
import math
import time

from aiohttp import web

from flatnet.events.record import Change, Event
from flatnet.gateway.journal import Journal
from flatnet.gateway.settings import Settings
from flatnet.logs import sync as sync_logger
from flatnet.gateway.metrics import Metrics
from flatnet.registry import Container, Liveness, Outcome, format_time


class PeerState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


@dataclasses.dataclass
class PeerStatus:
    state: PeerState = PeerState.CONNECTING
    since: float = dataclasses.field(default_factory=time.monotonic)
    reconnects: int = 0
    last_error: str = ""
    remote_head: int = 0
    remote_epoch: int = 0
    remote_node: str = ""
    # The node whose events the replica holds; learned from its last event.
    replica_node: str = ""
    # The snapshot backstop: repairs it made, the head it saw last, and since
    # when (wall clock) the replica has matched the peer's own head and digest.
    repairs: int = 0
    backstop_seen_head: int = -1
    in_sync_since: float | None = None


class Gateway:
    """What every handler and background task of one gateway shares."""

    def __init__(self, settings: Settings, journal: Journal):
        self.settings = settings
        self.journal = journal
        self.started = time.monotonic()
        self.liveness = Liveness(settings.host_id, settings.ttl)
        self.peers: dict[int, PeerStatus] = {peer.host_id: PeerStatus() for peer in settings.peers}
        self.metrics = Metrics()
        self.metrics.watch(self)
        journal.listeners.append(self._count_event)
        self._expired_reported: set[int] = set()
        # Open event streams never finish on their own; shutdown cancels them.
        self.stream_tasks: set[asyncio.Task] = set()
        # Peers get the full TTL from our start: their replicas are as fresh as
        # when we stopped, and they have had no chance to speak yet.
        for peer in settings.peers:
            self.liveness.heard(peer.host_id, self.started)

    def _count_event(self, event: Event, outcome: Outcome) -> None:
        origin = str(event.origin)
        self.metrics.events_appended.labels(origin).inc()
        if outcome is not Outcome.UNCHANGED:
            self.metrics.events_applied.labels(origin).inc()

    async def record_own(self, change: Change) -> tuple[Event | None, bool]:
        """Append a change of this host, after anything still waiting in the outbox.

        Draining first keeps a host's changes in the order they happened: an
        ADD that went to the outbox is never appended after its own DEL.
        """
        return await self.journal.record_own(change)

    async def drain_outbox(self) -> int:
        return await self.journal.drain_outbox()

    def heard(self, origin: int) -> None:
        now = time.monotonic()
        last = self.liveness.last_heard.get(origin, now)
        if self.liveness.heard(origin, now):
            self._expired_reported.discard(origin)
            sync_logger.info("peer %d is live again after %.1f s of silence", origin, now - last)

    def expired_origins(self) -> frozenset[int]:
        now = time.monotonic()
        origins = set(self.journal.log.origins()) | set(self.peers)
        expired = self.liveness.expired(origins, now)
        for origin in expired - self._expired_reported:
            silent = now - self.liveness.last_heard.get(origin, self.started)
            sync_logger.info("peer %d expired: silent for %.1f s (ttl %.0f s)", origin, silent, self.settings.ttl)
        self._expired_reported |= expired
        return expired

    def lookup(self, hostname: str) -> tuple[Container | None, frozenset[int]]:
        expired = self.expired_origins()
        matches = self.journal.view.named(hostname, expired_origins=expired)
        return (matches[0] if matches else None), expired

    def container_entries(self) -> list[dict]:
        now = time.monotonic()
        expired = self.expired_origins()
        entries = []
        for container in sorted(self.journal.view.containers.values(), key=lambda c: (c.host_id, ipaddress.IPv4Address(c.ip))):
            entries.append({
                "id": container.id,
                "ip": container.ip,
                "hostname": container.hostname,
                "aliases": list(container.aliases),
                "ports": list(container.ports),
                "hostId": container.host_id,
                "createdAt": container.created_at,
                "ifname": container.ifname,
                "origin": container.origin,
                "seq": container.seq,
                # Rounded up: 0 means expired, never "about to expire".
                "ttl": 0 if container.origin in expired else math.ceil(self.liveness.remaining(container.origin, now)),
            })
        return entries

    def health(self) -> dict:
        now = time.monotonic()
        expired = self.expired_origins()
        peers = {}
        for host_id, status in sorted(self.peers.items()):
            last = self.liveness.last_heard.get(host_id)
            peers[str(host_id)] = {
                "state": status.state.value,
                "lastHeardSecondsAgo": None if last is None else round(now - last, 1),
                "expired": host_id in expired,
                "replicaHead": self.journal.head(host_id),
                "remoteHead": status.remote_head,
                "node": status.remote_node,
                "repairs": status.repairs,
                "inSyncSince": None if status.in_sync_since is None else format_time(status.in_sync_since),
                "reconnects": status.reconnects,
                "lastError": status.last_error,
            }
        conflicts = {
            name: [c.id for c in held] for name, held in self.journal.view.conflicts(expired_origins=expired).items()
        }
        return {
            "status": "ok",
            "hostId": self.settings.host_id,
            "node": self.journal.identity.node,
            "epoch": self.journal.identity.epoch,
            "uptimeSeconds": round(now - self.started, 1),
            "vector": {str(origin): head for origin, head in self.journal.log.vector().items()},
            "containers": len(self.journal.view.containers),
            "peers": peers,
            "conflicts": conflicts,
            "stoppedOrigins": {str(origin): error for origin, error in self.journal.failures.items()},
            "snapshot": self.journal.snapshot.created_at if self.journal.snapshot else None,
        }


GATEWAY = web.AppKey("gateway", Gateway)
BACKGROUND = web.AppKey("background", list)
