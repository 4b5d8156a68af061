"""The proxy's decisions: where a request goes, which error page it gets, and what is recorded.

A local container is proxied to directly. A container of another host goes to
that host's gateway over Nebula, marked with the hop header. A gateway that
receives a request with the hop header serves it locally or responds 404 with
``X-Flatnet-Not-Here``, and never forwards it again. That response means our view
is stale: the entry is marked, the owner's log is pulled at once, and the
request is routed once more with the fresher view. The wire work (parsing,
framing, pooling, tunnels) is in forward.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import time
import uuid
from typing import Protocol

import aiohttp

from flatnet import i18n
from flatnet.events.record import RecordError
from flatnet.gateway import wire
from flatnet.gateway.decisions import Decision, DecisionLog, DecisionRecord
from flatnet.gateway.follower import StreamRejected, pull_once
from flatnet.gateway.exchange import Exchange
from flatnet.gateway.names import HostName, HostProblem, InvalidHost, parse_host, prefers_japanese, split_absolute_target
from flatnet.gateway.settings import Settings, StalePolicy, split_host_port
from flatnet.gateway.state import Gateway
from flatnet.gateway.upstream import UpstreamFailure
from flatnet.gateway.wire import Answer, RequestHead
from flatnet.logs import proxy as logger
from flatnet.registry import Container

HOP_HEADER = "X-Flatnet-Hop"
NOT_HERE_HEADER = "X-Flatnet-Not-Here"
OWNER_HEADER = "X-Flatnet-Owner"
STALE_HEADER = "X-Flatnet-Stale"
REQUEST_ID_HEADER = "X-Request-Id"
DEFAULT_PORT = 80
HOST_CACHE_ENTRIES = 4096
LOOKUP_CACHE_ENTRIES = 4096
# How long a stale-view retry waits for the owner's log before routing with what it has.
PULL_SECONDS = 2.0

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")
_HOST_ID = re.compile(rb"[0-9]{1,3}")
# Request headers the proxy sets itself, so a client's copy is dropped first.
_LAN_SET = frozenset({b"x-flatnet-hop", b"x-request-id", b"via", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"})
_PEER_SET = frozenset({b"x-flatnet-hop", b"x-request-id", b"via"})

i18n.define({
    "proxy.no_host": (
        "Missing Host header: send Host: <name>.{domain}\n",
        "Host ヘッダーがありません。Host: <名前>.{domain} を送ってください\n",
    ),
    "proxy.repeated_host": (
        "More than one Host header: send exactly one, Host: <name>.{domain}\n",
        "Host ヘッダーが複数あります。Host: <名前>.{domain} を 1 つだけ送ってください\n",
    ),
    "proxy.bad_host": (
        "Invalid Host header {host!r}: {rule}; expected <name>.{domain}\n",
        "Host ヘッダー {host!r} が不正です（{rule}）。<名前>.{domain} の形式で送ってください\n",
    ),
    "proxy.bad_hop": (
        "Invalid X-Flatnet-Hop {value!r}: it must be the host id (1-254) of a peer of gateway {own}\n",
        "X-Flatnet-Hop {value!r} が不正です。ゲートウェイ {own} のピアのホスト ID（1〜254）を指定してください\n",
    ),
    "proxy.malformed": (
        "Malformed HTTP request: {reason}\n",
        "HTTP リクエストの形式が不正です: {reason}\n",
    ),
    "proxy.not_found": (
        "No container named {name!r} is known to flatnet ({host!r})\n",
        "{name!r} という名前のコンテナーは flatnet に登録されていません ({host!r})\n",
    ),
    "proxy.expired": (
        "Container {name!r} is on host {owner}, which has not been heard from for {silent:.0f} s"
        " (ttl {ttl:.0f} s); try again once host {owner} is back\n",
        "コンテナー {name!r} はホスト {owner} にありますが、ホスト {owner} から {silent:.0f} 秒間応答がありません"
        "（ttl {ttl:.0f} 秒）。ホスト {owner} が復帰してから再度お試しください\n",
    ),
    "proxy.stale_rejected": (
        "Container {name!r} is on host {owner}, which has not been heard from for {silent:.0f} s;"
        " this gateway does not route to a silent host (stale_policy = reject)\n",
        "コンテナー {name!r} はホスト {owner} にありますが、ホスト {owner} から {silent:.0f} 秒間応答がありません。"
        "このゲートウェイは応答のないホストへは転送しません（stale_policy = reject）\n",
    ),
    "proxy.loop": (
        "Loop detected for {name!r}: {detail}\n",
        "{name!r} への転送でループを検出しました: {detail}\n",
    ),
    "proxy.loop_via": (
        "the request already passed through gateway {own} (Via: {via})",
        "このリクエストはすでにゲートウェイ {own} を通過しています（Via: {via}）",
    ),
    "proxy.loop_hop": (
        "gateway {own} received a request forwarded by itself",
        "ゲートウェイ {own} が自分自身から転送されたリクエストを受け取りました",
    ),
    "proxy.loop_owners": (
        "gateway {own} routes it to gateway {peer}, but gateway {peer} does not hold it{claim}",
        "ゲートウェイ {own} はゲートウェイ {peer} へ転送しますが、ゲートウェイ {peer} はこのコンテナーを持っていません{claim}",
    ),
    "proxy.loop_claim": (
        "; gateway {peer} names gateway {claimed} as the owner",
        "（ゲートウェイ {peer} はゲートウェイ {claimed} を所有者としています）",
    ),
    "proxy.not_replayable": (
        "Gateway {peer} no longer holds {name!r}, and the request body was too large to send again; send the request again\n",
        "ゲートウェイ {peer} は {name!r} をもう持っておらず、リクエスト本文が大きすぎて再送できませんでした。もう一度送ってください\n",
    ),
    "proxy.bad_gateway": (
        "Could not connect to {target} for {name!r}: {error}\n",
        "{name!r} の転送先 {target} に接続できませんでした: {error}\n",
    ),
    "proxy.bad_response": (
        "{target} sent an invalid or incomplete response for {name!r}: {error}\n",
        "{name!r} の転送先 {target} の応答が不正または不完全でした: {error}\n",
    ),
    "proxy.timeout": (
        "{target} did not answer in time for {name!r} ({error})\n",
        "{name!r} の転送先 {target} が時間内に応答しませんでした（{error}）\n",
    ),
})

_REASONS = {
    400: b"Bad Request", 404: b"Not Found", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout", 508: b"Loop Detected",
}


class RoutingState(Protocol):
    """The router's source of the fleet's view and of its hosts' liveness.

    The gateway process implements it over its journal (GatewayRoutes); a proxy
    worker process over its mirror of the gateway's view (worker.Mirror).
    """

    settings: Settings

    def lookup(self, name: str) -> tuple[Container | None, frozenset[int]]:
        """Return the live container called ``name``, and the origins expired now."""

    def lookup_expired(self, name: str) -> Container | None:
        """Return a container called ``name`` whose owner has expired, if there is one."""

    def vector(self) -> dict[int, int]:
        """A copy of the view's version vector."""

    def silent_seconds(self, origin: int) -> float:
        """Seconds since ``origin`` was last heard from; 0 for this host."""

    def mark_stale(self, name: str, container: Container) -> None:
        """Record that ``container``'s owner reported it no longer has it."""

    async def pull(self, origin: int) -> None:
        """Bring the view up to ``origin``'s current head at once, or give up after PULL_SECONDS."""

    def observe(self, batch: list[DecisionRecord]) -> None:
        """Count finished requests in the metrics; the decision log calls it with each batch."""


@dataclasses.dataclass(slots=True)
class Route:
    """The target of one attempt of a request, or the response when there is no target."""

    record: DecisionRecord
    answer: Answer | None = None
    address: tuple[str, int] | None = None
    target_path: bytes = b""
    headers: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)
    attempt: int = 1
    label: str = ""
    name: str = ""
    container: Container | None = None
    peer: int | None = None
    japanese: bool = False
    stale_header: bytes | None = None
    request_id: bytes = b""


class Router:
    """Turns each request into a Route, and each finished exchange into a decision record."""

    def __init__(self, state: RoutingState, decisions: DecisionLog):
        self.state = state
        self.settings = state.settings
        self.decisions = decisions
        decisions.observers.append(state.observe)
        self.host_id = state.settings.host_id
        self.via = b"1.1 flatnet-%d" % self.host_id
        self._via_token = b"flatnet-%d" % self.host_id
        self._domain = state.settings.domain
        self._peers: dict[int, tuple[str, int]] = {}
        self._peers_of: Settings | None = None
        # Request ids: a random prefix per process and a counter, unique without
        # a call to the random source per request.
        self._id_prefix = uuid.uuid4().hex[:12].encode()
        self._id_counter = itertools.count(1)
        self._hosts: dict[bytes | None, HostName | InvalidHost] = {}
        self._labels: dict[tuple[str, int], str] = {}

    def _parse_host(self, host: bytes | None) -> HostName:
        # Clients send the same few Host values over and over.
        parsed = self._hosts.get(host)
        if parsed is None:
            if len(self._hosts) >= HOST_CACHE_ENTRIES:
                self._hosts.clear()
            try:
                parsed = parse_host(host, self._domain)
            except InvalidHost as error:
                parsed = error
            self._hosts[host] = parsed
        if isinstance(parsed, InvalidHost):
            raise parsed
        return parsed

    def _next_request_id(self) -> bytes:
        return b"%s-%x" % (self._id_prefix, next(self._id_counter))

    # forward.py calls these

    def route(self, head: RequestHead, client: str, *, from_peers: bool) -> Route:
        request_id = head.field(b"x-request-id")
        if request_id is None or not _REQUEST_ID.fullmatch(request_id):
            request_id = self._next_request_id()
        host_bytes = head.field(b"host")
        record = DecisionRecord(
            ts=time.time(),
            request_id=request_id.decode(),
            client=client,
            method=head.method.decode("latin-1"),
            host=host_bytes.decode("latin-1") if host_bytes is not None else "",
        )
        route = Route(record, japanese=prefers_japanese(head.field(b"accept-language")), request_id=request_id)

        hop = None
        if from_peers:
            value = head.field(b"x-flatnet-hop") or b""
            if not _HOST_ID.fullmatch(value) or (self._peer_address(int(value)) is None and int(value) != self.host_id):
                return self._answer(route, 400, Decision.BAD_REQUEST, "proxy.bad_hop", value=value.decode("latin-1"), own=self.host_id)
            hop = record.hop = int(value)

        authority, path = split_absolute_target(head.target)
        if authority is not None:
            host_bytes = authority
            record.host = authority.decode("latin-1")
        elif len(head.fields.get(b"host", ())) > 1:
            return self._answer(route, 400, Decision.BAD_REQUEST, "proxy.repeated_host", domain=self._domain)
        try:
            asked = self._parse_host(host_bytes)
        except InvalidHost as error:
            if error.problem is HostProblem.MISSING:
                return self._answer(route, 400, Decision.BAD_REQUEST, "proxy.no_host", domain=self._domain)
            return self._answer(route, 400, Decision.BAD_REQUEST, "proxy.bad_host", host=error.host, rule=error.rule, domain=self._domain)
        route.name = record.name = asked.name

        via = b", ".join(head.fields.get(b"via", ()))
        if self._via_token in via:
            detail = i18n.text("proxy.loop_via", japanese=route.japanese, own=self.host_id, via=via.decode("latin-1"))
            return self._answer(route, 508, Decision.LOOP, "proxy.loop", name=asked.name, detail=detail)
        if hop == self.host_id:
            detail = i18n.text("proxy.loop_hop", japanese=route.japanese, own=self.host_id)
            return self._answer(route, 508, Decision.LOOP, "proxy.loop", name=asked.name, detail=detail)

        route.target_path = path
        route.headers = self._upstream_headers(head, client, request_id, from_peers=from_peers)
        container, expired = self.state.lookup(asked.name)
        record.vector = self.state.vector()
        record.expired = tuple(sorted(expired)) if expired else ()
        return self._place(route, container, asked.port, hop=hop, decision=None)

    def is_not_here(self, exchange: Exchange, status: int, headers: list[tuple[bytes, bytes]]) -> bool:
        """Tell whether a peer responded that it does not have the name, so the view is stale."""
        route = exchange.route
        if status != 404 or route.peer is None or route.attempt > 1:
            return False
        claimed = None
        not_here = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"x-flatnet-not-here":
                not_here = True
            elif lowered == b"x-flatnet-owner" and _HOST_ID.fullmatch(value):
                claimed = int(value)
        exchange.claimed_owner = claimed
        return not_here

    async def retry_after_not_here(self, exchange: Exchange, *, replayable: bool) -> Route:
        """Mark the entry stale, pull the owner's log, and route the request once more."""
        previous = exchange.route
        record = previous.record
        peer = previous.peer
        record.retried_from = peer
        self.state.mark_stale(previous.name, previous.container)
        # The peer may know where the container went; that host's log is pulled too.
        claimed = exchange.claimed_owner
        pulls = [self.state.pull(peer)]
        if claimed is not None and claimed not in (peer, self.host_id):
            pulls.append(self.state.pull(claimed))
        await asyncio.gather(*pulls)

        route = Route(
            record, target_path=previous.target_path, headers=previous.headers, attempt=2,
            name=previous.name, japanese=previous.japanese, request_id=previous.request_id,
        )
        container, expired = self.state.lookup(previous.name)
        record.vector = self.state.vector()
        record.expired = tuple(sorted(expired)) if expired else ()
        if container is not None and container.host_id == peer:
            claim = ""
            if claimed is not None:
                claim = i18n.text("proxy.loop_claim", japanese=route.japanese, claimed=claimed, peer=peer)
            detail = i18n.text("proxy.loop_owners", japanese=route.japanese, own=self.host_id, peer=peer, claim=claim)
            record.owner = peer
            logger.warning("gateway %d still routes %r to host %d after pulling its log; responding 508", self.host_id, previous.name, peer)
            return self._answer(route, 508, Decision.LOOP, "proxy.loop", name=previous.name, detail=detail)
        if container is not None and not replayable:
            return self._answer(route, 503, Decision.STALE_RETRY, "proxy.not_replayable", peer=peer, name=previous.name)
        # The hop header must name the gateway that forwards; a local container needs none.
        route.headers = [(name, value) for name, value in previous.headers if name != HOP_HEADER.encode()]
        if container is not None and container.host_id != self.host_id:
            route.headers.append((HOP_HEADER.encode(), b"%d" % self.host_id))
        return self._place(route, container, None, hop=None, decision=Decision.STALE_RETRY)

    def response_headers(self, exchange: Exchange) -> list[tuple[bytes, bytes]]:
        route = exchange.route
        headers = [(b"Via", self.via), (b"X-Request-Id", route.request_id)]
        if route.stale_header is not None:
            headers.append((STALE_HEADER.encode(), route.stale_header))
        return headers

    def failure_answer(self, exchange: Exchange, failure: UpstreamFailure, detail: str) -> Answer:
        route = exchange.route
        logger.warning("%s for %r at %s: %s", failure.value, route.name, route.label, detail)
        if failure in (UpstreamFailure.CONNECT_TIMEOUT, UpstreamFailure.TIMEOUT):
            status, key = 504, "proxy.timeout"
        elif failure is UpstreamFailure.CONNECT:
            status, key = 502, "proxy.bad_gateway"
        else:
            status, key = 502, "proxy.bad_response"
        return self._page(route, status, key, target=route.label, name=route.name, error=detail)

    def malformed_answer(self, client, reason: str) -> Answer:
        record = DecisionRecord(ts=time.time(), request_id=self._next_request_id().decode(), client=client.peer, method="-", host="")
        record.status = 400
        self.decisions.add(record)
        body = i18n.text("proxy.malformed", japanese=False, reason=reason).encode()
        return Answer(400, _REASONS[400], body, close=True)

    def finish(self, exchange: Exchange) -> None:
        record = exchange.route.record if exchange.route is not None else None
        if record is None:
            return
        record.status = exchange.status
        record.bytes_sent = exchange.bytes_sent
        record.bytes_received = exchange.bytes_received
        record.duration_ms = round((time.perf_counter() - exchange.started) * 1000, 3)
        self.decisions.add(record)

    # internals

    def _place(self, route: Route, container: Container | None, port: int | None, *, hop: int | None, decision: Decision | None) -> Route:
        """Route to ``container``: locally, to its owner's gateway, or to an error page."""
        record = route.record
        name = route.name
        if container is None:
            expired = self.state.lookup_expired(name) if hop is None else None
            if expired is not None:
                record.owner = expired.host_id
                record.container_id = expired.id
                silent = self.state.silent_seconds(expired.origin)
                return self._answer(
                    route, 404, Decision.EXPIRED, "proxy.expired",
                    name=name, owner=expired.host_id, silent=silent, ttl=self.settings.ttl,
                )
            return self._not_found(route, hop)

        if hop is not None and container.host_id != self.host_id:
            return self._not_found(route, hop, claimed=container.host_id)

        record.owner = container.host_id
        record.container_id = container.id
        route.container = container
        if container.host_id == self.host_id:
            if port is not None and port in container.ports:
                target_port = port
            elif container.ports:
                target_port = container.ports[0]
            else:
                target_port = DEFAULT_PORT
            route.address = (container.ip, target_port)
            route.label = self._label(route.address)
            record.decision = decision or Decision.LOCAL
            record.target = route.label
            return route

        address = self._peer_address(container.host_id)
        if address is None:
            logger.warning("no gateway of host %d is configured; %r cannot be reached", container.host_id, name)
            return self._not_found(route, hop)
        silent = self.state.silent_seconds(container.origin)
        if silent > self.settings.stale_seconds:
            policy = self.settings.stale_policy
            record.stale_policy = policy.value
            record.owner_silent_seconds = round(silent, 1)
            if policy is StalePolicy.REJECT:
                return self._answer(route, 503, decision or Decision.PEER, "proxy.stale_rejected", name=name, owner=container.host_id, silent=silent)
            if policy is StalePolicy.WARN:
                route.stale_header = b"owner=%d; silent=%.1f" % (container.host_id, silent)
        route.address = address
        route.peer = container.host_id
        route.label = self._label(address)
        if decision is None:
            route.headers.append((HOP_HEADER.encode(), b"%d" % self.host_id))
        record.decision = decision or Decision.PEER
        record.target = route.label
        return route

    def _label(self, address: tuple[str, int]) -> str:
        label = self._labels.get(address)
        if label is None:
            if len(self._labels) >= HOST_CACHE_ENTRIES:
                self._labels.clear()
            label = self._labels[address] = f"http://{address[0]}:{address[1]}"
        return label

    def _peer_address(self, host_id: int) -> tuple[str, int] | None:
        # The peers may change while the gateway runs (a config reload).
        settings = self.state.settings
        if settings is not self._peers_of:
            self._peers = {
                peer.host_id: split_host_port(f"{peer.api.host}:{peer.api.port or DEFAULT_PORT}") for peer in settings.peers
            }
            self._peers_of = settings
        return self._peers.get(host_id)

    def _not_found(self, route: Route, hop: int | None, claimed: int | None = None) -> Route:
        self._answer(route, 404, Decision.NOT_FOUND, "proxy.not_found", name=route.name, host=route.record.host)
        if hop is not None:
            extra = [(NOT_HERE_HEADER.encode(), b"1")]
            if claimed is not None:
                extra.append((OWNER_HEADER.encode(), b"%d" % claimed))
            route.answer = dataclasses.replace(route.answer, headers=route.answer.headers + tuple(extra))
        return route

    def _answer(self, route: Route, status: int, decision: Decision, key: str, **values: object) -> Route:
        route.record.decision = decision
        route.answer = self._page(route, status, key, **values)
        return route

    def _page(self, route: Route, status: int, key: str, **values: object) -> Answer:
        body = i18n.text(key, japanese=route.japanese, **values).encode()
        headers = ((b"Via", self.via), (b"X-Request-Id", route.record.request_id.encode()))
        return Answer(status, _REASONS[status], body, headers)

    def _upstream_headers(self, head: RequestHead, client: str, request_id: bytes, *, from_peers: bool) -> list[tuple[bytes, bytes]]:
        fields = head.fields
        headers = wire.forwardable(head.headers, fields, _PEER_SET if from_peers else _LAN_SET)
        if not from_peers:
            previous = fields.get(b"x-forwarded-for")
            forwarded_for = client.encode()
            if previous:
                forwarded_for = b", ".join(previous) + b", " + forwarded_for
            headers.append((b"X-Forwarded-For", forwarded_for))
            headers.append((b"X-Forwarded-Host", head.field(b"host") or b""))
            headers.append((b"X-Forwarded-Proto", b"http"))
        via = fields.get(b"via")
        headers.append((b"Via", b", ".join(via) + b", " + self.via if via else self.via))
        headers.append((b"X-Request-Id", request_id))
        return headers


class GatewayRoutes:
    """The RoutingState of the gateway process: its journal's view and its liveness."""

    def __init__(self, gateway: Gateway, session: aiohttp.ClientSession):
        self.gateway = gateway
        self.session = session
        # Names whose owner reported it no longer has them: name -> (container id, owner).
        self.stale: dict[str, tuple[str, int]] = {}
        self._no_expiry_until = 0.0
        self._no_expiry_settings: Settings | None = None
        # Lookups by (name, expired origins), and the vector, until the view changes.
        self._found: dict[tuple[str, frozenset[int]], Container | None] = {}
        self._vector: dict[int, int] | None = None
        gateway.journal.listeners.append(self._view_changed)

    @property
    def settings(self) -> Settings:
        return self.gateway.settings

    def lookup(self, name: str) -> tuple[Container | None, frozenset[int]]:
        expired = self._expired_origins()
        key = (name, expired)
        if key in self._found:
            return self._found[key], expired
        matches = self.gateway.journal.view.named(name, expired_origins=expired)
        found = matches[0] if matches else None
        if len(self._found) >= LOOKUP_CACHE_ENTRIES:
            self._found.clear()
        self._found[key] = found
        return found, expired

    def _view_changed(self, event, outcome) -> None:
        self._found.clear()
        self._vector = None

    def _expired_origins(self) -> frozenset[int]:
        # Gateway.expired_origins walks every origin. While none has expired,
        # none can before the earliest deadline (a frame heard only moves a
        # deadline later), so the empty set is kept until then.
        now = time.monotonic()
        if now < self._no_expiry_until and self.gateway.settings is self._no_expiry_settings:
            return frozenset()
        expired = self.gateway.expired_origins()
        if expired:
            self._no_expiry_until = 0.0
        else:
            liveness = self.gateway.liveness
            deadlines = [last + liveness.ttl for origin, last in liveness.last_heard.items() if origin != self.settings.host_id]
            self._no_expiry_until = min(deadlines, default=now + 1.0)
            self._no_expiry_settings = self.gateway.settings
        return expired

    def lookup_expired(self, name: str) -> Container | None:
        matches = self.gateway.journal.view.named(name)
        return matches[0] if matches else None

    def vector(self) -> dict[int, int]:
        # One copy serves every record until the view changes; records only read it.
        if self._vector is None:
            self._vector = dict(self.gateway.journal.view.vector)
        return self._vector

    def silent_seconds(self, origin: int) -> float:
        if origin == self.settings.host_id:
            return 0.0
        last = self.gateway.liveness.last_heard.get(origin, self.gateway.started)
        return time.monotonic() - last

    def observe(self, batch: list[DecisionRecord]) -> None:
        metrics = self.gateway.metrics
        counts: dict[tuple[str, int], int] = {}
        durations: dict[str, list[float]] = {}
        for record in batch:
            decision = record.decision.value
            key = (decision, record.status)
            counts[key] = counts.get(key, 0) + 1
            durations.setdefault(decision, []).append(record.duration_ms / 1000)
        for (decision, status), count in counts.items():
            metrics.proxy_requests.labels(decision, str(status)).inc(count)
        for decision, seconds in durations.items():
            histogram = metrics.proxy_duration.labels(decision)
            for value in seconds:
                histogram.observe(value)

    def mark_stale(self, name: str, container: Container) -> None:
        self.stale[name] = (container.id, container.host_id)
        logger.info("entry %r (container %s on host %d) is stale: its gateway does not hold it; pulling its log", name, container.id, container.host_id)

    async def pull(self, origin: int) -> None:
        peer = self.settings.peer(origin)
        if peer is None:
            return
        try:
            stored = await pull_once(self.gateway, peer, self.session, PULL_SECONDS)
        except (aiohttp.ClientError, TimeoutError, StreamRejected, RecordError) as error:
            logger.warning("pulling the log of peer %d failed: %s; routing with the view as it is", origin, error)
            return
        logger.info("pulled %d events of peer %d, head now %d", stored, origin, self.gateway.journal.head(origin))
