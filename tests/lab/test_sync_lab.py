"""Sync between gateways in the real world: crashes, partitions, churn (3-host lab, short TTL)."""

import json
import os
import random
import signal
import threading
import uuid

import pytest

from tests.gateway.harness import wait_until
from tests.lab.conftest import built_lab
from tests.lab.test_end_to_end import _require_lab_tools

pytestmark = pytest.mark.lab

TTL = 4
HOSTS = ("h1", "h2", "h3")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _require_lab_tools()
    with built_lab(tmp_path_factory, hosts=3, ttl=TTL) as built:
        yield built


def _view(lab, host: str) -> list[dict]:
    response = lab.http_get(host, f"http://10.100.0.{host[1:]}:8080/api/containers", timeout=3)
    return json.loads(response.body)


def _live(lab, host: str, prefix: str) -> set[tuple[str, int, str]]:
    return {(e["hostname"], e["hostId"], e["ip"]) for e in _view(lab, host) if e["hostname"].startswith(prefix) and e["ttl"] > 0}


def _podman_truth(lab, prefix: str) -> set[tuple[str, int, str]]:
    """What podman says runs, per host: the ground truth every view must reach.

    All lab hosts share one podman store, so asking one host is enough.
    """
    names = [n for n in lab.podman("h1", "ps", "--format", "{{.Names}}").stdout.split() if n.startswith(prefix)]
    if not names:
        return set()
    template = '{{.Name}} {{index .Config.Annotations "flatnet.lab.host"}} {{.NetworkSettings.Networks.flatnet.IPAddress}}'
    truth = set()
    for line in lab.podman("h1", "inspect", "--format", template, *names).stdout.splitlines():
        name, host_id, address = line.split()
        truth.add((name, int(host_id), address))
    return truth


def _converged(lab, prefix: str):
    truth = _podman_truth(lab, prefix)
    views = {host: _live(lab, host, prefix) for host in HOSTS}
    return truth if all(view == truth for view in views.values()) else None


def _kill_gateway(lab, host: str) -> None:
    lab.reload()
    os.kill(lab.state.members[host].processes["gateway"].pid, signal.SIGKILL)


def _remove_all(lab, prefix: str) -> None:
    for host in HOSTS:
        names = [n for n in lab.podman(host, "ps", "-a", "--format", "{{.Names}}").stdout.split() if n.startswith(prefix)]
        if names:
            lab.podman(host, "rm", "-f", "-t", "0", *names)


def test_views_converge_after_gateway_killed_mid_churn(lab):
    prefix = f"kill-{uuid.uuid4().hex[:4]}-"
    names = [f"{prefix}{n}" for n in range(6)]

    def churn():
        for number, name in enumerate(names):
            lab.podman("h2", "run", "-d", "--name", name, "flatnet-lab/web")
            if number % 2:
                lab.podman("h2", "rm", "-f", "-t", "0", names[number - 1])

    worker = threading.Thread(target=churn)
    worker.start()
    wait_until(lambda: any(name.startswith(prefix) for name in lab.podman("h2", "ps", "-a", "--format", "{{.Names}}").stdout.split()),
               30, "the churn to start")
    _kill_gateway(lab, "h2")
    worker.join(timeout=120)
    lab.start("h2", "gateway")

    try:
        truth = wait_until(lambda: _converged(lab, prefix), 20, "every view to match podman")
        assert len(truth) == 3
        for host in HOSTS:
            names_seen = [e["hostname"] for e in _view(lab, host) if e["hostname"].startswith(prefix)]
            assert len(names_seen) == len(set(names_seen)), f"{host} lists a container twice: {names_seen}"
    finally:
        _remove_all(lab, prefix)


def test_partitioned_host_expires_and_returns(lab):
    prefix = f"part-{uuid.uuid4().hex[:4]}-"
    before = f"{prefix}before"
    lab.run_web("h3", before)
    lab.run_web("h2", f"{prefix}h2")
    wait_until(lambda: _converged(lab, prefix), 15, "the first containers everywhere")

    lab.exec("h3", ["ip", "link", "set", "eth0", "down"], check=True)
    try:
        wait_until(lambda: not any(name == before for name, _, _ in _live(lab, "h1", prefix)), 4 * TTL, "h3's container to expire on h1")
        assert any(name == f"{prefix}h2" for name, _, _ in _live(lab, "h1", prefix))
        page = lab.exec("client", ["curl", "-s", "-m", "5", "-H", f"Host: {prefix}h2.flatnet", "http://198.18.0.1/"])
        assert f"{prefix}h2" in page.stdout
        during = f"{prefix}during"
        lab.run_web("h3", during)
    finally:
        lab.exec("h3", ["ip", "link", "set", "eth0", "up"], check=True)

    try:
        truth = wait_until(lambda: _converged(lab, prefix), 15, "h3's containers back on every view")
        assert {name for name, _, _ in truth} == {before, during, f"{prefix}h2"}
    finally:
        _remove_all(lab, prefix)


def test_seeded_churn_converges(lab):
    seed = int(os.environ.get("FLATNET_CHURN_SEED", "20261204"))
    steps = int(os.environ.get("FLATNET_CHURN_STEPS", "24"))
    rng = random.Random(seed)
    prefix = f"churn-{uuid.uuid4().hex[:4]}-"
    running: list[tuple[str, str]] = []
    down_links: set[str] = set()
    dead_gateways: set[str] = set()
    history = []
    try:
        for step in range(steps):
            action = rng.choice(["run", "run", "run", "rm", "rm", "kill", "partition", "heal"])
            host = rng.choice(HOSTS)
            if action == "run":
                name = f"{prefix}{step}"
                lab.podman(host, "run", "-d", "--name", name, "flatnet-lab/web")
                running.append((host, name))
            elif action == "rm" and running:
                victim_host, name = running.pop(rng.randrange(len(running)))
                lab.podman(victim_host, "rm", "-f", "-t", "0", name)
            elif action == "kill" and host not in dead_gateways:
                _kill_gateway(lab, host)
                dead_gateways.add(host)
            elif action == "partition" and host not in down_links:
                lab.exec(host, ["ip", "link", "set", "eth0", "down"], check=True)
                down_links.add(host)
            elif action == "heal" and down_links:
                healed = rng.choice(sorted(down_links))
                lab.exec(healed, ["ip", "link", "set", "eth0", "up"], check=True)
                down_links.discard(healed)
            history.append((step, action, host))

        for host in sorted(down_links):
            lab.exec(host, ["ip", "link", "set", "eth0", "up"], check=True)
        for host in sorted(dead_gateways):
            lab.start(host, "gateway")
        truth = wait_until(lambda: _converged(lab, prefix), 30, f"every view to converge (seed {seed})")
    except BaseException:
        print(f"churn failed with FLATNET_CHURN_SEED={seed} FLATNET_CHURN_STEPS={steps}; steps: {history}")
        for host in sorted(down_links):
            lab.exec(host, ["ip", "link", "set", "eth0", "up"])
        raise
    finally:
        _remove_all(lab, prefix)

    assert {name for name, _, _ in truth} == {name for _, name in running}
