"""A container's WebSocket and upload server for the lab's proxy tests.

The lab's image has only busybox, whose httpd speaks neither WebSocket nor
chunked uploads. The test runs this server with the host's Python inside the
network namespace of a real container (nsenter --net=<its sandbox>), bound to
the container's address, so requests reach it exactly as they would reach a
process of that container: over the bridge, its veth, and Nebula.

Usage: backend.py ADDRESS PORT NAME
"""

import hashlib
import sys

from aiohttp import web


def build(name: str) -> web.Application:
    async def ready(request: web.Request) -> web.Response:
        return web.Response(text=f"{name}\n")

    async def echo(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            await socket.send_str(f"{name}: {message.data}")
        return socket

    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        length = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            length += len(chunk)
        return web.json_response({
            "length": length, "sha256": digest.hexdigest(), "transferEncoding": request.headers.get("Transfer-Encoding"),
        })

    app = web.Application()
    app.router.add_get("/", ready)
    app.router.add_get("/ws", echo)
    app.router.add_post("/upload", upload)
    return app


if __name__ == "__main__":
    address, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    web.run_app(build(name), host=address, port=port, access_log=None, print=None)
