"""A reader that stops reading never makes a gateway buffer without bound."""

import socket
import time
import uuid

import pytest

from flatnet.events.log import OriginLog
from flatnet.events.record import CONTAINER_ADDED, Event
from flatnet.lab.namespaces import call_in
from tests.gateway.harness import GatewayProcess, wait_until

pytestmark = pytest.mark.root

EVENTS = 20_000


def _fill_log(data_dir, count: int) -> None:
    log = OriginLog(data_dir / "log" / "1", 1)
    node = str(uuid.uuid4())
    for seq in range(1, count + 1):
        log.append(Event(
            origin=1, seq=seq, ts="2026-12-04T10:00:00.000Z", node=node, epoch=1, id=str(uuid.uuid4()),
            type=CONTAINER_ADDED, v=1,
            data={"id": f"c{seq:08d}", "ip": f"10.100.1.{10 + seq % 240}", "hostname": f"filler-{seq}-" + "x" * 200,
                  "ports": [], "hostId": 1, "createdAt": "2026-12-04T10:00:00.000Z", "ifname": "eth0"},
        ))
    log.close()


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def _open_stream(netns: str, after: int, receive_buffer: int | None = None) -> socket.socket:
    def connect():
        sock = socket.socket()
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect(("127.0.1.1", 8080))
        sock.sendall(f"GET /api/events?origin=1&after={after} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode())
        return sock

    return call_in(netns, connect)


def test_stalled_reader_is_cut_and_resumes_from_log(netns, tmp_path):
    gateway = GatewayProcess(netns, tmp_path, 1, [])
    with open(gateway.config, "a") as config:
        config.write("stream_write_timeout = 2\n")
    _fill_log(gateway.data_dir, EVENTS)
    gateway.start()
    try:
        # The first cut stream sets the gateway's working size (the segment it
        # read, the thread that read it); a second one must not add to it.
        stalled = _open_stream(netns, 0, receive_buffer=4096)
        wait_until(lambda: gateway.log_text().count("read nothing for 2 s") == 1, 30, "the first stalled stream to be cut")
        stalled.close()
        rss_first = _rss_kib(gateway.process.pid)
        stalled = _open_stream(netns, 0, receive_buffer=4096)
        wait_until(lambda: gateway.log_text().count("read nothing for 2 s") == 2, 30, "the second stalled stream to be cut")
        stalled.close()
        rss_second = _rss_kib(gateway.process.pid)

        resumed = _open_stream(netns, 0)
        resumed.settimeout(20)
        received = bytearray()
        deadline = time.monotonic() + 60
        while b'{"heartbeat"' not in received[-4096:] and time.monotonic() < deadline:
            chunk = resumed.recv(1 << 16)
            if not chunk:
                break
            received += chunk
        resumed.close()
    finally:
        gateway.stop()

    assert received.count(b'"type":"container.added"') == EVENTS
    # The log is about 6 MB; a gateway that kept what it could not send would grow by about that much each time.
    assert rss_second - rss_first < 2048, f"RSS grew from {rss_first} KiB to {rss_second} KiB"
