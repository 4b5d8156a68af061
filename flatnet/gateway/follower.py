"""A follower per peer: holds the peer's event stream open and stores what it sends.

Each event is checked (CRC, origin, seq continuity, and that it describes the
peer's own host), appended to the replica and then applied to the view. After
a disconnect the follower reconnects with jittered exponential backoff and
resumes after its last stored seq, so no event is lost or applied twice.
"""

from __future__ import annotations

import asyncio
import random

import aiohttp
import orjson

from flatnet.events import record
from flatnet.events.record import CONTAINER_ADDED, Event
from flatnet.gateway.settings import Peer
from flatnet.gateway.state import Gateway, PeerState, PeerStatus
from flatnet.logs import sync as logger

BACKOFF_FIRST_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 10.0


class StreamRejected(Exception):
    """A frame from a peer that breaks the stream's rules; the stream is dropped."""


def check_event(peer: Peer, event: Event, head: int) -> None:
    if event.origin != peer.host_id:
        raise StreamRejected(f"peer {peer.host_id} sent an event of origin {event.origin}; only its own are accepted")
    if event.seq > head + 1:
        raise StreamRejected(f"peer {peer.host_id} skipped from seq {head} to seq {event.seq}")
    if event.type == CONTAINER_ADDED and event.data.get("hostId") != peer.host_id:
        raise StreamRejected(
            f"peer {peer.host_id} announced container {event.data.get('id')} of host {event.data.get('hostId')}"
        )


async def follow(gateway: Gateway, peer: Peer, session: aiohttp.ClientSession) -> None:
    """Follow ``peer`` until cancelled."""
    status = gateway.peers[peer.host_id]
    backoff = BACKOFF_FIRST_SECONDS
    while True:
        after = gateway.journal.head(peer.host_id)
        try:
            received = await _stream_once(gateway, peer, session, after)
            if received:
                backoff = BACKOFF_FIRST_SECONDS
            status.last_error = "stream ended"
            logger.debug("stream from peer %d ended", peer.host_id)
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as error:
            status.last_error = f"{type(error).__name__}: {error}"
            logger.debug("stream from peer %d failed: %s", peer.host_id, status.last_error)
        except (StreamRejected, record.RecordError) as error:
            status.last_error = str(error)
            logger.error("dropped the stream from peer %d: %s; reconnecting", peer.host_id, error)

        if status.state is PeerState.CONNECTED:
            logger.info("peer %d disconnected (%s)", peer.host_id, status.last_error)
        status.state = PeerState.DISCONNECTED
        status.reconnects += 1
        gateway.metrics.stream_reconnects.labels(str(peer.host_id)).inc()
        delay = backoff * random.uniform(0.5, 1.5)
        logger.debug("reconnecting to peer %d in %.1f s", peer.host_id, delay)
        await asyncio.sleep(delay)
        backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)


async def _stream_once(gateway: Gateway, peer: Peer, session: aiohttp.ClientSession, after: int) -> bool:
    status = gateway.peers[peer.host_id]
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=gateway.settings.heartbeat * 3)
    url = f"{peer.base_url}/api/events"
    params = {"origin": str(peer.host_id), "after": str(after)}
    received = False
    async with session.get(url, params=params, timeout=timeout) as response:
        if response.status == 409:
            body = await response.text()
            raise StreamRejected(f"peer {peer.host_id} has fewer events than our replica (after={after}): {body[:300]}")
        if response.status != 200:
            body = await response.text()
            raise StreamRejected(f"peer {peer.host_id} answered HTTP {response.status}: {body[:300]}")

        status.state = PeerState.CONNECTED
        status.last_error = ""
        logger.info("peer %d connected, resuming after seq %d", peer.host_id, after)
        async for line in response.content:
            if not line.strip():
                continue
            _handle_frame(gateway, peer, line)
            received = True
    return received


def _handle_frame(gateway: Gateway, peer: Peer, line: bytes) -> None:
    if line.startswith(b'{"heartbeat"'):
        frame = orjson.loads(line)["heartbeat"]
        if frame.get("origin") != peer.host_id:
            raise StreamRejected(f"peer {peer.host_id} sent a heartbeat for origin {frame.get('origin')}")
        status = gateway.peers[peer.host_id]
        status.remote_head = int(frame.get("head", 0))
        status.remote_epoch = int(frame.get("epoch", 0))
        status.remote_node = str(frame.get("node", ""))
        gateway.heard(peer.host_id)
        return

    event = record.decode(line)
    check_event(peer, event, gateway.journal.head(peer.host_id))
    gateway.journal.store_replica(event)
    gateway.peers[peer.host_id].remote_head = max(gateway.peers[peer.host_id].remote_head, event.seq)
    gateway.heard(peer.host_id)


class Followers:
    """One follower task per configured peer, changed in place when the peers change."""

    def __init__(self, gateway: Gateway, session: aiohttp.ClientSession):
        self.gateway = gateway
        self.session = session
        self.tasks: dict[int, asyncio.Task] = {}
        self.urls: dict[int, str] = {}

    def start(self, peer: Peer) -> None:
        self.gateway.peers.setdefault(peer.host_id, PeerStatus())
        self.tasks[peer.host_id] = asyncio.create_task(follow(self.gateway, peer, self.session), name=f"follower-{peer.host_id}")
        self.urls[peer.host_id] = peer.base_url

    async def stop(self, host_id: int) -> None:
        task = self.tasks.pop(host_id, None)
        self.urls.pop(host_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def match(self, peers: tuple[Peer, ...]) -> tuple[list[int], list[int]]:
        """Follow exactly ``peers``: start new ones, stop dropped ones, restart moved ones.

        Returns the host ids added and removed.
        """
        wanted = {peer.host_id: peer for peer in peers}
        removed = [host_id for host_id in self.tasks if host_id not in wanted]
        added = [host_id for host_id in wanted if host_id not in self.tasks]
        moved = [h for h, peer in wanted.items() if h in self.urls and self.urls[h] != peer.base_url]
        for host_id in removed + moved:
            await self.stop(host_id)
        for host_id in added + moved:
            self.start(wanted[host_id])
        return added, removed

    async def stop_all(self) -> None:
        for host_id in list(self.tasks):
            await self.stop(host_id)
