"""A follower per peer: holds the peer's event stream open and stores what it sends.

Each event is checked (CRC, origin, seq continuity, and that it describes the
peer's own host), appended to the replica and then applied to the view. After
a disconnect the follower reconnects with jittered exponential backoff and
resumes after its last stored seq, so no event is lost or applied twice.
"""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import orjson

from flatnet.events import record
from flatnet.events.log import LogError
from flatnet.events.record import CONTAINER_ADDED, Event
from flatnet.gateway.api import origin_digest
from flatnet.gateway.settings import Peer
from flatnet.gateway.state import Gateway, PeerState, PeerStatus
from flatnet.logs import sync as logger
from flatnet.registry import ViewStateError

BACKOFF_FIRST_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 10.0
# A stream frame is one event or heartbeat on a line, and an event is a few hundred bytes.
MAX_FRAME_BYTES = 1 << 20


class Compacted(Exception):
    """The events a replica needs next are gone from the peer; only its snapshot helps."""


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
        except LogError as error:
            # The replica's log is stopped: storing more of it would hide the damage.
            status.last_error = str(error)
            status.state = PeerState.DISCONNECTED
            logger.error("stopped following peer %d: %s", peer.host_id, error)
            return

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
            _reset_replica(gateway, peer, after, body)
            return True
        if response.status == 410:
            await adopt_peer_snapshot(gateway, peer, session, reason=f"events after seq {after} were compacted away on the peer")
            return True
        if response.status != 200:
            body = await response.text()
            raise StreamRejected(f"peer {peer.host_id} responded with HTTP {response.status}: {body[:300]}")

        status.state = PeerState.CONNECTED
        status.last_error = ""
        logger.info("peer %d connected, resuming after seq %d", peer.host_id, after)
        async for lines in _frame_lines(peer, response):
            frames, _ = _handle_frames(gateway, peer, lines)
            received = received or frames > 0
    return received


async def _frame_lines(peer: Peer, response: aiohttp.ClientResponse):
    """Yield the complete lines of the stream, as many as have arrived at a time."""
    pending = b""
    async for chunk in response.content.iter_any():
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        if len(pending) > MAX_FRAME_BYTES:
            raise StreamRejected(
                f"peer {peer.host_id} sent a frame longer than {MAX_FRAME_BYTES} bytes without a newline"
            )
        if lines:
            yield lines


def _handle_frames(gateway: Gateway, peer: Peer, lines: list[bytes], *, stop_at_heartbeat: bool = False) -> tuple[int, int]:
    """Take the frames in ``lines`` in order, storing consecutive events with one fsync.

    With ``stop_at_heartbeat`` the frames after the first heartbeat are left
    alone. Returns how many frames were taken and how many events were stored.
    """
    batch: list[Event] = []
    frames = stored = 0
    for line in lines:
        if not line.strip():
            continue
        frames += 1
        if line.startswith(b'{"heartbeat"'):
            stored += _store_batch(gateway, peer, batch)
            batch = []
            _handle_heartbeat(gateway, peer, line)
            if stop_at_heartbeat:
                return frames, stored
            continue
        event = record.decode(line)
        head = gateway.journal.head(peer.host_id) + len(batch)
        check_event(peer, event, head)
        _check_same_node(gateway, peer, event, head)
        gateway.peers[peer.host_id].replica_node = event.node
        if event.seq > head:
            batch.append(event)
    stored += _store_batch(gateway, peer, batch)
    return frames, stored


def _store_batch(gateway: Gateway, peer: Peer, batch: list[Event]) -> int:
    if not batch:
        return 0
    gateway.journal.store_replica_batch(batch)
    status = gateway.peers[peer.host_id]
    status.remote_head = max(status.remote_head, batch[-1].seq)
    gateway.heard(peer.host_id)
    return len(batch)


def _check_same_node(gateway: Gateway, peer: Peer, event: Event, head: int) -> None:
    """Reject events that continue our replica's seqs but come from another node.

    A new node under a host id starts its log at seq 1 and gets a reset; one
    that carries on where another node's log left off is two gateways claiming
    one host id, and nothing of it may reach the view.
    """
    if event.seq <= head or head == 0:
        return
    status = gateway.peers[peer.host_id]
    if not status.replica_node:
        replica = gateway.journal.log.origin(peer.host_id)
        # A replica rebuilt from a snapshot contains no event yet to learn the node from.
        last = next(iter(replica.read(head - 1)), None) if head > replica.compacted_through else None
        status.replica_node = last.node if last is not None else event.node
    if event.node != status.replica_node:
        raise StreamRejected(
            f"peer {peer.host_id} sent seq {event.seq} from node {event.node}, but seqs up to {head} came from node "
            f"{status.replica_node}: two nodes claim host id {peer.host_id}; refusing its events until one stops"
        )


def _reset_replica(gateway: Gateway, peer: Peer, after: int, body: str) -> None:
    """Start the peer's replica over after it responded with a reset.

    Only the peer writes its own origin, and only the configured address is
    followed, so its word is taken: it lost its disk, or a new node took the
    host id. Its old log is archived, not mixed with the new one.
    """
    try:
        detail = orjson.loads(body)
    except orjson.JSONDecodeError:
        detail = {}
    if not isinstance(detail, dict) or detail.get("error") != "reset":
        raise StreamRejected(f"peer {peer.host_id} responded 409 without a reset body: {body[:300]}")
    archived, dropped = gateway.journal.reset_replica(peer.host_id)
    gateway.peers[peer.host_id].replica_node = ""
    gateway.metrics.stream_resets.labels(str(peer.host_id)).inc()
    logger.warning(
        "peer %d started a new log (node %s, head %s) below our replica's seq %d: archived the replica to %s, "
        "%d of its containers left the view; following it from seq 0",
        peer.host_id, detail.get("node"), detail.get("head"), after, archived, dropped,
    )


def _handle_heartbeat(gateway: Gateway, peer: Peer, line: bytes) -> None:
    frame = orjson.loads(line)["heartbeat"]
    if frame.get("origin") != peer.host_id:
        raise StreamRejected(f"peer {peer.host_id} sent a heartbeat for origin {frame.get('origin')}")
    status = gateway.peers[peer.host_id]
    status.remote_head = int(frame.get("head", 0))
    status.remote_epoch = int(frame.get("epoch", 0))
    status.remote_node = str(frame.get("node", ""))
    gateway.heard(peer.host_id)


async def pull_once(gateway: Gateway, peer: Peer, session: aiohttp.ClientSession, timeout: float) -> int:
    """Store the peer's events after our replica's head, up to its current head, and return how many.

    This is the follower's catch-up without the wait: the peer's stream sends
    its backlog, then a heartbeat, and the pull stops at that heartbeat. The
    proxy calls it when a peer says it no longer holds a name.
    """
    after = gateway.journal.head(peer.host_id)
    url = f"{peer.base_url}/api/events"
    params = {"origin": str(peer.host_id), "after": str(after)}
    stored = 0
    async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
        if response.status == 410:
            raise Compacted(f"peer {peer.host_id} compacted the events after seq {after}")
        if response.status != 200:
            body = await response.text()
            raise StreamRejected(f"peer {peer.host_id} responded with HTTP {response.status}: {body[:300]}")
        async for lines in _frame_lines(peer, response):
            _, count = _handle_frames(gateway, peer, lines, stop_at_heartbeat=True)
            stored += count
            if any(line.startswith(b'{"heartbeat"') for line in lines):
                break
    return stored


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


async def adopt_peer_snapshot(gateway: Gateway, peer: Peer, session: aiohttp.ClientSession, *, reason: str) -> None:
    """Replace the peer's replica and view with the peer's own snapshot of its origin."""
    url = f"{peer.base_url}/api/snapshot"
    async with session.get(url, params={"origin": str(peer.host_id)}, timeout=aiohttp.ClientTimeout(total=30)) as response:
        if response.status != 200:
            raise StreamRejected(f"peer {peer.host_id} responded with HTTP {response.status} for its snapshot: {(await response.text())[:300]}")
        body = orjson.loads(await response.read())
    if not isinstance(body, dict) or not isinstance(body.get("head"), int) or "state" not in body:
        raise StreamRejected(f"peer {peer.host_id} sent a snapshot without head and state")
    if origin_digest(body["state"]) != body.get("digest"):
        raise StreamRejected(f"peer {peer.host_id} sent a snapshot whose digest does not match its containers")
    try:
        held = gateway.journal.adopt_snapshot(peer.host_id, body["head"], body["state"])
    except ViewStateError as error:
        raise StreamRejected(f"peer {peer.host_id} sent an invalid snapshot: {error}") from None
    status = gateway.peers[peer.host_id]
    status.replica_node = ""
    status.repairs += 1
    gateway.metrics.snapshot_repairs.labels(str(peer.host_id)).inc()
    logger.warning(
        "adopted peer %d's snapshot at seq %d (%d containers): %s", peer.host_id, body["head"], held, reason,
    )


async def backstop(gateway: Gateway, session: aiohttp.ClientSession) -> None:
    """Compare each peer's head and digest with ours every ``resync`` seconds, and repair what the stream missed."""
    while True:
        await asyncio.sleep(gateway.settings.resync)
        for peer in gateway.settings.peers:
            try:
                await check_peer(gateway, peer, session)
            except (aiohttp.ClientError, TimeoutError, ConnectionError, StreamRejected, record.RecordError, ValueError) as error:
                logger.debug("backstop check of peer %d failed: %s", peer.host_id, error)


async def check_peer(gateway: Gateway, peer: Peer, session: aiohttp.ClientSession) -> None:
    """Compare the peer's own head and digest of its origin with ours, once, and repair a difference."""
    status = gateway.peers.get(peer.host_id)
    if status is None or gateway.journal.is_stopped(peer.host_id):
        return
    url = f"{peer.base_url}/api/snapshot"
    params = {"origin": str(peer.host_id), "summary": "1"}
    async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=3)) as response:
        if response.status != 200:
            return
        summary = orjson.loads(await response.read())
    remote_head, digest = summary.get("head"), summary.get("digest")
    ours = gateway.journal.head(peer.host_id)
    behind_since_last_check = ours == status.backstop_seen_head

    if isinstance(remote_head, int) and remote_head > ours:
        status.in_sync_since = None
        # A stream that is delivering catches up by itself; repair only one that is stuck.
        if behind_since_last_check or status.state is not PeerState.CONNECTED:
            try:
                pulled = await pull_once(gateway, peer, session, timeout=10)
            except Compacted:
                await adopt_peer_snapshot(gateway, peer, session, reason=f"the backstop found seq {ours}, the peer at {remote_head}")
            else:
                status.repairs += 1
                gateway.metrics.snapshot_repairs.labels(str(peer.host_id)).inc()
                logger.info(
                    "backstop repaired peer %d: the stream had stopped at seq %d with the peer at %d; pulled %d events",
                    peer.host_id, ours, remote_head, pulled,
                )
    elif remote_head == ours and digest != origin_digest(gateway.journal.view.origin_state(peer.host_id)):
        status.in_sync_since = None
        await adopt_peer_snapshot(gateway, peer, session, reason=f"our view of its origin differed at seq {ours}")
    elif remote_head == ours and status.in_sync_since is None:
        status.in_sync_since = time.time()
    status.backstop_seen_head = gateway.journal.head(peer.host_id)
