"""`GET /api/events`: an origin's events as a long-lived NDJSON stream.

The stream first sends what the log on disk holds after ``after``, then every
new event as it is appended, and a heartbeat frame every ``heartbeat`` seconds
carrying the origin's head, the gateway's epoch and the time. A subscriber
that falls too far behind is closed; it reconnects and catches up from disk.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import orjson
from aiohttp import web

from flatnet.events.record import encode
from flatnet.gateway.state import GATEWAY, Gateway
from flatnet.logs import sync as logger

CONTENT_TYPE = "application/x-ndjson"
BACKLOG_BATCH_EVENTS = 1000


def _query_int(request: web.Request, name: str, low: int, high: int | None) -> int:
    raw = request.query.get(name)
    if raw is None or not raw.isdigit() or int(raw) < low or (high is not None and int(raw) > high):
        limit = f"{low}-{high}" if high is not None else f">= {low}"
        raise web.HTTPBadRequest(
            body=orjson.dumps({"error": f"query parameter {name}={raw!r} must be an integer {limit}"}),
            content_type="application/json",
        )
    return int(raw)


def heartbeat_frame(gateway: Gateway, origin: int) -> bytes:
    frame = {
        "heartbeat": {
            "origin": origin,
            "head": gateway.journal.head(origin),
            "epoch": gateway.journal.identity.epoch,
            "node": gateway.journal.identity.node,
            "ts": time.time(),
        }
    }
    return orjson.dumps(frame) + b"\n"


async def serve_events(request: web.Request) -> web.StreamResponse:
    gateway: Gateway = request.app[GATEWAY]
    origin = _query_int(request, "origin", 1, 254)
    after = _query_int(request, "after", 0, None)

    if gateway.journal.is_stopped(origin):
        return web.Response(
            status=503,
            body=orjson.dumps({"error": "stopped", "detail": f"the log of origin {origin} is stopped on this gateway: "
                               f"{gateway.journal.failures[origin]}", "origin": origin}),
            content_type="application/json",
        )
    compacted_through = gateway.journal.log.origin(origin).compacted_through
    if after < compacted_through:
        # The events the follower needs next were deleted by retention; only
        # this gateway's snapshot of the origin can bring it up to date.
        return web.Response(
            status=410,
            body=orjson.dumps({
                "error": "compacted",
                "detail": f"events {after + 1} to {compacted_through} of origin {origin} were compacted away; "
                          f"fetch /api/snapshot?origin={origin}",
                "origin": origin,
                "compactedThrough": compacted_through,
            }),
            content_type="application/json",
        )

    head = gateway.journal.head(origin)
    if after > head:
        # The follower has events this gateway never had: this gateway lost its
        # disk, or another node took the host id. Silence would hide that.
        return web.Response(
            status=409,
            body=orjson.dumps({
                "error": "reset",
                "detail": f"after={after} is beyond the head {head} of origin {origin} on this gateway",
                "origin": origin,
                "head": head,
                "node": gateway.journal.identity.node,
                "epoch": gateway.journal.identity.epoch,
            }),
            content_type="application/json",
        )

    subscription = gateway.journal.subscribe(origin, gateway.settings.stream_queue_events)
    task = asyncio.current_task()
    gateway.stream_tasks.add(task)
    response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
    await response.prepare(request)
    peer = request.remote
    logger.info("stream of origin %d opened for %s after seq %d", origin, peer, after)
    write_timeout = gateway.settings.stream_write_timeout

    async def send(frame: bytes) -> None:
        # aiohttp's write waits while the socket buffer is full, so a reader
        # that stops reading holds this stream here; past the timeout it is cut.
        await asyncio.wait_for(response.write(frame), write_timeout)

    try:
        sent = after
        # The backlog is read in batches so that a follower far behind never
        # makes this gateway hold its whole log in memory.
        backlog = gateway.journal.log.origin(origin).read(after)
        while batch := await asyncio.to_thread(lambda: list(itertools.islice(backlog, BACKLOG_BATCH_EVENTS))):
            for event in batch:
                await send(encode(event))
                sent = event.seq
        await send(heartbeat_frame(gateway, origin))

        while True:
            if subscription.overrun:
                logger.warning(
                    "stream of origin %d for %s closed: it fell more than %d events behind; it resumes from the log",
                    origin, peer, subscription.queue.maxsize,
                )
                break
            try:
                event = await asyncio.wait_for(subscription.queue.get(), gateway.settings.heartbeat)
            except TimeoutError:
                await send(heartbeat_frame(gateway, origin))
                continue
            if event.seq <= sent:
                continue
            await send(encode(event))
            sent = event.seq
    except TimeoutError:
        logger.warning(
            "stream of origin %d for %s closed: it read nothing for %.0f s; it resumes from the log",
            origin, peer, write_timeout,
        )
        if request.transport is not None:
            request.transport.abort()
    except ConnectionResetError:
        logger.debug("stream of origin %d for %s closed by the client", origin, peer)
    finally:
        gateway.journal.unsubscribe(subscription)
        gateway.stream_tasks.discard(task)
    return response
