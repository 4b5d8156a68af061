"""The proxy's listeners and client connections.

Requests are parsed with llhttp through httptools on asyncio protocols rather
than streams, so a request costs a few callbacks and no task. Each request
becomes an Exchange (exchange.py), which the router (proxy.py) routes and
which relays the response from an upstream connection (upstream.py).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from flatnet.gateway.exchange import Exchange, Watchdog
from flatnet.gateway.upstream import UpstreamPool
from flatnet.gateway.wire import Framing, RequestHead, head_bytes

if TYPE_CHECKING:
    from flatnet.gateway.proxy import Router

GC_THRESHOLD = 50_000

# Fields read by the router or by the framing logic; any other header is only passed on.
_READ_FIELDS = frozenset({
    b"host", b"connection", b"content-length", b"transfer-encoding", b"upgrade", b"accept-language",
    b"x-flatnet-hop", b"x-request-id", b"via", b"x-forwarded-for", b"expect",
})


class ClientConnection(asyncio.Protocol):
    """A connection from a LAN client, or from a peer gateway on the Nebula side.

    Requests are answered in order; a pipelined request waits, with its body
    buffered, until the one before it is done. On the Nebula side the first
    request decides what the connection is: with the hop header it is a peer's
    forwarding connection; without it, it is handed to the internal API.
    """

    def __init__(
        self,
        router: Router,
        pool: UpstreamPool,
        connections: set[ClientConnection],
        watchdog: Watchdog,
        *,
        from_peers: bool = False,
        handoff: Callable[[asyncio.Transport, bytes], None] | None = None,
    ):
        self.router = router
        self.pool = pool
        self.connections = connections
        self.watchdog = watchdog
        self.from_peers = from_peers
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = "-"
        self.last_read = 0.0
        self._handoff = handoff
        self._handoff_buffer: list[bytes] | None = [] if handoff is not None else None
        self._handing_off = False
        self._parser = httptools.HttpRequestParser(self)
        self._exchanges: collections.deque[Exchange] = collections.deque()
        self._current: Exchange | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._url = b""
        self._tunnel: Exchange | None = None
        self._upgrade_pending = False
        self._early: list[bytes] = []
        self._paused = False
        self._write_paused = False
        self._closing = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._corked: list[bytes] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.connections.add(self)
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if peername else "-"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.last_read = self.loop.time()
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        if self._tunnel is not None:
            if self._tunnel.upstream is not None:
                self._tunnel.upstream.write(data)
            return
        if self._upgrade_pending:
            self._early.append(data)
            return
        if self._handoff_buffer is not None:
            self._handoff_buffer.append(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0]
            self._upgrade_pending = True
            if offset < len(data):
                self._early.append(data[offset:])
        except httptools.HttpParserError as error:
            if not self._handing_off:
                self._reject_malformed(error)
        if self._handing_off:
            self._hand_off()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        while self._exchanges:
            self._exchanges.popleft().client_lost()
        if self._tunnel is not None:
            self._tunnel.client_lost()
            self._tunnel = None

    def pause_writing(self) -> None:
        self._write_paused = True
        exchange = self._exchanges[0] if self._exchanges else self._tunnel
        if exchange is not None and exchange.upstream is not None and exchange.upstream.transport is not None:
            exchange.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        exchange = self._exchanges[0] if self._exchanges else self._tunnel
        if exchange is not None and exchange.upstream is not None and exchange.upstream.transport is not None:
            exchange.upstream.transport.resume_reading()

    # llhttp callbacks

    def on_message_begin(self) -> None:
        self._headers = []
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        fields: dict[bytes, list[bytes]] = {}
        for name, value in self._headers:
            lowered = name.lower()
            if lowered in _READ_FIELDS:
                fields.setdefault(lowered, []).append(value)

        if self._handoff_buffer is not None:
            if b"x-flatnet-hop" not in fields:
                self._handing_off = True
                return
            self._handoff_buffer = None

        if b"transfer-encoding" in fields:
            framing = Framing.CHUNKED
        elif b"content-length" in fields:
            framing = Framing.LENGTH
        else:
            framing = Framing.NONE
        parser = self._parser
        head = RequestHead(
            method=parser.get_method(),
            target=self._url,
            version=parser.get_http_version(),
            headers=self._headers,
            keep_alive=parser.should_keep_alive(),
            upgrade=parser.should_upgrade() and b"upgrade" in fields,
            framing=framing,
            fields=fields,
        )
        exchange = Exchange(self, head)
        self._current = exchange
        self._exchanges.append(exchange)
        if len(self._exchanges) == 1:
            exchange.start()
        else:
            # A pipelined request waits for the one before it; reading stops
            # until then, so at most one read's worth of requests is held.
            self.pause_reading()

    def on_body(self, data: bytes) -> None:
        if self._current is not None:
            self._current.request_body(data)

    def on_message_complete(self) -> None:
        if self._current is not None:
            exchange, self._current = self._current, None
            exchange.request_complete()

    # used by Exchange

    def write(self, data: bytes | list[bytes]) -> None:
        if self._closing:
            return
        if self._corked is not None:
            if isinstance(data, list):
                self._corked.extend(data)
            else:
                self._corked.append(data)
        elif isinstance(data, list):
            self.transport.writelines(data)
        else:
            self.transport.write(data)

    def cork(self) -> None:
        """Hold writes until uncork(), so that a response head and body leave in one system call."""
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked and not self._closing:
            self.transport.writelines(corked)

    def exchange_finished(self, exchange: Exchange) -> None:
        """Called when the response is written, and again when the request has been read."""
        if not self._exchanges or self._exchanges[0] is not exchange:
            return
        if not exchange.keep_client:
            self._exchanges.popleft()
            self.close()
            return
        if not exchange.request_done:
            # The rest of the request body is read and dropped before the next request.
            return
        self._exchanges.popleft()
        if self._exchanges:
            self.resume_reading()
            self._exchanges[0].start()
        else:
            self._arm_idle_timer()

    def start_tunnel(self, exchange: Exchange) -> None:
        self._exchanges.clear()
        self._tunnel = exchange
        self._upgrade_pending = False
        early, self._early = self._early, []
        for data in early:
            exchange.upstream.write(data)
        self.resume_reading()

    def pause_reading(self) -> None:
        if not self._paused and not self._closing:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and not self._closing:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self._closing:
            self.uncork()
            self._closing = True
            self.transport.close()

    def abort(self) -> None:
        self._closing = True
        self.transport.abort()

    # internals

    def _reject_malformed(self, error: httptools.HttpParserError) -> None:
        reason = str(error) or type(error).__name__
        answer = self.router.malformed_answer(self, reason)
        head = b"HTTP/1.1 %d %s\r\n" % (answer.status, answer.reason)
        headers = [
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Content-Length", b"%d" % len(answer.body)),
            (b"Connection", b"close"),
        ]
        # The request framing is unknown after a parse error, so the
        # connection cannot carry another request (RFC 9112, section 11.2).
        if not self._exchanges:
            self.write([head_bytes(head, headers), answer.body])
        self._exchanges.clear()
        self.close()

    def _hand_off(self) -> None:
        buffered = b"".join(self._handoff_buffer)
        self._handoff_buffer = None
        self._cancel_idle_timer()
        self._closing = True
        self.connections.discard(self)
        self._handoff(self.transport, buffered)

    def _arm_idle_timer(self) -> None:
        # The timer stays armed while requests come and go, and re-arms itself
        # when it finds the connection busy or recently used.
        if self._idle_timer is None:
            timeout = self.router.settings.client_idle_timeout
            self._idle_timer = self.loop.call_at(self.last_read + timeout, self._idle_check)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self._tunnel is not None or self._closing:
            return
        timeout = self.router.settings.client_idle_timeout
        if self._exchanges:
            self._idle_timer = self.loop.call_at(self.loop.time() + timeout, self._idle_check)
        elif self.loop.time() - self.last_read >= timeout:
            self.close()
        else:
            self._idle_timer = self.loop.call_at(self.last_read + timeout, self._idle_check)


class ProxyService:
    """The proxy's listeners, the upstream pool they share, and every open client connection."""

    def __init__(self, router: Router, pool: UpstreamPool):
        self.router = router
        self.pool = pool
        self.connections: set[ClientConnection] = set()
        self.watchdog = Watchdog()
        self._servers: list[asyncio.Server] = []

    @staticmethod
    def tune_garbage_collector() -> None:
        """Make the cyclic garbage collector run rarely, and never over the objects of start-up.

        A request allocates a few dozen objects and frees them by reference
        counting, so the default threshold (700) runs a collection every few
        requests. Each pass delays the requests waiting behind it, and so does
        the occasional full one over every module loaded at start-up.
        """
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 20, 20)

    async def listen(
        self, sock: socket.socket, *, from_peers: bool = False,
        handoff: Callable[[asyncio.Transport, bytes], None] | None = None,
    ) -> None:
        """Serve the listening socket ``sock``; ``from_peers`` for the Nebula side."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: ClientConnection(self.router, self.pool, self.connections, self.watchdog, from_peers=from_peers, handoff=handoff),
            sock=sock,
        )
        self._servers.append(server)

    def close(self) -> None:
        """Stop listening, close every client connection and the idle upstream ones."""
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.abort()
        self.watchdog.close()
        self.pool.close()
