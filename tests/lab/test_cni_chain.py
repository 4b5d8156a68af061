"""flatnet's plugin under real podman, first in a chain with portmap and tuning, on a 2-host lab.

The lab's conflists are rewritten to run flatnet, then portmap, then tuning from
containernetworking-plugins, so every container here goes through the chain.
"""

import hashlib
import json
import re
import uuid

import pytest

from flatnet.lab import build, config, layout, teardown
from flatnet.lab.image import big_file_bytes
from tests.gateway.harness import wait_until
from tests.lab.test_end_to_end import _require_lab_tools

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _require_lab_tools()
    lab_dir = tmp_path_factory.mktemp("chainlab")
    built = build.up(hosts=2, lab_dir=lab_dir)
    try:
        settings = built.state.settings
        for host_id in settings.host_ids:
            name = layout.host_name(host_id)
            built.paths.conflist(name).write_text(
                config.render_conflist(built.paths, host_id, settings, chained=config.PORTMAP_AND_TUNING)
            )
        yield built
    finally:
        teardown.down(lab_dir=lab_dir)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _registry_of_h1(lab) -> list[dict]:
    result = lab.exec("h1", ["curl", "-s", "-m", "3", "http://10.100.0.1:8080/api/containers"], check=True)
    return json.loads(result.stdout)


def _entries_named(lab, name: str) -> list[dict]:
    return [entry for entry in _registry_of_h1(lab) if entry["hostname"] == name]


def _inspect(lab, host: str, container: str, field: str) -> str:
    template = "{{.NetworkSettings.Networks.%s.%s}}" % (layout.NETWORK_NAME, field)
    return lab.podman(host, "inspect", "--format", template, container).stdout.strip()


def _events(lab, host: str, origin: int) -> list[dict]:
    """The events of ``origin`` in ``host``'s data directory: its own log, or its replica of a peer's."""
    log_dir = lab.paths.data_dir(host) / "log" / str(origin)
    return [json.loads(line) for segment in sorted(log_dir.glob("*.jsonl")) for line in segment.read_text().splitlines()]


def test_published_port_goes_through_portmap(lab):
    name = _name("published")
    # Port 8080 on the host's LAN address only: the gateway's API listens on 8080
    # on the Nebula address, so podman cannot bind the port on every address.
    lab.run_web("h2", name, "-p", "198.18.0.2:8080:80")
    try:
        page = lab.exec("client", ["curl", "-s", "-m", "5", "http://198.18.0.2:8080/"], check=True)
        entry = wait_until(lambda: _entries_named(lab, name), 10, f"{name} on gateway 1")[0]
    finally:
        lab.podman("h2", "rm", "-f", "-t", "0", name)

    print(page.stdout, entry)
    assert page.stdout.strip() == name
    assert entry["ports"] == [80]


def test_tuning_runs_on_flatnets_result(lab):
    name = _name("tuned")
    lab.run_web("h1", name)
    try:
        setting = lab.podman("h1", "exec", name, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify")
    finally:
        lab.podman("h1", "rm", "-f", "-t", "0", name)

    assert setting.stdout.strip() == "1"


def test_static_ip_and_mac_are_given_exactly(lab):
    name, rival = _name("static"), _name("rival")
    lab.run_web("h1", name, "--ip", "10.100.1.77", "--mac-address", "02:fa:17:00:01:77")
    try:
        inside = lab.podman("h1", "exec", name, "ip", "addr", "show", "eth0").stdout
        address, mac = _inspect(lab, "h1", name, "IPAddress"), _inspect(lab, "h1", name, "MacAddress")
        clash = lab.podman("h1", "run", "-d", "--name", rival, "--ip", "10.100.1.77", "flatnet-lab/web", check=False)
    finally:
        lab.podman("h1", "rm", "-f", "-t", "0", name, rival, check=False)

    print(inside, clash.stderr)
    assert (address, mac) == ("10.100.1.77", "02:fa:17:00:01:77")
    assert "inet 10.100.1.77/24" in inside
    assert "02:fa:17:00:01:77" in inside
    assert clash.returncode != 0
    assert "10.100.1.77" in clash.stderr
    assert "already held" in clash.stderr


def test_network_reload_keeps_address_and_one_entry(lab):
    name = _name("reloaded")
    lab.run_web("h2", name)
    try:
        container_id = lab.podman("h2", "inspect", "--format", "{{.Id}}", name).stdout.strip()
        before = (_inspect(lab, "h2", name, "IPAddress"), _inspect(lab, "h2", name, "MacAddress"))
        wait_until(lambda: _entries_named(lab, name), 10, f"{name} on gateway 1")

        lab.podman("h2", "network", "reload", name)

        after = (_inspect(lab, "h2", name, "IPAddress"), _inspect(lab, "h2", name, "MacAddress"))
        def replicated_types() -> list[str]:
            return [event["type"] for event in _events(lab, "h1", 2) if event["data"]["id"] == container_id]

        replicated = wait_until(lambda: len(replicated_types()) >= 3 and replicated_types(), 10, "the reload on gateway 1")
        entries = _entries_named(lab, name)
        own_entries = [entry for entry in json.loads(
            lab.exec("h2", ["curl", "-s", "-m", "3", "http://10.100.0.2:8080/api/containers"], check=True).stdout
        ) if entry["hostname"] == name]
    finally:
        lab.podman("h2", "rm", "-f", "-t", "0", name)

    print(before, after, replicated, entries)
    assert replicated == ["container.added", "container.removed", "container.added"]
    assert after == before
    assert [entry["ip"] for entry in entries] == [before[0]]
    assert [entry["ip"] for entry in own_entries] == [before[0]]


def test_network_alias_is_recorded(lab):
    name = _name("aliased")
    lab.run_web("h2", name, "--network", "flatnet", "--network-alias", "api-alias")
    try:
        changes = wait_until(
            lambda: [event["data"] for event in _events(lab, "h2", 2) if event["data"].get("hostname") == name],
            10, f"{name} in the log of h2",
        )
    finally:
        lab.podman("h2", "rm", "-f", "-t", "0", name)

    print(changes)
    # podman adds the short container id as an alias of its own.
    assert "api-alias" in changes[0]["aliases"]


def test_megabyte_crosses_hosts_at_overlay_mtu(lab):
    server, client = _name("big-server"), _name("big-client")
    address = lab.run_web("h2", server)
    lab.run_web("h1", client)
    try:
        mtu = lab.podman("h1", "exec", client, "cat", "/sys/class/net/eth0/mtu").stdout.strip()
        fetched = lab.podman(
            "h1", "exec", client, "sh", "-c", f"timeout 30 wget -q -O - http://{address}/big.bin | sha256sum",
        )
    finally:
        lab.podman("h1", "rm", "-f", "-t", "0", client)
        lab.podman("h2", "rm", "-f", "-t", "0", server)

    print(mtu, fetched.stdout)
    assert mtu == "1300"
    assert re.match(r"^[0-9a-f]{64}", fetched.stdout).group(0) == hashlib.sha256(big_file_bytes()).hexdigest()
