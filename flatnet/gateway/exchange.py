"""One request and its response, relayed between a client connection and an upstream connection.

An exchange routes its request (through the router), sends it upstream on a
pooled or new connection, relays the response with its framing redone for the
client, and writes the decision record when it ends. A peer's "not here"
response, or a pooled connection that closed before responding, gives it one
more attempt.
"""

from __future__ import annotations

import asyncio
import enum
import time
from typing import TYPE_CHECKING

from flatnet.gateway.upstream import UpstreamConnection, UpstreamError, UpstreamFailure
from flatnet.gateway.wire import HOP_BY_HOP, NO_BODY_STATUSES, Answer, Framing, RequestHead, chunk, connection_tokens, forwardable, head_bytes
from flatnet.logs import proxy as logger

if TYPE_CHECKING:
    from flatnet.gateway.forward import ClientConnection
    from flatnet.gateway.proxy import Route

# Past this much buffered request body the client is not read until upstream takes it.
BUFFER_HIGH_BYTES = 256 * 1024
# Bytes of a request body kept for a second attempt (after a peer reports that it
# no longer has the name, or a pooled connection closes before responding).
REPLAY_BODY_BYTES = 1 << 20


# Response headers the gateway sets again: the framing, and its own X-Request-Id
# (a peer gateway's copy would repeat it).
_RESPONSE_SET = HOP_BY_HOP | {b"content-length", b"x-request-id"}
# Connection tokens that name no header.
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade"})
# How often the Watchdog looks for idle exchanges, so a timeout fires up to this late.
WATCHDOG_SECONDS = 0.25


class Watchdog:
    """Times out idle exchanges with one periodic check for all, instead of a timer for each."""

    def __init__(self) -> None:
        self._exchanges: set[Exchange] = set()
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, exchange: Exchange) -> None:
        self._exchanges.add(exchange)
        if self._handle is None:
            self._handle = exchange.loop.call_later(WATCHDOG_SECONDS, self._check, exchange.loop)

    def unwatch(self, exchange: Exchange) -> None:
        self._exchanges.discard(exchange)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        now = loop.time()
        for exchange in list(self._exchanges):
            exchange.check_idle(now)
        if self._exchanges:
            self._handle = loop.call_later(WATCHDOG_SECONDS, self._check, loop)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class ExchangeState(enum.Enum):
    ROUTING = "routing"
    CONNECTING = "connecting"
    WAITING = "waiting"  # request sent, no response head yet
    RESPONDING = "responding"
    TUNNEL = "tunnel"
    DONE = "done"


class Exchange:
    """One request from a client and its response, through at most two upstream attempts."""

    def __init__(self, client: ClientConnection, head: RequestHead):
        self.client = client
        self.loop = client.loop
        self.head = head
        self.state = ExchangeState.ROUTING
        self.route: Route | None = None
        self.upstream: UpstreamConnection | None = None
        self.request_done = head.framing is Framing.NONE
        self.upgrading = False
        # Not loop.time(): uvloop's clock counts whole milliseconds, once per iteration.
        self.started = time.perf_counter()
        self.bytes_received = 0
        self.bytes_sent = 0
        self.status = 0
        self._body: list[bytes] = []  # request body not yet sent upstream
        self._buffered = 0
        self._replay: list[bytes] | None = []  # the whole request body, while small enough
        self._response_framing = Framing.NONE
        self._client_keep_alive = head.keep_alive
        self._reused = False
        self._discarding = False
        self.claimed_owner: int | None = None
        self._timeout = 0.0
        self._task: asyncio.Task | None = None

    # the request side, fed by ClientConnection

    def request_body(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self._replay is not None:
            if self.bytes_received <= REPLAY_BODY_BYTES:
                self._replay.append(data)
            else:
                self._replay = None
        if self.state is ExchangeState.WAITING or self.state is ExchangeState.RESPONDING:
            if self.upstream is not None:
                self.upstream.write(self._encode_body(data))
            return
        if self.state is ExchangeState.DONE:
            return
        self._body.append(data)
        self._buffered += len(data)
        if self._buffered > BUFFER_HIGH_BYTES:
            self.client.pause_reading()

    def request_complete(self) -> None:
        self.request_done = True
        if self.upstream is not None and self.state in (ExchangeState.WAITING, ExchangeState.RESPONDING):
            if self.head.framing is Framing.CHUNKED:
                self.upstream.write(b"0\r\n\r\n")
        if self.state is ExchangeState.DONE:
            self.client.exchange_finished(self)

    def _encode_body(self, data: bytes) -> bytes | list[bytes]:
        if self.head.framing is Framing.CHUNKED:
            return chunk(data)
        return data

    # starting and routing

    def start(self) -> None:
        route = self.client.router.route(self.head, self.client.peer, from_peers=self.client.from_peers)
        self._follow(route)

    def _follow(self, route: Route) -> None:
        self.route = route
        if route.answer is not None:
            self._answer(route.answer)
            return
        connection = self.client.pool.take(route.address)
        if connection is not None:
            self._send(connection, reused=True)
            return
        self.state = ExchangeState.CONNECTING
        self._task = self.loop.create_task(self._connect(route))

    async def _connect(self, route: Route) -> None:
        try:
            connection = await self.client.pool.connect(route.address)
        except UpstreamError as error:
            self._task = None
            if self.state is not ExchangeState.DONE:
                self._answer(self.client.router.failure_answer(self, error.failure, error.detail))
            return
        self._task = None
        if self.state is ExchangeState.DONE:
            connection.close()
            return
        self._send(connection, reused=False)

    def _send(self, connection: UpstreamConnection, *, reused: bool) -> None:
        self.upstream = connection
        self._reused = reused
        self.state = ExchangeState.WAITING
        route = self.route
        head = self.head
        first_line = head.method + b" " + route.target_path + b" HTTP/1.1\r\n"
        headers = route.headers
        if head.framing is Framing.LENGTH:
            headers = headers + [(b"Content-Length", head.field(b"content-length"))]
        elif head.framing is Framing.CHUNKED:
            headers = headers + [(b"Transfer-Encoding", b"chunked")]
        if head.upgrade:
            headers = headers + [(b"Connection", b"upgrade"), (b"Upgrade", head.field(b"upgrade") or b"")]
        data = [head_bytes(first_line, headers)]

        body = self._body if route.attempt == 1 else (self._replay or [])
        for piece in body:
            if head.framing is Framing.CHUNKED:
                data.extend(chunk(piece))
            else:
                data.append(piece)
        self._body = []
        self._buffered = 0
        if self.request_done and head.framing is Framing.CHUNKED:
            data.append(b"0\r\n\r\n")
        connection.send(self, data, no_body=head.method == b"HEAD")
        self.client.resume_reading()
        self._arm_timer(self.client.router.settings.upstream_timeout)

    # the response side, fed by UpstreamConnection

    def interim_response(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        # 100 Continue and 103 Early Hints reach an HTTP/1.1 client; an HTTP/1.0 one cannot read them.
        if self.head.version == "1.1":
            kept = forwardable(headers, {}, frozenset())
            self.client.write(head_bytes(b"HTTP/1.1 %d %s\r\n" % (status, reason), kept))

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        self._cancel_timer()
        router = self.client.router
        if router.is_not_here(self, status, headers):
            self.upgrading = False
            self.state = ExchangeState.RESPONDING
            self._discarding = True
            self.status = status
            return
        self._discarding = False
        self.status = status
        self.state = ExchangeState.RESPONDING

        # One pass keeps the end-to-end headers as wire lines and notes the framing.
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        length = connection = upgrade = None
        chunked = False
        for name, value in headers:
            lowered = name.lower()
            if lowered in _RESPONSE_SET:
                if lowered == b"content-length":
                    length = value
                elif lowered == b"transfer-encoding":
                    chunked = chunked or b"chunked" in value.lower()
                elif lowered == b"connection":
                    connection = value if connection is None else connection + b"," + value
                elif lowered == b"upgrade":
                    upgrade = value
                continue
            lines.append(name + b": " + value + b"\r\n")
        # Most responses carry just "Connection: keep-alive" (or close), which names no header.
        if (
            connection is not None and connection.lower() not in _PLAIN_CONNECTION
            and connection_tokens({b"connection": [connection]}) - _PLAIN_CONNECTION
        ):
            # Rare: the response names headers of its own as hop-by-hop.
            kept = forwardable(headers, {b"connection": [connection]}, _RESPONSE_SET)
            lines[1:] = [name + b": " + value + b"\r\n" for name, value in kept]
        for name, value in router.response_headers(self):
            lines.append(name + b": " + value + b"\r\n")

        if status == 101 and self.head.upgrade:
            self.upgrading = True
            lines.append(b"Connection: upgrade\r\n")
            if upgrade is not None:
                lines.append(b"Upgrade: " + upgrade + b"\r\n")
            lines.append(b"\r\n")
            self.client.write(b"".join(lines))
            return

        no_body = self.head.method == b"HEAD" or status in NO_BODY_STATUSES or status < 200
        if no_body:
            self._response_framing = Framing.NONE
            if length is not None and not chunked:
                lines.append(b"Content-Length: " + length + b"\r\n")
        elif chunked:
            self._response_framing = Framing.CHUNKED
        elif length is not None:
            self._response_framing = Framing.LENGTH
            lines.append(b"Content-Length: " + length + b"\r\n")
        else:
            self._response_framing = Framing.CLOSE

        if self._response_framing in (Framing.CHUNKED, Framing.CLOSE) and not no_body:
            if self.head.version == "1.1":
                lines.append(b"Transfer-Encoding: chunked\r\n")
                self._response_framing = Framing.CHUNKED
            else:
                self._client_keep_alive = False
        if self.head.upgrade:
            # The client asked to switch protocols and was refused: its
            # connection is in an undefined state, so it ends with this response.
            self._client_keep_alive = False
        if not self._client_keep_alive:
            lines.append(b"Connection: close\r\n")
        elif self.head.version != "1.1":
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        self.client.write(b"".join(lines))

    def response_body(self, data: bytes) -> None:
        if self._discarding:
            return
        self.bytes_sent += len(data)
        if self._response_framing is Framing.CHUNKED:
            self.client.write(chunk(data))
        else:
            self.client.write(data)

    def response_complete(self, connection: UpstreamConnection, *, keep_alive: bool) -> None:
        self._cancel_timer()
        reuse = keep_alive and self.request_done
        connection.finished(reuse=reuse)
        self.upstream = None
        if self._discarding:
            self._discarding = False
            self._retry_elsewhere()
            return
        if self._response_framing is Framing.CHUNKED:
            self.client.write(b"0\r\n\r\n")
        self._finish()

    def _retry_elsewhere(self) -> None:
        self.state = ExchangeState.ROUTING
        replayable = self._replay is not None and (self.request_done or self.head.framing is Framing.NONE)
        self._task = self.loop.create_task(self._retry(replayable))

    async def _retry(self, replayable: bool) -> None:
        route = await self.client.router.retry_after_not_here(self, replayable=replayable)
        self._task = None
        if self.state is ExchangeState.DONE:
            return
        self._follow(route)

    def upgrade_accepted(self, rest: bytes) -> None:
        """Switch both connections to raw bytes after upstream's 101 response."""
        self._cancel_timer()
        upstream = self.upstream
        upstream.tunnel = True
        self.state = ExchangeState.TUNNEL
        if rest:
            self.client.write(rest)
        self.client.start_tunnel(self)
        self._arm_timer(self.client.router.settings.tunnel_idle_timeout)

    def upstream_closed(self, connection: UpstreamConnection) -> None:
        """Upstream closed its connection before the exchange ended."""
        self._cancel_timer()
        self.upstream = None
        if self.state is ExchangeState.RESPONDING and self._response_framing is Framing.CLOSE:
            if not self._discarding:
                self._finish()
                return
        if self.state is ExchangeState.WAITING and self._reused and not connection.received_any:
            # A pooled connection that the container closed while idle: the
            # request never reached it, so one fresh connection may carry it.
            if self._replay is not None and self.route.attempt == 1:
                self._body = list(self._replay)
                self._buffered = sum(map(len, self._body))
                self._task = self.loop.create_task(self._connect(self.route))
                return
        self.upstream_failed(UpstreamFailure.CLOSED, "upstream closed the connection before the response ended")

    def upstream_failed(self, failure: UpstreamFailure, detail: str) -> None:
        self._cancel_timer()
        if self.upstream is not None:
            self.upstream.exchange = None
            self.upstream.abort()
            self.upstream = None
        if self.state in (ExchangeState.RESPONDING, ExchangeState.TUNNEL) and not self._discarding:
            # Part of the response is already with the client, so only closing
            # the connection shows it that the response is incomplete.
            logger.warning("%s for %s: %s; closing the client connection", failure.value, self.route.label, detail)
            self._client_keep_alive = False
            self.state = ExchangeState.DONE
            self.client.router.finish(self)
            self.client.abort()
            return
        self._answer(self.client.router.failure_answer(self, failure, detail))

    # timeouts

    def _arm_timer(self, seconds: float) -> None:
        self._timeout = seconds
        self.client.watchdog.watch(self)

    def _cancel_timer(self) -> None:
        if self._timeout:
            self._timeout = 0.0
            self.client.watchdog.unwatch(self)

    def check_idle(self, now: float) -> None:
        """End the exchange if upstream has sent nothing for its timeout; the Watchdog calls this."""
        upstream = self.upstream
        seconds = self._timeout
        if upstream is None or not seconds:
            return
        last = upstream.last_read
        if self.state is ExchangeState.TUNNEL or not self.request_done:
            # An upload in progress, or a tunnel used one way, is not idle.
            last = max(last, self.client.last_read)
        if now - last < seconds:
            return
        self._cancel_timer()
        if self.state is ExchangeState.TUNNEL:
            logger.info("closing the idle tunnel to %s after %.0f s without traffic", self.route.label, seconds)
            upstream.close()
            self.client.close()
            return
        self.upstream_failed(UpstreamFailure.TIMEOUT, f"no data for {seconds:g} s")

    # ending

    def _answer(self, answer: Answer) -> None:
        """Write a response of the gateway's own."""
        self.status = answer.status
        self.state = ExchangeState.RESPONDING
        if answer.close or not self.request_done or self.head.upgrade:
            self._client_keep_alive = False
        headers = list(answer.headers)
        headers.append((b"Content-Type", b"text/plain; charset=utf-8"))
        headers.append((b"Content-Length", b"%d" % len(answer.body)))
        if not self._client_keep_alive:
            headers.append((b"Connection", b"close"))
        elif self.head.version != "1.1":
            headers.append((b"Connection", b"keep-alive"))
        head = head_bytes(b"HTTP/1.1 %d %s\r\n" % (answer.status, answer.reason), headers)
        if self.head.method == b"HEAD":
            self.client.write(head)
        else:
            self.client.write([head, answer.body])
            self.bytes_sent += len(answer.body)
        self._finish()

    def _finish(self) -> None:
        self._cancel_timer()
        self.state = ExchangeState.DONE
        self.client.router.finish(self)
        self.client.exchange_finished(self)

    @property
    def keep_client(self) -> bool:
        return self._client_keep_alive

    def client_lost(self) -> None:
        """Abort whatever is still going on upstream, because the client went away."""
        self._cancel_timer()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.upstream is not None:
            self.upstream.exchange = None
            self.upstream.abort()
            self.upstream = None
        if self.state is not ExchangeState.DONE:
            if self.state is not ExchangeState.TUNNEL and self.status == 0:
                # nginx's code for "client closed the request before the response".
                self.status = 499
            self.state = ExchangeState.DONE
            self.client.router.finish(self)
