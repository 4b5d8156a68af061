"""Proxy worker processes: more processes serving the LAN proxy on the same port.

The gateway process owns the log, the API and the followers. With
``proxy_workers = N`` it also starts N-1 workers; each binds the LAN port with
SO_REUSEPORT, so the kernel spreads new connections over all N processes.
A worker keeps its own copy of the view by following every origin's event
stream on the gateway's API, and reads the peers' liveness from
``/api/health`` every HEALTH_POLL_SECONDS. Its decision records go to a file
of its own, ``decisions-w<index>.jsonl``. A worker exits when the gateway
closes its standard input, which also happens when the gateway dies.

NOTE: a worker keeps the settings it started with, so peers added or removed
by a config reload (SIGHUP) reach the workers only after a gateway restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import time

import aiohttp
import orjson
import uvloop

from flatnet import logs
from flatnet.events import record
from flatnet.gateway.decisions import DecisionLog, DecisionRecord
from flatnet.gateway.follower import StreamRejected, check_event
from flatnet.gateway.forward import ProxyService
from flatnet.gateway.proxy import PULL_SECONDS, Router
from flatnet.gateway.settings import Settings
from flatnet.gateway.upstream import UpstreamPool
from flatnet.logs import proxy as logger
from flatnet.registry import Container, View

SETTINGS_VARIABLE = "FLATNET_WORKER_SETTINGS"
HEALTH_POLL_SECONDS = 0.5
STOP_SECONDS = 5.0
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0


def start_workers(settings: Settings) -> list[subprocess.Popen]:
    """Start the ``proxy_workers - 1`` worker processes of this gateway."""
    workers = []
    level = logging.getLevelName(logging.getLogger("flatnet").getEffectiveLevel())
    for index in range(1, settings.proxy_workers):
        env = dict(os.environ, **{SETTINGS_VARIABLE: settings.model_dump_json()})
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "flatnet.gateway.worker", str(index), level],
            env=env, stdin=subprocess.PIPE,
        ))
        logger.info("proxy worker %d started as pid %d", index, workers[-1].pid)
    return workers


def stop_workers(workers: list[subprocess.Popen]) -> None:
    """Stop the workers by their PIDs: close their standard input, then SIGTERM, then SIGKILL."""
    for process in workers:
        process.stdin.close()
        process.send_signal(signal.SIGTERM)
    for process in workers:
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("proxy worker pid %d did not stop in %.0f s; killing it", process.pid, STOP_SECONDS)
            process.kill()
            process.wait()


class Mirror:
    """A worker's copy of the gateway's view, and the RoutingState the worker routes with."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession):
        self.settings = settings
        self.session = session
        self.view = View()
        self.started = time.monotonic()
        self.last_heard: dict[int, float] = {}
        self.expired: frozenset[int] = frozenset()
        self._api = f"http://{settings.api_listen}"
        # Per origin, the seq up to which the gateway's stream has been read.
        self._positions: dict[int, int] = {}
        self._tasks: dict[int, asyncio.Task] = {}
        self._vector: dict[int, int] | None = None

    def start(self) -> list[asyncio.Task]:
        for origin in [self.settings.host_id, *(peer.host_id for peer in self.settings.peers)]:
            self._follow(origin)
        return [asyncio.create_task(self._poll_health(), name="worker-health")]

    def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()

    # RoutingState

    def lookup(self, name: str) -> tuple[Container | None, frozenset[int]]:
        matches = self.view.named(name, expired_origins=self.expired)
        return (matches[0] if matches else None), self.expired

    def lookup_expired(self, name: str) -> Container | None:
        matches = self.view.named(name)
        return matches[0] if matches else None

    def vector(self) -> dict[int, int]:
        if self._vector is None:
            self._vector = dict(self.view.vector)
        return self._vector

    def silent_seconds(self, origin: int) -> float:
        if origin == self.settings.host_id:
            return 0.0
        return time.monotonic() - self.last_heard.get(origin, self.started)

    def observe(self, batch: list[DecisionRecord]) -> None:
        # NOTE: /metrics is served by the gateway process and counts only the
        # requests it proxied itself; a worker's requests are in its decision log.
        pass

    def mark_stale(self, name: str, container: Container) -> None:
        logger.info("entry %r (container %s on host %d) is stale: its gateway does not hold it; pulling its log", name, container.id, container.host_id)

    async def pull(self, origin: int) -> None:
        """Read ``origin``'s events from its own gateway, up to its head, into this worker's view."""
        peer = self.settings.peer(origin)
        if peer is None:
            return
        params = {"origin": str(origin), "after": str(self.view.vector.get(origin, 0))}
        try:
            async with self.session.get(
                f"{peer.base_url}/api/events", params=params, timeout=aiohttp.ClientTimeout(total=PULL_SECONDS)
            ) as response:
                if response.status != 200:
                    raise StreamRejected(f"peer {origin} returned HTTP {response.status}")
                async for line in response.content:
                    if line.startswith(b'{"heartbeat"'):
                        break
                    if line.strip():
                        event = record.decode(line)
                        check_event(peer, event, self.view.vector.get(origin, 0))
                        self._apply(event)
        except (aiohttp.ClientError, TimeoutError, StreamRejected, record.RecordError) as error:
            logger.warning("pulling the log of peer %d failed: %s; routing with the view as it is", origin, error)

    def _apply(self, event: record.Event) -> None:
        self.view.apply(event)
        self._vector = None

    # following the gateway

    def _follow(self, origin: int) -> None:
        if origin not in self._tasks:
            self._tasks[origin] = asyncio.create_task(self._follow_origin(origin), name=f"mirror-{origin}")

    async def _follow_origin(self, origin: int) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        while True:
            params = {"origin": str(origin), "after": str(self._positions.get(origin, 0))}
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=self.settings.heartbeat * 3)
            try:
                async with self.session.get(f"{self._api}/api/events", params=params, timeout=timeout) as response:
                    if response.status != 200:
                        raise StreamRejected(f"the gateway returned HTTP {response.status}: {(await response.text())[:200]}")
                    backoff = BACKOFF_FIRST_SECONDS
                    async for line in response.content:
                        if not line.strip() or line.startswith(b'{"heartbeat"'):
                            continue
                        event = record.decode(line)
                        self._apply(event)
                        self._positions[origin] = event.seq
            except (aiohttp.ClientError, TimeoutError, ConnectionError, StreamRejected, record.RecordError) as error:
                logger.debug("worker stream of origin %d from the gateway ended: %s", origin, error)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    async def _poll_health(self) -> None:
        while True:
            try:
                async with self.session.get(f"{self._api}/api/health", timeout=aiohttp.ClientTimeout(total=2)) as response:
                    health = orjson.loads(await response.read())
                now = time.monotonic()
                expired = set()
                for host_id, peer in health.get("peers", {}).items():
                    ago = peer.get("lastHeardSecondsAgo")
                    if ago is not None:
                        self.last_heard[int(host_id)] = now - ago
                    if peer.get("expired"):
                        expired.add(int(host_id))
                self.expired = frozenset(expired)
                for origin in health.get("vector", {}):
                    self._follow(int(origin))
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                logger.debug("worker health poll of the gateway failed: %s", error)
            await asyncio.sleep(HEALTH_POLL_SECONDS)


async def run_worker(settings: Settings, index: int) -> None:
    from flatnet.gateway.app import bind_socket

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # The gateway has the other end of standard input, so end of file means it has exited.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stdin_closed = asyncio.create_task(reader.read())

    decisions = DecisionLog(
        settings.data_dir, file_name=f"decisions-w{index}.jsonl",
        max_bytes=settings.decision_log_bytes, keep_files=settings.decision_log_files, access_log=settings.access_log,
    )
    sock = bind_socket(settings.proxy_listen, reuse_port=True)
    async with aiohttp.ClientSession() as session:
        mirror = Mirror(settings, session)
        tasks = mirror.start()
        service = ProxyService(Router(mirror, decisions), UpstreamPool(connect_timeout=settings.upstream_connect_timeout))
        await service.listen(sock)
        service.tune_garbage_collector()
        logger.info("proxy worker %d of host %d serving %s", index, settings.host_id, settings.proxy_listen)
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([stopped, stdin_closed], return_when=asyncio.FIRST_COMPLETED)
        service.close()
        mirror.stop()
        for task in [*tasks, stopped, stdin_closed]:
            task.cancel()
    decisions.close()
    sock.close()
    logger.info("proxy worker %d of host %d stopped", index, settings.host_id)


def main() -> None:
    index, level = int(sys.argv[1]), sys.argv[2]
    logs.configure_logging(level)
    settings = Settings.model_validate_json(os.environ[SETTINGS_VARIABLE])
    uvloop.run(run_worker(settings, index))


if __name__ == "__main__":
    main()
