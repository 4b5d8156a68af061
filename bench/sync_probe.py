"""Run inside lab host h1's namespace by bench/sync.py: time changes from a peer to h1's view.

For each of N changes it posts a container of ``--origin`` to that host's gateway over
Nebula, and waits until h1's gateway streams the stored and applied event back (h1 serves
its replica of every origin on /api/events). The time is from just before the POST to the
moment h1 hands the event out. It prints one JSON object: the latencies in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import aiohttp


async def probe(origin: int, count: int) -> list[float]:
    peer = f"http://10.100.0.{origin}:8080"
    own = "http://10.100.0.1:8080"
    latencies = []
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{own}/api/health") as response:
            head = (await response.json())["vector"].get(str(origin), 0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
        async with session.get(f"{own}/api/events", params={"origin": str(origin), "after": str(head)}, timeout=timeout) as stream:
            added = []
            for number in range(count):
                event_id = str(uuid.uuid4())
                container_id = f"bench{uuid.uuid4().hex}"
                body = {
                    "eventId": event_id, "id": container_id, "ip": f"10.100.{origin}.{10 + number % 240}",
                    "hostname": f"bench-{number}", "ports": [], "hostId": origin,
                    "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                }
                started = time.perf_counter()
                async with session.post(f"{peer}/api/containers", json=body) as response:
                    assert response.status == 201, await response.text()
                while True:
                    line = await stream.content.readline()
                    if not line:
                        raise RuntimeError("h1 closed its event stream")
                    if event_id.encode() in line:
                        break
                latencies.append((time.perf_counter() - started) * 1000)
                added.append(container_id)
            for container_id in added:
                async with session.delete(f"{peer}/api/containers/{container_id}") as response:
                    assert response.status == 200, await response.text()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--origin", type=int, default=2)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(probe(args.origin, args.count))))


if __name__ == "__main__":
    main()
