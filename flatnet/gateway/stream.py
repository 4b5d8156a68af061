"""`GET /api/events`: an origin's events as a long-lived NDJSON stream.

The stream first sends what the log on disk holds after ``after``, then every
new event as it is appended, and a heartbeat frame every ``heartbeat`` seconds
carrying the origin's head, the gateway's epoch and the time. A subscriber
that falls too far behind is closed; it reconnects and catches up from disk.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import web

from flatnet.events.record import encode
from flatnet.gateway.state import GATEWAY, Gateway
from flatnet.logs import sync as logger

CONTENT_TYPE = "application/x-ndjson"


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

    subscription = gateway.journal.subscribe(origin)
    task = asyncio.current_task()
    gateway.stream_tasks.add(task)
    response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
    await response.prepare(request)
    peer = request.remote
    logger.info("stream of origin %d opened for %s after seq %d", origin, peer, after)
    try:
        sent = after
        backlog = await asyncio.to_thread(lambda: list(gateway.journal.log.origin(origin).read(after)))
        for event in backlog:
            await response.write(encode(event))
            sent = event.seq
        await response.write(heartbeat_frame(gateway, origin))

        while True:
            if subscription.overrun:
                logger.warning("stream of origin %d for %s closed: it fell %d events behind", origin, peer, subscription.queue.qsize())
                break
            try:
                event = await asyncio.wait_for(subscription.queue.get(), gateway.settings.heartbeat)
            except TimeoutError:
                await response.write(heartbeat_frame(gateway, origin))
                continue
            if event.seq <= sent:
                continue
            await response.write(encode(event))
            sent = event.seq
    except ConnectionResetError:
        logger.debug("stream of origin %d for %s closed by the client", origin, peer)
    finally:
        gateway.journal.unsubscribe(subscription)
        gateway.stream_tasks.discard(task)
    return response
