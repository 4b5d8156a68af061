"""flatnet status against a 3-host lab in a known state."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from flatnet.lab.progress import display_width
from tests.gateway.harness import wait_until
from tests.lab.conftest import built_lab
from tests.lab.test_end_to_end import _require_lab_tools

pytestmark = pytest.mark.lab

FLATNET = str(Path(sys.executable).parent / "flatnet")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _require_lab_tools()
    with built_lab(tmp_path_factory, hosts=3) as built:
        yield built


def _status(lab, *extra: str) -> dict:
    config = str(lab.paths.gateway_config("h1"))
    result = lab.exec("h1", [FLATNET, "status", "--config", config, "--json", *extra], check=True)
    return json.loads(result.stdout)


def _status_when(lab, condition, what: str) -> dict:
    def ready():
        status = _status(lab)
        return status if condition(status) else None

    return wait_until(ready, 15, what)


def test_status_json_describes_the_fleet(lab):
    names = {host: f"status-{host}-{uuid.uuid4().hex[:4]}" for host in ("h2", "h3")}
    for host, name in names.items():
        lab.run_web(host, name)
    try:
        status = _status_when(lab, lambda s: s["containers"] == 2, "both containers on gateway 1")
    finally:
        for host, name in names.items():
            lab.podman(host, "rm", "-f", "-t", "0", name)

    assert status["hostId"] == 1
    assert status["hosts"] == {"2": {"containers": 1, "expired": False}, "3": {"containers": 1, "expired": False}}
    assert set(status["peers"]) == {"2", "3"}
    for peer in ("2", "3"):
        assert status["peers"][peer]["state"] == "connected"
        assert status["peers"][peer]["inSync"] is True
        assert status["peers"][peer]["address"] == f"http://10.100.0.{peer}:8080"


def test_status_shows_a_stopped_peer(lab):
    lab.stop("h3", "gateway")
    try:
        status = _status_when(lab, lambda s: s["peers"]["3"]["state"] == "disconnected", "peer 3 disconnected")
    finally:
        lab.start("h3", "gateway")

    assert status["peers"]["3"]["inSync"] is False
    assert status["peers"]["2"]["state"] == "connected"


def test_status_table_in_japanese(lab):
    config = str(lab.paths.gateway_config("h1"))
    env = dict(lab.command_env("h1"), LANG="ja_JP.UTF-8")

    result = subprocess.run(lab.exec_argv("h1", [FLATNET, "status", "--config", config]), env=env,
                            capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stderr
    assert "ホスト 1" in result.stdout
    assert "ピア" in result.stdout
    # The address column starts at the same terminal column in the header and in each peer row,
    # counting a Japanese character as two columns.
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "アドレス" in line)
    rows = [line for line in lines if "http://10.100.0." in line]
    assert len(rows) == 2, result.stdout
    address_column = display_width(header[: header.index("アドレス")])
    for row in rows:
        assert display_width(row[: row.index("http://")]) == address_column, f"{header}\n{row}"


def test_status_names_an_unreachable_gateway(lab):
    result = lab.exec("h1", [FLATNET, "status", "--api", "http://10.100.0.1:9"])

    assert result.returncode == 1
    assert "http://10.100.0.1:9" in result.stderr
