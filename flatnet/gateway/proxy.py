"""The LAN proxy: route a request by its Host name to the container that holds it.

A local container is proxied to directly. A container of another host goes to
that host's gateway over Nebula, marked with the hop header; a gateway that
receives a request with the hop header serves it locally or answers 404, and
never forwards it again. Every request writes one access line and one decision
record.
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from flatnet import i18n
from flatnet.gateway.state import GATEWAY, Gateway
from flatnet.logs import access as access_logger
from flatnet.logs import proxy as logger
from flatnet.registry import Container

HOP_HEADER = "X-Flatnet-Hop"
NOT_HERE_HEADER = "X-Flatnet-Not-Here"
REQUEST_ID_HEADER = "X-Request-Id"

# RFC 9110 section 7.6.1: connection-specific fields a proxy must not forward.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade",
})

i18n.define({
    "proxy.no_host": ("Missing Host header: send Host: <name>.{domain}\n", "Host ヘッダーがありません: Host: <名前>.{domain} を送ってください\n"),
    "proxy.bad_host": ("Invalid Host header {host!r}: expected <name>.{domain}\n", "Host ヘッダー {host!r} が不正です: <名前>.{domain} の形式で送ってください\n"),
    "proxy.not_found": ("No container named {name!r} is known to flatnet ({host!r})\n", "{name!r} という名前のコンテナーは flatnet に登録されていません ({host!r})\n"),
    "proxy.bad_gateway": ("Could not connect to {target} for {name!r}: {error}\n", "{name!r} の転送先 {target} に接続できませんでした: {error}\n"),
    "proxy.timeout": ("{target} did not answer in time for {name!r}\n", "{name!r} の転送先 {target} が時間内に応答しませんでした\n"),
})


class Decision(enum.Enum):
    LOCAL = "local"
    PEER = "peer"
    NOT_FOUND = "not-found"
    BAD_REQUEST = "bad-request"


def prefers_japanese(request: web.Request) -> bool:
    """Tell whether Accept-Language ranks Japanese above English."""
    best_lang, best_q = "", -1.0
    for part in request.headers.get("Accept-Language", "").split(","):
        lang, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if q > best_q:
            best_lang, best_q = lang.strip().lower(), q
    return best_lang.startswith("ja")


def parse_host(host: str | None, domain: str) -> str | None:
    """The container name in a Host header, or None when it is not <name>.<domain>.

    Case is ignored, as are a port and a trailing dot.
    """
    if not host:
        return None
    name = host.strip().lower()
    if name.startswith("["):
        return None
    name = name.rsplit(":", 1)[0] if ":" in name else name
    name = name.rstrip(".")
    suffix = "." + domain
    if not name.endswith(suffix):
        return None
    name = name[: -len(suffix)]
    if not name or "." in name:
        return None
    return name


def _text(request: web.Request, status: int, key: str, **values: object) -> web.Response:
    body = i18n.text(key, japanese=prefers_japanese(request), **values)
    return web.Response(status=status, text=body, content_type="text/plain", charset="utf-8")


class DecisionLog:
    """Decision records, one JSON line per proxied request, in ``<data_dir>/decisions/``."""

    def __init__(self, data_dir: Path):
        directory = data_dir / "decisions"
        directory.mkdir(parents=True, exist_ok=True)
        self._file = open(directory / "decisions.jsonl", "ab", buffering=0)

    def write(self, record: dict) -> None:
        self._file.write(orjson.dumps(record) + b"\n")

    def close(self) -> None:
        self._file.close()


DECISIONS = web.AppKey("decisions", DecisionLog)
CLIENT = web.AppKey("client", aiohttp.ClientSession)


def forward_headers(request: web.Request, *, from_lan: bool, hop_from: int | None) -> CIMultiDict:
    """The request's headers as they go upstream: hop-by-hop removed, X-Forwarded-* and Via set.

    Only a gateway sets the hop header: a value that arrived with the request is dropped.
    """
    connection_named = {
        token.strip().lower() for value in request.headers.getall("Connection", []) for token in value.split(",")
    }
    headers = CIMultiDict()
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in connection_named or lowered == HOP_HEADER.lower():
            continue
        headers.add(name, value)

    if from_lan:
        previous = request.headers.get("X-Forwarded-For")
        client = request.remote or ""
        headers["X-Forwarded-For"] = f"{previous}, {client}" if previous else client
        headers["X-Forwarded-Host"] = request.headers.get("Host", "")
        headers["X-Forwarded-Proto"] = request.scheme
    if hop_from is not None:
        headers[HOP_HEADER] = str(hop_from)
    via = f"1.1 flatnet-{request.app[GATEWAY].settings.host_id}"
    headers["Via"] = f"{request.headers['Via']}, {via}" if "Via" in request.headers else via
    return headers


def response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict:
    connection_named = {
        token.strip().lower() for value in upstream.headers.getall("Connection", []) for token in value.split(",")
    }
    headers = CIMultiDict()
    for name, value in upstream.headers.items():
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in connection_named:
            continue
        headers.add(name, value)
    return headers


async def handle(request: web.Request) -> web.StreamResponse:
    """Route one request from a LAN client, or from a peer gateway when the hop header is set."""
    gateway: Gateway = request.app[GATEWAY]
    started = time.monotonic()
    request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
    hop = request.headers.get(HOP_HEADER) if request.app.get(FROM_PEERS, False) else None
    host = request.headers.get("Host")
    name = parse_host(host, gateway.settings.domain)
    container, expired = (None, frozenset())
    target = ""
    decision = Decision.BAD_REQUEST
    status = 500
    try:
        if not host:
            response = _text(request, 400, "proxy.no_host", domain=gateway.settings.domain)
        elif name is None:
            response = _text(request, 400, "proxy.bad_host", host=host, domain=gateway.settings.domain)
        else:
            container, expired = gateway.lookup(name)
            if container is None or (hop is not None and container.host_id != gateway.settings.host_id):
                decision = Decision.NOT_FOUND
                response = _text(request, 404, "proxy.not_found", name=name, host=host)
                if hop is not None:
                    response.headers[NOT_HERE_HEADER] = "1"
            elif container.host_id == gateway.settings.host_id:
                decision = Decision.LOCAL
                port = container.ports[0] if container.ports else 80
                target = f"http://{container.ip}:{port}"
                response = await _relay(request, target, name, from_lan=hop is None, hop_from=None)
            else:
                decision = Decision.PEER
                peer = gateway.settings.peer(container.host_id)
                if peer is None:
                    decision = Decision.NOT_FOUND
                    response = _text(request, 404, "proxy.not_found", name=name, host=host)
                else:
                    target = peer.base_url
                    response = await _relay(request, target, name, from_lan=True, hop_from=gateway.settings.host_id)
        status = response.status
        return response
    finally:
        duration = time.monotonic() - started
        _record(request, gateway, request_id, host, decision, target, container, expired, status, duration, hop)


async def _relay(request: web.Request, target: str, name: str, *, from_lan: bool, hop_from: int | None) -> web.StreamResponse:
    gateway: Gateway = request.app[GATEWAY]
    session = request.app[CLIENT]
    headers = forward_headers(request, from_lan=from_lan, hop_from=hop_from)
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=gateway.settings.upstream_connect_timeout,
        sock_read=gateway.settings.upstream_timeout,
    )
    body = request.content if request.body_exists else None
    url = URL(target + request.raw_path, encoded=True)
    try:
        async with session.request(
            request.method, url, headers=headers, data=body, allow_redirects=False, timeout=timeout
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=response_headers(upstream))
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionRefusedError) as error:
        logger.warning("failed to connect to %s for %r: %s", target, name, error)
        return _text(request, 502, "proxy.bad_gateway", target=target, name=name, error=error)
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        logger.warning("%s timed out for %r", target, name)
        return _text(request, 504, "proxy.timeout", target=target, name=name)


def _record(request, gateway, request_id, host, decision, target, container: Container | None, expired, status, duration, hop):
    gateway.metrics.observe_request(decision.value, status, duration)
    access_logger.info(
        'client=%s host="%s" decision=%s target=%s owner=%s status=%d duration_ms=%.1f request_id=%s%s',
        request.remote, host or "", decision.value, target or "-",
        container.host_id if container else "-", status, duration * 1000, request_id,
        f" hop={hop}" if hop is not None else "",
    )
    request.app[DECISIONS].write({
        "ts": time.time(),
        "requestId": request_id,
        "client": request.remote,
        "host": host,
        "decision": decision.value,
        "target": target or None,
        "owner": container.host_id if container else None,
        "containerId": container.id if container else None,
        "vector": {str(origin): seq for origin, seq in gateway.journal.view.vector.items()},
        "expired": sorted(expired),
        "hop": hop,
        "status": status,
        "durationMs": round(duration * 1000, 2),
    })


FROM_PEERS = web.AppKey("from_peers", bool)
