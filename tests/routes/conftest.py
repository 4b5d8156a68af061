"""A throwaway network namespace standing in for a host: a tun named nebula1 and a link to a next hop."""

import subprocess
import uuid

import pytest

from tests.conftest import require_root

NEXT_HOP = "198.18.9.2"


def ip(netns: str, *arguments: str) -> str:
    result = subprocess.run(["ip", "-n", netns, *arguments], capture_output=True, text=True, timeout=30, check=True)
    return result.stdout


def routes(netns: str, prefix: str) -> list[str]:
    """Return ``ip route show PREFIX`` in ``netns``, one line per route."""
    return [line.strip() for line in ip(netns, "route", "show", prefix).splitlines() if line.strip()]


@pytest.fixture
def host_netns():
    """A namespace with nebula1 (a tun, 10.100.0.1/24) and eth0 (198.18.9.1/24) whose peer is the next hop."""
    require_root("route tests")
    name = f"fntest-rt-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        ip(name, "link", "set", "lo", "up")
        ip(name, "tuntap", "add", "nebula1", "mode", "tun")
        ip(name, "link", "set", "nebula1", "up")
        ip(name, "addr", "add", "10.100.0.1/24", "dev", "nebula1")
        ip(name, "link", "add", "eth0", "type", "veth", "peer", "name", "hop0")
        ip(name, "link", "set", "eth0", "up")
        ip(name, "link", "set", "hop0", "up")
        ip(name, "addr", "add", "198.18.9.1/24", "dev", "eth0")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)
