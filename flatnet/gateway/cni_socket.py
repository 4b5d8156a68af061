"""The gateway's side of the plugin's fast path: CNI commands over a Unix socket.

The plugin's launcher (flatnet.cni.launcher, which also describes the wire
protocol) sends the CNI environment and stdin. The gateway runs them through
flatnet.cni.dispatch.execute, the same function the plugin runs in-process,
with pyroute2 already loaded, and sends back stdout and the exit code. The
change a command announces goes to the outbox, which the gateway drains at once.

Each request runs in a thread of its own. When the plugin runs in another
network namespace than the gateway, that thread enters the plugin's namespace
first, so the host side of the work lands where the in-process path would put
it. The thread ends with the request, so a namespace switch never outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flatnet import i18n
from flatnet.cni import launcher
from flatnet.cni.handoff import Delivery, to_outbox
from flatnet.cni.spec import INVALID_NETWORK_CONFIG, CniError
from flatnet.errors import FlatnetError
from flatnet.i18n import Message
from flatnet.events.log import LogError
from flatnet.events.record import CONTAINER_ADDED, Change
from flatnet.gateway.state import Gateway
from flatnet.logs import cni as logger

HEADER_BYTES = 64
MAX_ENVIRONMENT_BYTES = 64 * 1024
MAX_STDIN_BYTES = 4 * 1024 * 1024
# A plugin sends its request at once and commits right after TAKEN.
REQUEST_TIMEOUT_SECONDS = 5.0
# Each request runs in a thread of its own; past this many, requests wait for a slot.
MAX_CONCURRENT_REQUESTS = 16
STOP_TIMEOUT_SECONDS = 10.0
_PEER_CREDENTIALS = struct.Struct("3i")

i18n.define({
    "cni.gateway_host_mismatch": (
        "invalid network config: hostId {config_host} is not host {host_id} of the gateway on this socket",
        "ネットワーク設定が不正です: hostId {config_host} は、このソケットのゲートウェイのホスト {host_id} ではありません",
    ),
    "cni.gateway_host_hint": (
        "set hostId to this host's id, or point socket at the gateway of that host",
        "hostId をこのホストの ID にするか、socket をそのホストのゲートウェイに向けてください",
    ),
})


# Label values stay few: anything else a client sends is not counted.
_COUNTED_COMMANDS = frozenset({"ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS"})

class GatewayAnnouncer:
    """Announces a command's changes from its thread: into the outbox, which the gateway drains at once.

    The outbox file is durable before the plugin gets its result, as an append
    to the journal would be. But the command does not wait for the event loop
    and the journal's commit, because on a busy host each of those hand-offs
    between threads costs a scheduling delay.
    """

    def __init__(self, gateway: Gateway, nudge: Callable[[], None]):
        self.gateway = gateway
        self.nudge = nudge

    def announce(self, change: Change) -> Delivery:
        host_id = self.gateway.settings.host_id
        if change.type == CONTAINER_ADDED and change.data.get("hostId") != host_id:
            raise CniError(
                INVALID_NETWORK_CONFIG,
                Message("cni.gateway_host_mismatch", config_host=change.data.get("hostId"), host_id=host_id),
                Message("cni.gateway_host_hint"),
            )
        delivery = to_outbox(change, self.gateway.settings.data_dir)
        self.nudge()
        return dataclasses.replace(delivery, target="gateway")


def _bindable(path: Path, directory_fd: int) -> str:
    """Return an address for ``path`` that fits a Unix socket address, via the open directory if needed."""
    if len(os.fsencode(path)) <= launcher.MAX_SOCKET_PATH:
        return str(path)
    return f"/proc/self/fd/{directory_fd}/{path.name}"


class CniSocket:
    """The listening socket, its requests in flight, and their threads."""

    def __init__(self, path: Path, gateway: Gateway):
        self.path = path
        self.gateway = gateway
        self._server: asyncio.AbstractServer | None = None
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._requests: set[asyncio.Task] = set()
        self._inode: tuple[int, int] | None = None
        self._preload: asyncio.Task | None = None
        self._drain: asyncio.Task | None = None
        self._drain_again = False

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        directory_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            address = _bindable(self.path, directory_fd)
            self._remove_stale(address)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(address)
                os.chmod(address, 0o600)
                sock.listen(128)
                sock.setblocking(False)
            except OSError as error:
                sock.close()
                raise FlatnetError(f"failed to listen on the CNI socket {self.path}: {error.strerror}") from None
        finally:
            os.close(directory_fd)
        info = self.path.stat()
        self._inode = (info.st_dev, info.st_ino)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock)
        # pyroute2 takes about 0.2 s to import; the first request should not wait for it.
        self._preload = asyncio.create_task(asyncio.to_thread(importlib.import_module, "flatnet.cni.commands"))
        logger.info("serving the CNI fast path on %s", self.path)

    def _remove_stale(self, address: str) -> None:
        try:
            mode = os.lstat(address).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise FlatnetError(f"the CNI socket path {self.path} exists and is not a socket; move it away or set cni_socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(address)
        except OSError:
            # A gateway that was killed left it behind, and no process listens on it.
            os.unlink(address)
            return
        finally:
            probe.close()
        raise FlatnetError(f"another gateway already serves the CNI socket {self.path}; stop it first")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._requests:
            logger.info("waiting for %d CNI requests to finish", len(self._requests))
            await asyncio.wait(set(self._requests), timeout=STOP_TIMEOUT_SECONDS)
        if self._preload is not None:
            with contextlib.suppress(Exception):
                await self._preload
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            info = self.path.stat()
            if (info.st_dev, info.st_ino) == self._inode:
                self.path.unlink()
        logger.info("stopped serving the CNI fast path on %s", self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._requests.add(task)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError) as error:
            logger.debug("CNI connection ended early: %s", error or type(error).__name__)
        finally:
            self._requests.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pid, uid, _ = _PEER_CREDENTIALS.unpack(
            writer.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER_CREDENTIALS.size)
        )
        request = await asyncio.wait_for(self._read_request(reader), REQUEST_TIMEOUT_SECONDS)
        if request is None or uid not in (0, os.getuid()):
            logger.warning("refused a CNI request from pid %d (uid %d): %s", pid, uid,
                           "malformed request" if request is None else "only root may use this socket")
            writer.write(launcher.REFUSED)
            return
        environ, stdin = request

        writer.write(launcher.TAKEN)
        await writer.drain()
        commit = await asyncio.wait_for(reader.read(1), REQUEST_TIMEOUT_SECONDS)
        if commit != launcher.COMMIT:
            logger.debug("CNI plugin pid %d gave up before its %s started", pid, environ.get("CNI_COMMAND"))
            return

        started = time.perf_counter()
        async with self._slots:
            stdout, code = await self._run_in_thread(pid, environ, stdin)
        seconds = time.perf_counter() - started
        logger.debug("fast path %s %s/%s for pid %d: exit %d in %.1f ms", environ.get("CNI_COMMAND"),
                     environ.get("CNI_CONTAINERID"), environ.get("CNI_IFNAME"), pid, code, seconds * 1000)
        command = environ.get("CNI_COMMAND", "")
        if command in _COUNTED_COMMANDS:
            self.gateway.metrics.observe_plugin_command(command, code == 0, seconds)
        writer.write(b"%d\n" % code + stdout)
        await writer.drain()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes] | None:
        header = await reader.readline()
        fields = header.split()
        if (
            len(header) > HEADER_BYTES or len(fields) != 4 or b" ".join(fields[:2]) != launcher.PROTOCOL_MAGIC
            or not fields[2].isdigit() or not fields[3].isdigit()
        ):
            return None
        environment_size, stdin_size = int(fields[2]), int(fields[3])
        if environment_size > MAX_ENVIRONMENT_BYTES or stdin_size > MAX_STDIN_BYTES:
            return None
        block = await reader.readexactly(environment_size)
        stdin = await reader.readexactly(stdin_size)
        environ = {}
        for entry in block.split(b"\0") if block else ():
            name, separator, value = entry.partition(b"=")
            if not separator:
                return None
            environ[name.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        return environ, stdin

    def _request_drain(self) -> None:
        """Drain the outbox soon; a request during a drain makes it run once more."""
        if self._drain is not None and not self._drain.done():
            self._drain_again = True
            return
        self._drain = asyncio.create_task(self._drain_outbox(), name="cni-outbox-drain")

    async def _drain_outbox(self) -> None:
        while True:
            self._drain_again = False
            try:
                await self.gateway.drain_outbox()
            except (OSError, LogError) as error:
                # The periodic drain tries again; the changes stay in the outbox.
                logger.error("draining the outbox after a CNI command failed: %s", error)
            if not self._drain_again:
                return

    async def _run_in_thread(self, pid: int, environ: dict[str, str], stdin: bytes) -> tuple[bytes, int]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[bytes, int]] = loop.create_future()
        announcer = GatewayAnnouncer(self.gateway, lambda: loop.call_soon_threadsafe(self._request_drain))

        def work() -> None:
            try:
                outcome = _execute_as(pid, environ, stdin, announcer)
            except BaseException as error:  # noqa: BLE001 - handed to the waiting coroutine
                loop.call_soon_threadsafe(_settle, done, None, error)
            else:
                loop.call_soon_threadsafe(_settle, done, outcome, None)

        threading.Thread(target=work, name=f"cni-{pid}", daemon=True).start()
        return await done


def _settle(future: asyncio.Future, outcome: tuple[bytes, int] | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(outcome)


def _execute_as(pid: int, environ: dict[str, str], stdin: bytes, announcer: GatewayAnnouncer) -> tuple[bytes, int]:
    """Run the command in this thread, inside the network namespace of process ``pid``."""
    from flatnet.cni import dispatch, netlink, spec

    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        # The plugin is gone already, or lives in a PID namespace we cannot see.
        target = None
    if target is not None:
        try:
            own = os.stat("/proc/thread-self/ns/net")
            theirs = os.fstat(target)
            if (own.st_dev, own.st_ino) != (theirs.st_dev, theirs.st_ino):
                netlink.enter_netns(target, Message("cni.netlink.of_process", pid=pid))
        except netlink.NetlinkFailure as error:
            failure = CniError(spec.NETLINK_FAILURE, error.message)
            return spec.encode(failure.as_dict(spec.error_version(stdin), japanese=i18n.locale_is_japanese(environ))), 1
        finally:
            os.close(target)
    return dispatch.execute(environ, stdin, announcer)


async def start(path: Path, gateway: Gateway) -> CniSocket:
    server = CniSocket(path, gateway)
    await server.start()
    return server
