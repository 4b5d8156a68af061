"""aiohttp backends and clients inside a test's network namespace, for the proxy's tests.

A NamespaceLoop is an event loop on a thread that has entered the namespace
(setns moves only that thread), so every socket it opens, listening or
connecting, belongs to the namespace: backends bind container addresses such
as 10.100.1.10 there, and clients reach the gateways on 127.0.<host>.1.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import subprocess
import threading

from aiohttp import web

from flatnet.lab.namespaces import call_in

PAYLOAD = b"flatnet proxy test payload\n" * 4096
GZIPPED = gzip.compress(PAYLOAD, mtime=0)
CHUNKS = [b"first chunk\n", b"second chunk\n" * 100, b"third\n"]


class NamespaceLoop:
    """An asyncio loop running on a thread inside ``netns``."""

    def __init__(self, netns: str):
        self.netns = netns
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=call_in, args=(netns, self._run), name=f"loop-{netns}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine, timeout: float = 30):
        """Run ``coroutine`` on the loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


class Backend:
    """A stand-in container: an aiohttp server on ``ip:port`` with routes the tests read back."""

    def __init__(self, name: str):
        self.name = name
        self.hold_started = asyncio.Event()
        self.hold_cancelled = asyncio.Event()
        self.runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/headers", self.headers)
        app.router.add_post("/upload", self.upload)
        app.router.add_get("/gzip", self.gzipped)
        app.router.add_get("/chunked", self.chunked)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/hold", self.hold)
        app.router.add_get("/status/{code}", self.status)
        return app

    async def start(self, ip: str, port: int) -> None:
        # handler_cancellation: a handler is cancelled when its client goes away,
        # which is how /hold sees the proxy cancel an upstream request.
        self.runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, ip, port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text=f"{self.name}\n")

    async def headers(self, request: web.Request) -> web.Response:
        received: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            received.setdefault(name.lower(), []).append(value)
        return web.json_response(received)

    async def upload(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        length = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            length += len(chunk)
        return web.json_response({
            "length": length,
            "sha256": digest.hexdigest(),
            "transferEncoding": request.headers.get("Transfer-Encoding"),
            "contentLength": request.headers.get("Content-Length"),
        })

    async def gzipped(self, request: web.Request) -> web.Response:
        return web.Response(body=GZIPPED, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for chunk in CHUNKS:
            await response.write(chunk)
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            await socket.send_str(f"{self.name}: {message.data}")
        return socket

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("seconds", "1")))
        return web.Response(text="slow\n")

    async def hold(self, request: web.Request) -> web.Response:
        self.hold_started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.hold_cancelled.set()
            raise
        return web.Response(text="never\n")

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))


def add_address(netns: str, ip: str) -> None:
    subprocess.run(["ip", "-n", netns, "addr", "add", f"{ip}/32", "dev", "lo"], check=True)


async def raw_exchange(host: str, port: int, data: bytes, *, read_timeout: float = 5) -> bytes:
    """Send ``data`` on a new connection and return everything read until the server closes it."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        received = bytearray()
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), read_timeout)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
        return bytes(received)
    finally:
        writer.close()
