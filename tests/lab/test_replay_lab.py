"""Replay of a real history: containers churned and moved on a 2-host lab while a LAN client sends requests.

Every decision both gateways recorded must come out consistent or stale, and
both data directories must verify, live, as the gateways left them.
"""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import require_root
from tests.lab.conftest import built_lab
from tests.lab.test_end_to_end import LAB_TOOLS

pytestmark = pytest.mark.lab

NAMES = ("rp-a", "rp-b", "rp-c")
MOVES = 12
GATEWAYS = {"h1": "http://198.18.0.1/", "h2": "http://198.18.0.2/"}


def _require_lab_tools() -> None:
    require_root("the replay lab test", tools=LAB_TOOLS)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _require_lab_tools()
    with built_lab(tmp_path_factory, hosts=2) as built:
        yield built


class Client:
    """A LAN client asking both gateways for the churned names, round after round, until stopped."""

    def __init__(self, lab):
        self.lab = lab
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replay-client")

    def __enter__(self) -> "Client":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name in NAMES:
                for url in GATEWAYS.values():
                    try:
                        response = self.lab.http_get("client", url, headers={"Host": f"{name}.flatnet"}, timeout=3.0)
                        self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
                    except OSError:
                        self.statuses[0] = self.statuses.get(0, 0) + 1
                    self.sent += 1
            self._stop.wait(0.01)


def _replay(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flatnet", "replay", *argv], capture_output=True, text=True, timeout=300,
        env=dict(os.environ, LANG="C.UTF-8"),
    )


def _record_count(lab, host: str) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in (lab.paths.data_dir(host) / "decisions").glob("decisions*.jsonl*"))


def _wait_for_decision_log(lab, host: str) -> None:
    # A writer thread appends the records after each loop iteration: wait until the log stops growing.
    previous = -1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        count = _record_count(lab, host)
        if count == previous:
            return
        previous = count
        time.sleep(0.5)
    raise AssertionError(f"the decision log of {host} kept growing for 10 s")


def test_churned_history_replays_consistent_or_stale(lab):
    where = {}
    with Client(lab) as client:
        for move in range(MOVES):
            name = NAMES[move % len(NAMES)]
            if name in where:
                lab.podman(where[name], "rm", "-f", "-t", "0", name)
            host = "h2" if where.get(name) != "h2" else "h1"
            lab.run_web(host, name)
            where[name] = host
            time.sleep(0.2)
    for name, host in where.items():
        lab.podman(host, "rm", "-f", "-t", "0", name)
    for host in GATEWAYS:
        _wait_for_decision_log(lab, host)

    print(f"client sent {client.sent} requests: statuses {client.statuses}")
    assert client.sent > 100
    for host in GATEWAYS:
        data_dir = lab.paths.data_dir(host)
        config = [] if host == "h2" else ["--config", str(lab.paths.gateway_config(host))]
        result = _replay("decisions", "--data-dir", str(data_dir), "--json", *config)
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        summary = lines[-1]
        print(host, {key: summary[key] for key in ("decisions", "consistent", "stale", "divergent", "skipped")})
        for line in lines[:-1]:
            print(" ", line)

        assert result.returncode == 0, result.stdout + result.stderr
        assert summary["divergent"] == 0
        assert summary["decisions"] >= client.sent // 4
        assert {line["verdict"] for line in lines if line["kind"] == "decision"} <= {"stale"}
        assert not [line for line in lines if line["kind"] == "corrupt"]

        verified = _replay("verify", "--data-dir", str(data_dir))
        assert verified.returncode == 0, verified.stdout + verified.stderr
