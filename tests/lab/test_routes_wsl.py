"""A 3-host lab whose h3 runs as WSL2: its Nebula runs in a namespace playing Windows (flatnet-w3), and
h3 routes the other subnets ``via`` Windows. Then `flatnet doctor` from h1 to h2, on links broken one at a time.
"""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.gateway.harness import wait_until
from tests.lab.conftest import built_lab
from tests.lab.test_end_to_end import _require_lab_tools

pytestmark = pytest.mark.lab

FLATNET = str(Path(sys.executable).parent / "flatnet")
WINDOWS = "198.18.103.1"
RECONCILE_WAIT = 15


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _require_lab_tools()
    with built_lab(tmp_path_factory, hosts=3, wsl=(3,)) as built:
        yield built


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def flatnet_routes(lab, host: str, prefix: str) -> list[str]:
    return lab.exec(host, ["ip", "route", "show", prefix, "proto", "102"], check=True).stdout.splitlines()


def ping_from(lab, host: str, container: str, address: str) -> subprocess.CompletedProcess:
    return lab.podman(host, "exec", container, "ping", "-c", "2", "-W", "2", address, check=False)


def doctor(lab, host: str, peer: int, *extra: str, nebula_here: bool = True) -> subprocess.CompletedProcess:
    # A WSL2 host's Nebula config lives on its Windows, not on the host itself.
    nebula_config = lab.paths.nebula_config(host) if nebula_here else lab.paths.root / "no-nebula-on-this-host.yml"
    argv = [FLATNET, "doctor", str(peer), "--config", str(lab.paths.gateway_config(host)),
            "--nebula-config", str(nebula_config), *extra]
    result = subprocess.run(
        lab.exec_argv(host, argv), env={**os.environ, "LC_ALL": "C"}, capture_output=True, text=True, timeout=120,
    )
    print(result.stdout + result.stderr)
    return result


def test_wsl_host_routes_via_windows(lab):
    wait_until(lambda: flatnet_routes(lab, "h3", "10.100.1.0/24"), RECONCILE_WAIT, "h3's route to h1")

    assert flatnet_routes(lab, "h3", "10.100.1.0/24") == [f"10.100.1.0/24 via {WINDOWS} dev eth0 metric 50 "]
    assert flatnet_routes(lab, "h3", "10.100.2.0/24") == [f"10.100.2.0/24 via {WINDOWS} dev eth0 metric 50 "]
    assert lab.exec("h3", ["ip", "link", "show", "nebula1"]).returncode != 0


def test_wsl_containers_need_flatnet_route_to_reach_h1(lab):
    windows_side, other = _name("wsl-c"), _name("wsl-a")
    address_1 = lab.run_web("h1", other)
    address_3 = lab.run_web("h3", windows_side)
    try:
        wait_until(lambda: flatnet_routes(lab, "h3", "10.100.1.0/24"), RECONCILE_WAIT, "h3's route to h1")
        outbound = ping_from(lab, "h3", windows_side, address_1)
        inbound = ping_from(lab, "h1", other, address_3)

        lab.stop("h3", "gateway")
        lab.exec("h3", ["ip", "route", "del", "10.100.1.0/24", "proto", "102", "metric", "50"], check=True)
        cut_off = ping_from(lab, "h3", windows_side, address_1)
        lab.start("h3", "gateway")
        wait_until(lambda: flatnet_routes(lab, "h3", "10.100.1.0/24"), RECONCILE_WAIT, "h3's route back")
        restored = ping_from(lab, "h3", windows_side, address_1)
    finally:
        lab.podman("h1", "rm", "-f", "-t", "0", other)
        lab.podman("h3", "rm", "-f", "-t", "0", windows_side)

    assert outbound.returncode == 0, outbound.stdout + outbound.stderr
    assert inbound.returncode == 0, inbound.stdout + inbound.stderr
    assert cut_off.returncode != 0, cut_off.stdout
    assert restored.returncode == 0, restored.stdout + restored.stderr


def test_doctor_from_wsl_host_finds_every_link_working(lab):
    name = _name("wsl-doc")
    lab.run_web("h1", name)
    try:
        wait_until(lambda: lab.exec("h3", ["curl", "-s", "-m", "3", "http://198.18.103.2:8080/api/containers"]).stdout.count(name),
                   15, f"{name} on gateway 3")
        result = doctor(lab, "h3", 1, nebula_here=False)
    finally:
        lab.podman("h1", "rm", "-f", "-t", "0", name)

    assert result.returncode == 0
    assert f"goes via {WINDOWS} dev eth0" in result.stdout
    assert "this host's certificate not read" in result.stdout
    assert "every link to host 1 works" in result.stdout


def test_doctor_names_the_missing_bridge(lab):
    # No container has run on h2 yet, so it has no bridge, and it sends an ICMP error for 10.100.2.1.
    result = doctor(lab, "h1", 2)

    assert result.returncode == 1
    assert "host 2 sent an ICMP error (network unreachable, from 10.100.0.2) for its bridge 10.100.2.1" in result.stdout
    assert result.stdout.splitlines()[-1] == "first broken link: peer's bridge"


def test_doctor_names_the_kernel_route(lab):
    lab.stop("h1", "gateway")
    try:
        for _ in range(2):  # flatnet's route and Nebula's
            lab.exec("h1", ["ip", "route", "del", "10.100.2.0/24"], check=True)
        result = doctor(lab, "h1", 2)
    finally:
        lab.start("h1", "gateway")
    wait_until(lambda: flatnet_routes(lab, "h1", "10.100.2.0/24"), RECONCILE_WAIT, "h1's route to h2 back")

    assert result.returncode == 1
    assert "the kernel has no route to 10.100.2.1" in result.stdout
    assert result.stdout.splitlines()[-1] == "first broken link: kernel route"


def test_doctor_names_the_tunnel(lab):
    lab.stop("h2", "nebula")
    try:
        result = doctor(lab, "h1", 2)
    finally:
        lab.start("h2", "nebula")

    assert result.returncode == 1
    assert "10.100.0.2, host 2's Nebula address, did not reply to 3 pings" in result.stdout
    assert result.stdout.splitlines()[-1] == "first broken link: Nebula tunnel"


def test_doctor_names_a_certificate_without_subnet(lab):
    pki = lab.paths.pki_dir
    config_path = lab.paths.nebula_config("h2")
    original = config_path.read_text()
    subprocess.run(
        ["nebula-cert", "sign", "-ca-crt", str(pki / "ca.crt"), "-ca-key", str(pki / "ca.key"), "-name", "h2",
         "-ip", "10.100.0.2/24", "-out-crt", str(pki / "h2-bare.crt"), "-out-key", str(pki / "h2-bare.key")],
        check=True, capture_output=True, timeout=30,
    )
    config = yaml.safe_load(original)
    config["pki"].update(cert=str(pki / "h2-bare.crt"), key=str(pki / "h2-bare.key"))
    config_path.write_text(yaml.safe_dump(config))
    lab.restart("h2", "nebula")
    try:
        result = doctor(lab, "h1", 2)
    finally:
        config_path.write_text(original)
        lab.restart("h2", "nebula")

    assert result.returncode == 1
    assert "most likely because host 2's certificate does not carry 10.100.2.0/24" in result.stdout
    assert result.stdout.splitlines()[-1] == "first broken link: certificates"


def test_doctor_names_an_unreachable_container(lab):
    name = _name("doc-b")
    lab.run_web("h2", name)
    try:
        result = doctor(lab, "h1", 2, "--container", "10.100.2.250")
        working = doctor(lab, "h1", 2)
    finally:
        lab.podman("h2", "rm", "-f", "-t", "0", name)

    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "first broken link: container"
    assert working.returncode == 0
    assert "every link to host 2 works" in working.stdout
