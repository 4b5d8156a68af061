"""The proxy over real sockets: gateway processes, aiohttp backends and clients in one namespace."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.gateway.backends import CHUNKS, GZIPPED, Backend, NamespaceLoop, add_address, raw_exchange
from tests.gateway.harness import GatewayProcess, follower_ports, http, is_following, stall_streams, unstall, wait_until

pytestmark = pytest.mark.root


class World:
    """Gateways, stand-in containers and a client, all in the test's namespace."""

    def __init__(self, netns: str, workdir: Path):
        self.netns = netns
        self.workdir = workdir
        self.loop = NamespaceLoop(netns)
        self.gateways: dict[int, GatewayProcess] = {}
        self.backends: list[Backend] = []
        self._addresses: set[str] = set()

    def start(self, host_ids=(1,), *, ttl: float = 300, heartbeat: float = 1, **settings) -> dict[int, GatewayProcess]:
        for host_id in host_ids:
            peers = [other for other in host_ids if other != host_id]
            gateway = GatewayProcess(self.netns, self.workdir, host_id, peers, ttl=ttl, heartbeat=heartbeat, **settings)
            gateway.start()
            self.gateways[host_id] = gateway
        return self.gateways

    def backend(self, name: str, ip: str, port: int = 80) -> Backend:
        if ip not in self._addresses:
            add_address(self.netns, ip)
            self._addresses.add(ip)
        backend = Backend(name)
        self.loop.run(backend.start(ip, port))
        self.backends.append(backend)
        return backend

    def request(self, url: str, *, method: str = "GET", host: str | None = None, headers: dict | None = None, data=None):
        """Send one request from the namespace; return (status, headers, body bytes)."""

        async def send():
            sent = dict(headers or {})
            if host is not None:
                sent["Host"] = host
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                async with session.request(method, url, headers=sent, data=data, allow_redirects=False) as response:
                    return response.status, response.headers, await response.read()

        return self.loop.run(send())

    def close(self) -> None:
        for backend in self.backends:
            self.loop.run(backend.stop())
        for gateway in self.gateways.values():
            gateway.stop()
        self.loop.close()


@pytest.fixture
def world(netns, tmp_path):
    built = World(netns, tmp_path)
    try:
        yield built
    finally:
        built.close()


def records(gateway: GatewayProcess) -> list[dict]:
    """Every decision record of ``gateway``, from all its processes' rolling logs."""
    found = []
    for path in sorted((gateway.data_dir / "decisions").glob("decisions*.jsonl*")):
        found += [json.loads(line) for line in path.read_text().splitlines()]
    return found


def record_of(gateway: GatewayProcess, request_id: str) -> dict:
    return wait_until(
        lambda: next((r for r in records(gateway) if r["request_id"] == request_id), None), 5, f"the record of {request_id}"
    )


# Names


def test_local_container_is_proxied_directly(world):
    gateways = world.start()
    world.backend("web-a1", "10.100.1.10", 8001)
    gateways[1].add_container("web-a1", "10.100.1.10", ports=[8001])

    status, headers, body = world.request(f"{gateways[1].proxy}/", host="WEB-A1.flatnet.:8000")

    assert status == 200
    assert body == b"web-a1\n"
    record = record_of(gateways[1], headers["X-Request-Id"])
    assert record["decision"] == "local"
    assert record["name"] == "web-a1"
    assert record["target"] == "http://10.100.1.10:8001"
    wait_until(lambda: "decision=local" in gateways[1].access_log.read_text(), 5, "the access line")


def test_port_in_host_selects_registered_port(world):
    gateways = world.start()
    world.backend("first-port", "10.100.1.10", 8001)
    world.backend("second-port", "10.100.1.10", 8002)
    gateways[1].add_container("ports", "10.100.1.10", ports=[8001, 8002])

    chosen = world.request(f"{gateways[1].proxy}/", host="ports.flatnet:8002")[2]
    unregistered = world.request(f"{gateways[1].proxy}/", host="ports.flatnet:9999")[2]

    assert chosen == b"second-port\n"
    assert unregistered == b"first-port\n"


def test_domain_suffix_is_configurable(world):
    gateways = world.start(domain="lan.example")
    world.backend("web-d", "10.100.1.10", 8001)
    gateways[1].add_container("web-d", "10.100.1.10", ports=[8001])

    status, _, body = world.request(f"{gateways[1].proxy}/", host="web-d.lan.example")
    foreign, _, foreign_body = world.request(f"{gateways[1].proxy}/", host="web-d.flatnet")

    assert (status, body) == (200, b"web-d\n")
    assert foreign == 400
    assert b".lan.example" in foreign_body


def test_missing_host_gets_400(world):
    gateways = world.start()

    answer = world.loop.run(raw_exchange("127.0.1.1", 8000, b"GET / HTTP/1.0\r\n\r\n"))

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Missing Host header" in answer


def test_repeated_host_gets_400(world):
    gateways = world.start()
    request = b"GET / HTTP/1.1\r\nHost: a.flatnet\r\nHost: b.flatnet\r\nConnection: close\r\n\r\n"

    answer = world.loop.run(raw_exchange("127.0.1.1", 8000, request))

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"More than one Host header" in answer


def test_malformed_host_names_the_rule(world):
    gateways = world.start()

    status, _, body = world.request(f"{gateways[1].proxy}/", host="web.flatnet:99999")

    assert status == 400
    assert b"1 to 65535" in body


def test_unknown_name_gets_404_naming_it(world):
    gateways = world.start()

    status, headers, body = world.request(f"{gateways[1].proxy}/", host="nobody.flatnet")

    assert status == 404
    assert b"'nobody'" in body
    assert headers["Content-Type"].startswith("text/plain")
    assert record_of(gateways[1], headers["X-Request-Id"])["decision"] == "not-found"


def test_unknown_name_answered_in_japanese_when_preferred(world):
    gateways = world.start()

    status, _, body = world.request(
        f"{gateways[1].proxy}/", host="nobody.flatnet", headers={"Accept-Language": "en;q=0.5, ja"}
    )

    assert status == 404
    assert "登録されていません" in body.decode()


def test_lan_proxy_never_serves_the_api(world):
    gateways = world.start()

    status, _, body = world.request(f"{gateways[1].proxy}/api/containers", host="nobody.flatnet")

    assert status == 404
    assert b"'nobody'" in body


# HTTP correctness


def test_chunked_upload_arrives_intact(world):
    gateways = world.start()
    world.backend("sink", "10.100.1.10", 8001)
    gateways[1].add_container("sink", "10.100.1.10", ports=[8001])
    pieces = [os.urandom(size) for size in (1, 1000, 65536, 300_000, 7)]

    async def body():
        for piece in pieces:
            yield piece

    status, _, answer = world.request(f"{gateways[1].proxy}/upload", method="POST", host="sink.flatnet", data=body())

    report = json.loads(answer)
    assert status == 200
    assert report["length"] == sum(map(len, pieces))
    assert report["sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert report["transferEncoding"] == "chunked"
    assert report["contentLength"] is None


def test_chunked_download_arrives_intact(world):
    gateways = world.start()
    world.backend("source", "10.100.1.10", 8001)
    gateways[1].add_container("source", "10.100.1.10", ports=[8001])

    status, headers, body = world.request(f"{gateways[1].proxy}/chunked", host="source.flatnet")

    assert status == 200
    assert body == b"".join(CHUNKS)
    assert headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in headers


def test_request_with_length_and_chunked_gets_400(world):
    gateways = world.start()
    world.backend("sink", "10.100.1.10", 8001)
    gateways[1].add_container("sink", "10.100.1.10", ports=[8001])
    request = (
        b"POST /upload HTTP/1.1\r\nHost: sink.flatnet\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )

    answer = world.loop.run(raw_exchange("127.0.1.1", 8000, request))

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Length" in answer


def test_hop_by_hop_headers_are_removed(world):
    gateways = world.start()
    world.backend("echo", "10.100.1.10", 8001)
    gateways[1].add_container("echo", "10.100.1.10", ports=[8001])
    request = (
        b"GET /headers HTTP/1.1\r\nHost: echo.flatnet\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n"
        b"X-Flatnet-Hop: 7\r\n\r\n"
    )

    answer = world.loop.run(raw_exchange("127.0.1.1", 8000, request, read_timeout=1))

    head, _, body = answer.partition(b"\r\n\r\n")
    received = json.loads(body)
    for name in ("x-private", "keep-alive", "te", "proxy-connection", "x-flatnet-hop"):
        assert name not in received, name
    assert received["x-kept"] == ["yes"]


def test_forwarded_headers_and_via_are_set(world):
    gateways = world.start()
    world.backend("echo", "10.100.1.10", 8001)
    gateways[1].add_container("echo", "10.100.1.10", ports=[8001])

    status, headers, body = world.request(
        f"{gateways[1].proxy}/headers", host="echo.flatnet", headers={"X-Forwarded-For": "192.0.2.7"}
    )

    received = json.loads(body)
    assert received["x-forwarded-for"] == ["192.0.2.7, 127.0.0.1"]
    assert received["x-forwarded-host"] == ["echo.flatnet"]
    assert received["x-forwarded-proto"] == ["http"]
    assert received["via"] == ["1.1 flatnet-1"]
    assert received["x-request-id"] == [headers["X-Request-Id"]]
    assert "1.1 flatnet-1" in headers["Via"]


def test_request_id_from_client_is_kept(world):
    gateways = world.start()
    world.backend("echo", "10.100.1.10", 8001)
    gateways[1].add_container("echo", "10.100.1.10", ports=[8001])

    _, headers, body = world.request(f"{gateways[1].proxy}/headers", host="echo.flatnet", headers={"X-Request-Id": "client-42"})

    assert json.loads(body)["x-request-id"] == ["client-42"]
    assert record_of(gateways[1], "client-42")["status"] == 200


def test_compressed_response_passes_byte_identical(world):
    gateways = world.start()
    world.backend("zipped", "10.100.1.10", 8001)
    gateways[1].add_container("zipped", "10.100.1.10", ports=[8001])

    status, headers, body = world.request(
        f"{gateways[1].proxy}/gzip", host="zipped.flatnet", headers={"Accept-Encoding": "gzip"}
    )

    assert status == 200
    assert body == GZIPPED
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Length"] == str(len(GZIPPED))


def test_head_and_no_content_keep_the_connection(world):
    gateways = world.start()
    world.backend("web", "10.100.1.10", 8001)
    gateways[1].add_container("web", "10.100.1.10", ports=[8001])
    request = (
        b"HEAD / HTTP/1.1\r\nHost: web.flatnet\r\n\r\n"
        b"GET /status/204 HTTP/1.1\r\nHost: web.flatnet\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: web.flatnet\r\nConnection: close\r\n\r\n"
    )

    answer = world.loop.run(raw_exchange("127.0.1.1", 8000, request))

    responses = answer.split(b"HTTP/1.1 ")[1:]
    assert [response[:3] for response in responses] == [b"200", b"204", b"200"]
    assert responses[0].endswith(b"\r\n\r\n")
    assert b"Content-Length: 4" in responses[0]
    assert responses[2].endswith(b"\r\n\r\nweb\n")


def test_websocket_survives_idle_time_past_every_timeout(world):
    gateways = world.start(upstream_timeout=1, client_idle_timeout=1)
    world.backend("chat", "10.100.1.10", 8001)
    gateways[1].add_container("chat", "10.100.1.10", ports=[8001])

    async def talk():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{gateways[1].proxy}/ws", headers={"Host": "chat.flatnet"}) as socket:
                await socket.send_str("hello")
                first = await socket.receive_str(timeout=5)
                await asyncio.sleep(3)
                await socket.send_str("still there")
                second = await socket.receive_str(timeout=5)
                return first, second

    assert world.loop.run(talk()) == ("chat: hello", "chat: still there")


def test_websocket_across_two_gateways(world):
    gateways = world.start(host_ids=(1, 2))
    world.backend("chat-b", "10.100.2.10", 8002)
    gateways[2].add_container("chat-b", "10.100.2.10", ports=[8002])
    wait_until(lambda: any(e["hostname"] == "chat-b" for e in gateways[1].containers()), 5, "chat-b on gateway 1")

    async def talk():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{gateways[1].proxy}/ws", headers={"Host": "chat-b.flatnet"}) as socket:
                replies = []
                for text in ("one", "two", "three"):
                    await socket.send_str(text)
                    replies.append(await socket.receive_str(timeout=5))
                return replies

    assert world.loop.run(talk()) == ["chat-b: one", "chat-b: two", "chat-b: three"]


def test_unreachable_container_gets_502(world):
    gateways = world.start()
    gateways[1].add_container("dead", "10.100.1.99", ports=[8009])

    status, headers, body = world.request(f"{gateways[1].proxy}/", host="dead.flatnet")

    assert status == 502
    assert b"'dead'" in body
    assert record_of(gateways[1], headers["X-Request-Id"])["target"] == "http://10.100.1.99:8009"


def test_slow_container_gets_504(world):
    gateways = world.start(upstream_timeout=1)
    world.backend("sleepy", "10.100.1.10", 8001)
    gateways[1].add_container("sleepy", "10.100.1.10", ports=[8001])

    status, _, body = world.request(f"{gateways[1].proxy}/slow?seconds=4", host="sleepy.flatnet")

    assert status == 504
    assert b"did not answer in time" in body


def test_client_going_away_cancels_upstream_request(world):
    gateways = world.start()
    backend = world.backend("holder", "10.100.1.10", 8001)
    gateways[1].add_container("holder", "10.100.1.10", ports=[8001])

    async def ask_and_leave():
        reader, writer = await asyncio.open_connection("127.0.1.1", 8000)
        writer.write(b"GET /hold HTTP/1.1\r\nHost: holder.flatnet\r\nX-Request-Id: leaver\r\n\r\n")
        await asyncio.wait_for(backend.hold_started.wait(), 5)
        writer.close()
        await asyncio.wait_for(backend.hold_cancelled.wait(), 10)

    world.loop.run(ask_and_leave())

    assert record_of(gateways[1], "leaver")["status"] == 499


def test_pipelined_requests_are_answered_in_order(world):
    gateways = world.start()
    world.backend("first", "10.100.1.10", 8001)
    world.backend("second", "10.100.1.11", 8001)
    gateways[1].add_container("first", "10.100.1.10", ports=[8001])
    gateways[1].add_container("second", "10.100.1.11", ports=[8001])
    request = (
        b"GET /slow?seconds=0.3 HTTP/1.1\r\nHost: first.flatnet\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: second.flatnet\r\nConnection: close\r\n\r\n"
    )

    answer = world.loop.run(raw_exchange("127.0.1.1", 8000, request))

    assert answer.index(b"slow\n") < answer.index(b"second\n")


# Across hosts


def test_pooled_connection_closed_is_retried_once(world):
    # Each connection answers its first request and closes on the second without
    # answering, as a container that dropped an idle keep-alive connection does.
    connections = []

    async def serve(reader, writer):
        connections.append(writer)
        number = len(connections)
        await reader.readuntil(b"\r\n\r\n")
        body = f"connection {number}\n".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    gateways = world.start()
    add_address(world.netns, "10.100.1.10")
    server = world.loop.run(asyncio.start_server(serve, "10.100.1.10", 8001))
    try:
        gateways[1].add_container("flaky", "10.100.1.10", ports=[8001])

        first = world.request(f"{gateways[1].proxy}/", host="flaky.flatnet")
        second = world.request(f"{gateways[1].proxy}/", host="flaky.flatnet")
    finally:
        server.close()

    assert (first[0], first[2]) == (200, b"connection 1\n")
    assert (second[0], second[2]) == (200, b"connection 2\n")
    assert len(connections) == 2

def test_remote_container_is_reached_over_one_pooled_connection(world):
    gateways = world.start(host_ids=(1, 2))
    world.backend("web-b1", "10.100.2.10", 8002)
    gateways[2].add_container("web-b1", "10.100.2.10", ports=[8002])
    wait_until(lambda: any(e["hostname"] == "web-b1" for e in gateways[1].containers()), 5, "web-b1 on gateway 1")
    streams = len(follower_ports(gateways[1], 2))

    answers = [world.request(f"{gateways[1].proxy}/", host="web-b1.flatnet:80") for _ in range(5)]

    assert [body for _, _, body in answers] == [b"web-b1\n"] * 5
    assert len(follower_ports(gateways[1], 2)) == streams + 1
    first = record_of(gateways[1], answers[0][1]["X-Request-Id"])
    assert first["decision"] == "peer"
    assert first["owner"] == 2
    assert record_of(gateways[2], answers[0][1]["X-Request-Id"])["hop"] == 1


def test_alias_routes_locally_and_via_owner(world):
    gateways = world.start(host_ids=(1, 2))
    world.backend("web-b1", "10.100.2.10", 8002)
    added = gateways[2].add_container("web-b1", "10.100.2.10", ports=[8002], aliases=["API", "www.site"])
    entry = wait_until(lambda: next((e for e in gateways[1].containers() if e["id"] == added["id"]), None), 5, "web-b1 on gateway 1")
    assert entry["aliases"] == ["api", "www.site"]

    remote = world.request(f"{gateways[1].proxy}/", host="Api.flatnet")
    local = world.request(f"{gateways[2].proxy}/", host="www.site.flatnet:8002")

    assert (remote[0], remote[2]) == (200, b"web-b1\n")
    assert (local[0], local[2]) == (200, b"web-b1\n")
    remote_record = record_of(gateways[1], remote[1]["X-Request-Id"])
    assert (remote_record["decision"], remote_record["name"], remote_record["owner"], remote_record["container_id"]) == ("peer", "api", 2, added["id"])
    forwarded = record_of(gateways[2], remote[1]["X-Request-Id"])
    assert (forwarded["decision"], forwarded["hop"], forwarded["target"]) == ("local", 1, "http://10.100.2.10:8002")
    assert record_of(gateways[2], local[1]["X-Request-Id"])["decision"] == "local"


def test_hostname_beats_alias_on_every_gateway(world):
    gateways = world.start(host_ids=(1, 2))
    world.backend("aliased", "10.100.2.10", 8002)
    world.backend("named", "10.100.1.10", 8001)
    aliased = gateways[2].add_container("web-b1", "10.100.2.10", ports=[8002], aliases=["api"])
    named = gateways[1].add_container("api", "10.100.1.10", ports=[8001])
    for gateway in gateways.values():
        wait_until(lambda gateway=gateway: len(gateway.containers()) == 2, 5, f"both containers on gateway {gateway.host_id}")

    for gateway in gateways.values():
        assert world.request(f"{gateway.proxy}/", host="api.flatnet")[2] == b"named\n"
        assert gateway.health()["conflicts"] == {"api": [named["id"], aliased["id"]]}

    gateways[1].remove_container(named["id"])
    wait_until(lambda: len(gateways[2].containers()) == 1, 5, "the removal on gateway 2")

    for gateway in gateways.values():
        assert world.request(f"{gateway.proxy}/", host="api.flatnet")[2] == b"aliased\n"
        assert gateway.health()["conflicts"] == {}


def test_peer_never_forwards_a_forwarded_request(world):
    gateways = world.start(host_ids=(1, 2))
    world.backend("web-a1", "10.100.1.10", 8001)
    gateways[1].add_container("web-a1", "10.100.1.10", ports=[8001])
    wait_until(lambda: any(e["hostname"] == "web-a1" for e in gateways[2].containers()), 5, "web-a1 on gateway 2")

    status, headers, _ = world.request(f"{gateways[2].api}/", host="web-a1.flatnet", headers={"X-Flatnet-Hop": "1"})

    assert status == 404
    assert headers["X-Flatnet-Not-Here"] == "1"
    assert headers["X-Flatnet-Owner"] == "1"


def test_hop_header_naming_no_peer_gets_400(world):
    gateways = world.start(host_ids=(1, 2))

    status, _, body = world.request(f"{gateways[2].api}/", host="any.flatnet", headers={"X-Flatnet-Hop": "9"})

    assert status == 400
    assert b"X-Flatnet-Hop '9'" in body


def test_request_through_itself_gets_508(world):
    gateways = world.start(host_ids=(1, 2))

    via_status, _, via_body = world.request(f"{gateways[1].proxy}/", host="any.flatnet", headers={"Via": "1.1 flatnet-1"})
    hop_status, _, hop_body = world.request(f"{gateways[1].api}/", host="any.flatnet", headers={"X-Flatnet-Hop": "1"})

    assert via_status == 508
    assert b"gateway 1" in via_body
    assert hop_status == 508
    assert b"forwarded by itself" in hop_body


def test_owners_who_disagree_get_508_naming_both(world):
    gateways = world.start(host_ids=(1, 2))
    gateways[2].add_container("orphan", "10.100.2.10", ports=[8002])
    wait_until(lambda: any(e["hostname"] == "orphan" for e in gateways[1].containers()), 5, "orphan on gateway 1")
    # Gateway 2 loses its disk: it no longer holds the container that gateway 1 still routes to it.
    gateways[2].stop()
    subprocess.run(["rm", "-rf", str(gateways[2].data_dir)], check=True)
    gateways[2].start()

    status, headers, body = world.request(f"{gateways[1].proxy}/", host="orphan.flatnet")

    assert status == 508
    assert b"gateway 1" in body
    assert b"gateway 2" in body
    record = record_of(gateways[1], headers["X-Request-Id"])
    assert record["decision"] == "loop"
    assert record["retried_from"] == 2


def test_stale_view_is_healed_and_request_reaches_new_owner(world):
    gateways = world.start(host_ids=(1, 2, 3), heartbeat=5)
    world.backend("mover-on-2", "10.100.2.10", 8002)
    world.backend("mover-on-3", "10.100.3.10", 8003)
    old = gateways[2].add_container("mover", "10.100.2.10", ports=[8002])
    wait_until(lambda: any(e["hostname"] == "mover" for e in gateways[1].containers()), 5, "mover on gateway 1")

    wait_until(lambda: is_following(gateways[1], [2, 3]), 15, "gateway 1 to follow gateways 2 and 3")
    rules = stall_streams(gateways[1], [2, 3])
    try:
        gateways[2].remove_container(old["id"])
        gateways[3].add_container("mover", "10.100.3.10", ports=[8003])
        wait_until(lambda: [e["hostId"] for e in gateways[2].containers() if e["hostname"] == "mover"] == [3], 5, "the move on gateway 2")
        assert [e["hostId"] for e in gateways[1].containers() if e["hostname"] == "mover"] == [2]

        status, headers, body = world.request(f"{gateways[1].proxy}/", host="mover.flatnet")
    finally:
        unstall(world.netns, rules)

    assert (status, body) == (200, b"mover-on-3\n")
    record = record_of(gateways[1], headers["X-Request-Id"])
    assert record["decision"] == "stale-retry"
    assert record["retried_from"] == 2
    assert record["owner"] == 3
    assert "is stale" in gateways[1].log_text()


@pytest.mark.parametrize(("policy", "expected"), [("serve", 200), ("warn", 200), ("reject", 503)])
def test_staleness_policy_applies_to_silent_owner(world, policy, expected):
    gateways = world.start(host_ids=(1, 2), heartbeat=2, stale_after=1, stale_policy=policy)
    world.backend("quiet", "10.100.2.10", 8002)
    gateways[2].add_container("quiet", "10.100.2.10", ports=[8002])
    wait_until(lambda: any(e["hostname"] == "quiet" for e in gateways[1].containers()), 5, "quiet on gateway 1")

    wait_until(lambda: is_following(gateways[1], [2]), 15, "gateway 1 to follow gateway 2")
    rules = stall_streams(gateways[1], [2])
    try:
        time.sleep(2.5)
        status, headers, _ = world.request(f"{gateways[1].proxy}/", host="quiet.flatnet")
    finally:
        unstall(world.netns, rules)

    assert status == expected
    assert ("X-Flatnet-Stale" in headers) == (policy == "warn")
    record = record_of(gateways[1], headers["X-Request-Id"])
    assert record["stale_policy"] == policy
    assert record["owner_silent_seconds"] > 1


def test_expired_owner_is_not_routed_to(world):
    gateways = world.start(host_ids=(1, 2), ttl=2, heartbeat=0.5)
    gateways[2].add_container("gone", "10.100.2.10", ports=[8002])
    wait_until(lambda: any(e["hostname"] == "gone" for e in gateways[1].containers()), 5, "gone on gateway 1")

    gateways[2].stop()
    wait_until(lambda: [e["ttl"] for e in gateways[1].containers() if e["hostname"] == "gone"] == [0], 10, "gone to expire")
    status, headers, body = world.request(f"{gateways[1].proxy}/", host="gone.flatnet")

    assert status == 404
    assert b"has not been heard from" in body
    record = record_of(gateways[1], headers["X-Request-Id"])
    assert record["decision"] == "expired"
    assert record["expired"] == [2]


# Records and processes


def test_decision_record_has_every_field(world):
    gateways = world.start()
    world.backend("web", "10.100.1.10", 8001)
    container = gateways[1].add_container("web", "10.100.1.10", ports=[8001])

    _, headers, body = world.request(f"{gateways[1].proxy}/", host="Web.flatnet")

    record = record_of(gateways[1], headers["X-Request-Id"])
    assert record["client"] == "127.0.0.1"
    assert record["method"] == "GET"
    assert record["host"] == "Web.flatnet"
    assert record["name"] == "web"
    assert record["container_id"] == container["id"]
    assert record["vector"] == {"1": 1}
    assert record["expired"] == []
    assert record["status"] == 200
    assert record["bytes_sent"] == len(body)
    assert record["duration_ms"] > 0
    assert isinstance(record["ts"], float)


def test_proxy_workers_share_the_port(world):
    gateways = world.start(proxy_workers=2)
    world.backend("web", "10.100.1.10", 8001)
    gateways[1].add_container("web", "10.100.1.10", ports=[8001])
    worker_log = gateways[1].data_dir / "decisions" / "decisions-w1.jsonl"

    def worker_served() -> bool:
        # Each request is a new connection, which the kernel hands to either process.
        world.request(f"{gateways[1].proxy}/", host="web.flatnet")
        return worker_log.exists() and '"decision":"local"' in worker_log.read_text()

    wait_until(worker_served, 20, "a request served by the worker process")
    assert any(r["decision"] == "local" for r in records(gateways[1]) if r["request_id"])


def test_access_line_names_the_decision(world):
    gateways = world.start()

    _, headers, _ = world.request(f"{gateways[1].proxy}/x", host="nobody.flatnet")

    line = wait_until(
        lambda: next((l for l in gateways[1].access_log.read_text().splitlines() if headers["X-Request-Id"] in l), None),
        5, "the access line",
    )
    assert 'host="nobody.flatnet"' in line
    assert "name=nobody decision=not-found" in line
    assert "status=404" in line
