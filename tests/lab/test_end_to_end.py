"""The plan's checks, end to end on a 2-host lab: podman, the plugin, Nebula, gateways."""

import concurrent.futures
import json
import re
import uuid

import pytest

from tests.conftest import require_root
from tests.gateway.harness import wait_until
from tests.lab.conftest import built_lab

pytestmark = pytest.mark.lab


LAB_TOOLS = ("podman", "nebula", "nebula-cert", "nsenter", "curl")


def _require_lab_tools() -> None:
    require_root("end-to-end tests on a lab", tools=LAB_TOOLS)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _require_lab_tools()
    with built_lab(tmp_path_factory, hosts=2) as built:
        yield built


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _containers(lab, host: str) -> list[dict]:
    result = lab.exec(host, ["curl", "-s", "-m", "3", f"http://10.100.0.{host[1:]}:8080/api/containers"], check=True)
    return json.loads(result.stdout)


def _hostnames(lab, host: str) -> set[str]:
    return {entry["hostname"] for entry in _containers(lab, host)}


def test_container_gets_address_of_its_host(lab):
    result = lab.exec("h2", ["podman", "run", "--rm", "--network", "flatnet", "flatnet-lab/web", "ip", "addr"], check=True)

    print(result.stdout)
    assert re.search(r"inet 10\.100\.2\.\d+/24", result.stdout)


def test_concurrent_containers_never_share_an_address(lab):
    names = [_name("many") for _ in range(4)]

    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda name: lab.podman("h2", "run", "-d", "--name", name, "flatnet-lab/web"), names))
    addresses = [lab.container_address("h2", name) for name in names]
    lab.podman("h2", "rm", "-f", "-t", "0", *names)

    print(dict(zip(names, addresses)))
    assert len(set(addresses)) == len(names)
    assert all(address.startswith("10.100.2.") for address in addresses)


def test_route_to_peer_subnet_goes_through_nebula(lab):
    result = lab.exec("h1", ["ip", "route", "show", "10.100.2.0/24"], check=True)

    print(result.stdout)
    assert "dev nebula1" in result.stdout


def test_container_pings_container_on_other_host(lab):
    pinger, target = _name("ping-a"), _name("ping-b")
    lab.podman("h1", "run", "-d", "--name", pinger, "flatnet-lab/web")
    address = lab.run_web("h2", target)
    try:
        result = lab.podman("h1", "exec", pinger, "ping", "-c", "2", "-W", "2", address, check=False)
    finally:
        lab.podman("h1", "rm", "-f", "-t", "0", pinger)
        lab.podman("h2", "rm", "-f", "-t", "0", target)

    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 packets received" in result.stdout


def test_gateway_lists_peer_container_with_ttl(lab):
    name = _name("listed")
    address = lab.run_web("h2", name)
    try:
        entry = wait_until(
            lambda: next((e for e in _containers(lab, "h1") if e["hostname"] == name), None), 10, f"{name} on gateway 1"
        )
    finally:
        lab.podman("h2", "rm", "-f", "-t", "0", name)

    print(entry)
    assert entry["hostId"] == 2
    assert entry["ip"] == address
    assert 0 < entry["ttl"] <= 300


def test_lan_client_reaches_container_on_h2_through_gateway_1(lab):
    lab.run_web("h2", "web-b1")
    try:
        wait_until(lambda: "web-b1" in _hostnames(lab, "h1"), 10, "web-b1 on gateway 1")
        result = lab.exec("client", ["curl", "-s", "-m", "5", "-H", "Host: web-b1.flatnet", "http://198.18.0.1/"], check=True)
    finally:
        lab.podman("h2", "rm", "-f", "-t", "0", "web-b1")

    print(result.stdout)
    assert "web-b1" in result.stdout
    # The gateway writes decisions in the background, after the response is sent.
    access = wait_until(
        lambda: [line for line in lab.access_log("h1").splitlines() if 'host="web-b1.flatnet"' in line],
        10,
        "a line for web-b1.flatnet in gateway 1's access log",
    )
    print(access[-1])
    assert "decision=peer" in access[-1]
    assert "status=200" in access[-1]


def test_network_alias_reached_from_lan(lab):
    name, alias = _name("aliased"), _name("alias")
    lab.run_web("h2", name, "--network", "flatnet", "--network-alias", alias)
    try:
        entry = wait_until(
            lambda: next((e for e in _containers(lab, "h1") if e["hostname"] == name), None), 10, f"{name} on gateway 1"
        )
        result = lab.exec("client", ["curl", "-s", "-m", "5", "-H", f"Host: {alias}.flatnet", "http://198.18.0.1/"], check=True)
    finally:
        lab.podman("h2", "rm", "-f", "-t", "0", name)

    print(entry, result.stdout)
    assert alias in entry["aliases"]
    assert name in result.stdout
    access = wait_until(
        lambda: [line for line in lab.access_log("h1").splitlines() if f'host="{alias}.flatnet"' in line],
        10,
        f"a line for {alias}.flatnet in gateway 1's access log",
    )
    print(access[-1])
    assert f"name={alias} " in access[-1]
    assert "decision=peer" in access[-1]
    assert "status=200" in access[-1]

    wait_until(lambda: name not in _hostnames(lab, "h1"), 10, f"{name} gone from gateway 1")
    after = lab.exec("client", ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Host: {alias}.flatnet", "http://198.18.0.1/"])
    assert after.stdout == "404"


def test_removed_container_leaves_both_gateways(lab):
    name = _name("removed")
    lab.run_web("h2", name)
    wait_until(lambda: name in _hostnames(lab, "h1"), 10, f"{name} on gateway 1")

    lab.podman("h2", "rm", "-f", "-t", "0", name)

    wait_until(lambda: name not in _hostnames(lab, "h1"), 10, f"{name} to leave gateway 1")
    assert name not in _hostnames(lab, "h2")


def test_podman_run_works_with_gateway_down_and_syncs_after(lab):
    name = _name("offline")
    lab.stop("h2", "gateway")
    try:
        address = lab.run_web("h2", name)
        print(f"{name} got {address} with gateway 2 stopped")
        assert address.startswith("10.100.2.")
        assert name not in _hostnames(lab, "h1")
    finally:
        lab.start("h2", "gateway")

    entry = wait_until(
        lambda: next((e for e in _containers(lab, "h1") if e["hostname"] == name), None), 15, f"{name} on gateway 1"
    )
    copies = {host: sum(1 for e in _containers(lab, host) if e["hostname"] == name) for host in ("h1", "h2")}
    lab.podman("h2", "rm", "-f", "-t", "0", name)
    print(entry)
    assert entry["ip"] == address
    assert copies == {"h1": 1, "h2": 1}
