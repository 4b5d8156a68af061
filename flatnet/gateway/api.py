"""The internal API, served on the Nebula address only."""

from __future__ import annotations

import hashlib
import time
import uuid

import orjson
from aiohttp import web
from pydantic import ValidationError

from flatnet.events.log import LogError
from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Change
from flatnet.gateway.metrics import serve_metrics
from flatnet.gateway.models import CONTAINER_ID, ContainerAdded
from flatnet.gateway.state import GATEWAY, Gateway
from flatnet.logs import gateway as logger


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(status: int, message: str, **extra: object) -> web.Response:
    return json_response({"error": message, **extra}, status)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


def _log_stopped(error: LogError) -> web.Response:
    # The plugin takes any error status as "not stored" and keeps the change in its outbox.
    logger.error("rejected a change: %s", error)
    return error_response(503, f"this host's event log cannot store the change: {error}")


async def post_container(request: web.Request) -> web.Response:
    gateway: Gateway = request.app[GATEWAY]
    try:
        body = ContainerAdded.model_validate_json(await request.read())
    except ValidationError as error:
        problems = [
            {"field": ".".join(map(str, issue["loc"])), "problem": issue["msg"], "value": repr(issue.get("input"))[:100]}
            for issue in error.errors()
        ]
        return error_response(400, "invalid container body", problems=problems)

    if body.hostId != gateway.settings.host_id:
        return error_response(
            403, f"hostId {body.hostId} is not this gateway's host {gateway.settings.host_id}; post to host {body.hostId}'s gateway"
        )
    if body.ip not in gateway.settings.subnet:
        return error_response(400, f"ip {body.ip} is not inside this host's container subnet {gateway.settings.subnet}")

    data = body.model_dump(mode="json", exclude={"eventId", "ts"})
    change = Change(id=body.eventId, type=CONTAINER_ADDED, data=data, ts=body.ts or _now_iso())
    try:
        event, is_new = await gateway.record_own(change)
    except LogError as error:
        return _log_stopped(error)
    status = 201 if is_new else 200
    return json_response({"eventId": change.id, "seq": event.seq if event else None, "duplicate": not is_new}, status)


async def delete_container(request: web.Request) -> web.Response:
    gateway: Gateway = request.app[GATEWAY]
    container_id = request.match_info["container_id"]
    if not CONTAINER_ID.match(container_id):
        return error_response(400, f"container id {container_id!r} is invalid: letters, digits, '_', '.' and '-' only")
    event_id = request.query.get("eventId") or str(uuid.uuid4())
    try:
        event_id = str(uuid.UUID(event_id))
    except ValueError:
        return error_response(400, f"eventId {event_id!r} is not a UUID")
    reason = request.query.get("reason", "deleted")
    if not reason.isascii() or len(reason) > 64:
        return error_response(400, f"reason {reason[:70]!r} must be ASCII text of at most 64 characters")

    current = gateway.journal.view.containers.get(container_id)
    if current is not None and current.origin != gateway.settings.host_id:
        return error_response(403, f"container {container_id} belongs to host {current.origin}; delete it there")

    change = Change(id=event_id, type=CONTAINER_REMOVED, data={"id": container_id, "reason": reason}, ts=request.query.get("ts") or _now_iso())
    try:
        event, is_new = await gateway.record_own(change)
    except LogError as error:
        return _log_stopped(error)
    return json_response({"eventId": change.id, "seq": event.seq if event else None, "duplicate": not is_new, "known": current is not None})


async def list_containers(request: web.Request) -> web.Response:
    gateway: Gateway = request.app[GATEWAY]
    return json_response(gateway.container_entries())


async def snapshot(request: web.Request) -> web.Response:
    """Return this gateway's view of one origin, or with ``summary=1`` only its head and digest."""
    gateway: Gateway = request.app[GATEWAY]
    raw = request.query.get("origin", "")
    if not raw.isdigit() or not 1 <= int(raw) <= 254:
        return error_response(400, f"query parameter origin={raw!r} must be a host id from 1 to 254")
    origin = int(raw)
    state = gateway.journal.view.origin_state(origin)
    body = {
        "origin": origin,
        "head": gateway.journal.view.vector.get(origin, 0),
        "node": gateway.journal.identity.node,
        "epoch": gateway.journal.identity.epoch,
        "digest": origin_digest(state),
        "containers": len(state["containers"]),
    }
    if request.query.get("summary") != "1":
        body["state"] = state
    return json_response(body)


def origin_digest(state: dict) -> str:
    """SHA-256 of an origin's exported containers: equal views of one origin have equal digests."""
    return hashlib.sha256(orjson.dumps(state["containers"])).hexdigest()


async def health(request: web.Request) -> web.Response:
    gateway: Gateway = request.app[GATEWAY]
    return json_response(gateway.health())


async def events(request: web.Request) -> web.StreamResponse:
    from flatnet.gateway.stream import serve_events

    return await serve_events(request)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/containers", post_container)
    app.router.add_get("/api/containers", list_containers)
    app.router.add_delete("/api/containers/{container_id}", delete_container)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/api/events", events)
    app.router.add_get("/metrics", serve_metrics)
    logger.debug("internal API routes registered")
