"""The gateway daemon: start-up, the two listeners, background tasks, shutdown.

Start-up order matters: the log is opened and recovered, the outbox drained,
and only then do the listeners accept requests, so a change that waited in
the outbox is always appended before any newer one. Every resource opened is
closed again in reverse order, also when start-up fails halfway.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from flatnet import logs
from flatnet.errors import FlatnetError
from flatnet.events.log import LogError
from flatnet.gateway import api, proxy
from flatnet.gateway.follower import Followers
from flatnet.gateway.journal import Journal, next_identity
from flatnet.gateway.settings import Settings, load_settings, split_host_port
from flatnet.gateway.state import GATEWAY, Gateway
from flatnet.logs import gateway as logger

# Linux's IP_FREEBIND; the socket module names it only from Python 3.12. It
# lets the API bind the Nebula address before Nebula has created its tun.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
OUTBOX_DRAIN_SECONDS = 2.0


def bind_socket(address: str) -> socket.socket:
    """Bind a listening TCP socket to ``host:port``, even before the address exists."""
    host, port = split_host_port(address)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise FlatnetError(f"failed to listen on {address}: {error.strerror}; is another gateway running there?") from None
    return sock


@web.middleware
async def _peer_hop_middleware(request: web.Request, handler):
    # A request forwarded by a peer gateway is for a container of this host,
    # whatever its path: it may well be a container's own /api.
    if proxy.HOP_HEADER in request.headers:
        return await proxy.handle(request)
    return await handler(request)


def build_api_app(gateway: Gateway, session: aiohttp.ClientSession, decisions: proxy.DecisionLog) -> web.Application:
    app = web.Application(middlewares=[_peer_hop_middleware], client_max_size=1024 * 1024)
    app[GATEWAY] = gateway
    app[proxy.CLIENT] = session
    app[proxy.DECISIONS] = decisions
    app[proxy.FROM_PEERS] = True
    api.add_routes(app)
    return app


def build_proxy_app(gateway: Gateway, session: aiohttp.ClientSession, decisions: proxy.DecisionLog) -> web.Application:
    app = web.Application(client_max_size=0)
    app[GATEWAY] = gateway
    app[proxy.CLIENT] = session
    app[proxy.DECISIONS] = decisions
    app[proxy.FROM_PEERS] = False
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app


async def _drain_outbox_periodically(gateway: Gateway) -> None:
    # The plugin also falls back to the outbox while this gateway runs but
    # cannot be reached (Nebula down, so the API address is missing).
    while True:
        await asyncio.sleep(OUTBOX_DRAIN_SECONDS)
        try:
            await gateway.drain_outbox()
        except (OSError, LogError) as error:
            logger.error("outbox drain failed: %s; retrying in %.0f s", error, OUTBOX_DRAIN_SECONDS)


def lock_data_dir(data_dir: Path) -> int:
    """Take the data directory for this process alone, before anything in it is read or written.

    Two gateways on one data directory would each append to the same log and
    corrupt it; the second one to start stops here and names the first.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / "gateway.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise FlatnetError(
            f"cannot use data_dir {data_dir}: {error.strerror}; set data_dir to a directory this gateway can write"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise FlatnetError(
            f"data_dir {data_dir} is in use by another gateway (pid {holder}); "
            f"stop that gateway first, or give this one a data_dir of its own"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


async def _reload_peers(gateway: Gateway, followers: Followers, config_path: Path) -> None:
    """Pick up peers added to or removed from the config file, on SIGHUP.

    Only the peers change without a restart; any other changed setting is
    reported and left as it was. A config that fails to load changes nothing.
    """
    try:
        new = load_settings(config_path)
    except FlatnetError as error:
        logger.error("config reload failed, keeping the running config: %s", error)
        return
    old = gateway.settings
    ignored = sorted(
        name for name in type(old).model_fields if name != "peers" and getattr(old, name) != getattr(new, name)
    )
    if ignored:
        logger.warning("config reload: %s changed but take effect only after a restart", ", ".join(ignored))

    gateway.settings = old.model_copy(update={"peers": new.peers})
    added, removed = await followers.match(new.peers)
    now = time.monotonic()
    for host_id in added:
        gateway.liveness.heard(host_id, now)
    for host_id in removed:
        # A peer that left is not routed to any more: it expires at once.
        gateway.peers.pop(host_id, None)
        gateway.liveness.last_heard.pop(host_id, None)
    logger.info(
        "config reloaded: peers now %s (added %s, removed %s)",
        sorted(peer.host_id for peer in new.peers), added or "none", removed or "none",
    )


async def check_host_id_free(settings: Settings, node: str, session: aiohttp.ClientSession) -> None:
    """Refuse to start when a peer follows another live node under this gateway's host id.

    Two gateways with one host id would each number their own events from 1,
    and every peer would mix their logs. A node restarting keeps its id in
    node.json, and a stopped one has no stream open, so neither is refused.
    """
    async def ask(peer) -> tuple[object, dict | None]:
        try:
            async with session.get(f"{peer.base_url}/api/health", timeout=aiohttp.ClientTimeout(total=2)) as response:
                return peer, await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return peer, None

    for peer, health in await asyncio.gather(*(ask(peer) for peer in settings.peers)):
        seen = ((health or {}).get("peers") or {}).get(str(settings.host_id))
        if isinstance(seen, dict) and seen.get("state") == "connected" and seen.get("node") not in ("", None, node):
            raise FlatnetError(
                f"host id {settings.host_id} is held by node {seen['node']}, which peer {peer.host_id} "
                f"({peer.base_url}) follows right now; another gateway runs with host_id {settings.host_id}. "
                f"Stop it, or give this host an unused host_id"
            )


async def serve(settings: Settings, stop: asyncio.Event, config_path: Path | None = None) -> None:
    """Run the gateway until ``stop`` is set; with ``config_path``, SIGHUP reloads its peers."""
    async with contextlib.AsyncExitStack() as stack:
        lock = lock_data_dir(settings.data_dir)
        stack.callback(os.close, lock)
        if settings.access_log is not None:
            try:
                logs.add_access_log_file(str(settings.access_log))
            except OSError as error:
                raise FlatnetError(
                    f"cannot open access_log {settings.access_log}: {error.strerror}; "
                    f"set access_log to a writable file path or remove it"
                ) from None

        try:
            identity = next_identity(settings.data_dir)
            journal = Journal(settings.data_dir, settings.host_id, identity)
        except LogError as error:
            raise FlatnetError(str(error)) from None
        stack.callback(journal.close)
        gateway = Gateway(settings, journal)
        drained = journal.drain_outbox()
        logger.info(
            "gateway of host %d starting: node %s epoch %d, vector %s, %d outbox changes appended",
            settings.host_id, identity.node, identity.epoch, journal.log.vector(), drained,
        )

        decisions = proxy.DecisionLog(settings.data_dir)
        stack.callback(decisions.close)
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=64, keepalive_timeout=30)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector, auto_decompress=False))
        stream_session = await stack.enter_async_context(aiohttp.ClientSession())
        await check_host_id_free(settings, identity.node, stream_session)

        api_socket = bind_socket(settings.api_listen)
        stack.callback(api_socket.close)
        proxy_socket = bind_socket(settings.proxy_listen)
        stack.callback(proxy_socket.close)

        runners = []
        for app, sock in (
            (build_api_app(gateway, session, decisions), api_socket),
            (build_proxy_app(gateway, session, decisions), proxy_socket),
        ):
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.SockSite(runner, sock).start()
            runners.append(runner)
        logger.info("serving the API on %s and the proxy on %s", settings.api_listen, settings.proxy_listen)

        tasks = [asyncio.create_task(_drain_outbox_periodically(gateway), name="outbox-drain")]
        followers = Followers(gateway, stream_session)
        for peer in settings.peers:
            followers.start(peer)
        if config_path is not None:
            reload_lock = asyncio.Lock()

            async def reload_peers() -> None:
                async with reload_lock:
                    await _reload_peers(gateway, followers, config_path)

            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: tasks.append(asyncio.create_task(reload_peers(), name="reload"))
            )
        try:
            await stop.wait()
        finally:
            if config_path is not None:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await followers.stop_all()
            streams = list(gateway.stream_tasks)
            for task in tasks + streams:
                task.cancel()
            await asyncio.gather(*tasks, *streams, return_exceptions=True)
            logger.info("gateway of host %d stopping", settings.host_id)


def run_gateway(settings: Settings, config_path: Path | None = None) -> int:
    """Run the gateway in the foreground until SIGTERM or SIGINT; SIGHUP reloads the peers."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop, config_path)

    asyncio.run(main())
    return 0
