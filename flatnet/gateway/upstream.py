"""Upstream connections (to containers and peer gateways) and the pool that keeps them alive.

Each connection carries one exchange at a time and parses the response with
llhttp through httptools. It goes back to the pool only after a complete
exchange that both sides allow to be kept alive. An idle connection that
receives data or closes is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import socket
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    from flatnet.gateway.exchange import Exchange

UPSTREAM_IDLE_SECONDS = 30.0
UPSTREAM_IDLE_PER_TARGET = 128


class UpstreamFailure(enum.Enum):
    """The reason no response came from upstream, which the router maps to 502 or 504."""

    CONNECT = "connect"
    CONNECT_TIMEOUT = "connect-timeout"
    TIMEOUT = "timeout"
    CLOSED = "closed"
    INVALID = "invalid"

class UpstreamPool:
    """Idle keep-alive connections per upstream address, newest reused first."""

    def __init__(self, *, connect_timeout: float, idle_seconds: float = UPSTREAM_IDLE_SECONDS):
        self.connect_timeout = connect_timeout
        self.idle_seconds = idle_seconds
        self._idle: dict[tuple[str, int], collections.deque[UpstreamConnection]] = {}
        self._sweeper: asyncio.Handle | None = None
        self._closed = False
        # In CPython 3.11 asyncio.get_running_loop() makes a getpid() system call, and put() runs once per request.
        self._loop: asyncio.AbstractEventLoop | None = None

    def take(self, address: tuple[str, int]) -> UpstreamConnection | None:
        """Return an idle connection to ``address``, or None when there is none."""
        idle = self._idle.get(address)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    async def connect(self, address: tuple[str, int]) -> UpstreamConnection:
        """Open a new connection; raise UpstreamError with CONNECT or CONNECT_TIMEOUT."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(lambda: UpstreamConnection(self, address), *address)
        except TimeoutError:
            raise UpstreamError(UpstreamFailure.CONNECT_TIMEOUT, f"no connection within {self.connect_timeout} s") from None
        except OSError as error:
            raise UpstreamError(UpstreamFailure.CONNECT, error.strerror or str(error)) from None
        return connection

    def put(self, connection: UpstreamConnection) -> None:
        """Keep ``connection`` for reuse, or close it when the pool is full or closed."""
        idle = self._idle.get(connection.address)
        if idle is None:
            idle = self._idle[connection.address] = collections.deque()
        if self._closed or len(idle) >= UPSTREAM_IDLE_PER_TARGET:
            connection.close()
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        idle.append(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.idle_seconds, self._sweep)

    def discard(self, connection: UpstreamConnection) -> None:
        idle = self._idle.get(connection.address)
        if idle and connection in idle:
            idle.remove(connection)

    def _sweep(self) -> None:
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        remaining = 0
        for idle in self._idle.values():
            while idle and now - idle[0].idle_since >= self.idle_seconds:
                idle.popleft().close()
            remaining += len(idle)
        if remaining:
            self._sweeper = asyncio.get_running_loop().call_later(self.idle_seconds / 2, self._sweep)

    def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for idle in self._idle.values():
            while idle:
                idle.pop().close()


class UpstreamError(Exception):
    def __init__(self, failure: UpstreamFailure, detail: str):
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


class UpstreamConnection(asyncio.Protocol):
    """One connection to a container or a peer gateway, carrying one exchange at a time."""

    def __init__(self, pool: UpstreamPool, address: tuple[str, int]):
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self.idle_since = 0.0
        self.last_read = 0.0
        self.tunnel = False
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._no_body = False
        self._interim = False
        self.received_any = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # An idle pooled connection must stay silent; anything else ends it.
            self.pool.discard(self)
            self.close()
            return
        self.received_any = True
        self.last_read = exchange.loop.time()
        client = exchange.client
        if self.tunnel:
            client.write(data)
            return
        client.cork()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if exchange.upgrading:
                exchange.upgrade_accepted(data[upgrade.args[0]:])
            else:
                exchange.upstream_failed(UpstreamFailure.INVALID, "101 Switching Protocols to a request without Upgrade")
                self.close()
        except httptools.HttpParserError as error:
            exchange.upstream_failed(UpstreamFailure.INVALID, f"invalid response: {error}")
            self.close()
        finally:
            client.uncork()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self.exchange
        self.exchange = None
        if exchange is None:
            self.pool.discard(self)
            return
        if self.tunnel:
            exchange.client.close()
            return
        exchange.upstream_closed(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.pause_reading()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.resume_reading()

    # llhttp callbacks

    def on_message_begin(self) -> None:
        self._headers = []
        self._interim = False

    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        exchange = self.exchange
        if 100 <= status < 200 and status != 101:
            self._interim = True
            exchange.interim_response(status, self._reason, self._headers)
            return
        exchange.response_head(status, self._reason, self._headers, self._parser.should_keep_alive())
        if self._no_body and status != 101:
            # httptools has no way to mark a HEAD response as bodiless, so llhttp
            # would wait for Content-Length bytes. A fresh parser reads the next response.
            keep_alive = self._parser.should_keep_alive()
            self._parser = httptools.HttpResponseParser(self)
            exchange.response_complete(self, keep_alive=keep_alive)

    def on_body(self, data: bytes) -> None:
        self.exchange.response_body(data)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        exchange = self.exchange
        if exchange is not None and not exchange.upgrading:
            exchange.response_complete(self, keep_alive=self._parser.should_keep_alive())

    # used by Exchange

    def send(self, exchange: Exchange, data: list[bytes], *, no_body: bool) -> None:
        self.exchange = exchange
        self._no_body = no_body
        self.received_any = False
        self.last_read = exchange.loop.time()
        self.transport.writelines(data)

    def write(self, data: bytes | list[bytes]) -> None:
        if self.transport is None or self.closed:
            return
        if isinstance(data, list):
            self.transport.writelines(data)
        else:
            self.transport.write(data)

    def finished(self, *, reuse: bool) -> None:
        """End the exchange on this connection, putting it back in the pool if ``reuse``."""
        self.exchange = None
        if reuse and not self.closed:
            self.pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
