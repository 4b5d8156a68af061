"""The CNI plugin's ADD and DEL beside the Go reference pair bridge + host-local, in one run.

Usage: make bench-cni (root). Options: --runs N (ADD/DEL pairs per plugin, at least 50),
--inproc-runs N.

Everything happens in network namespaces this script creates and removes: one "host"
namespace, where a flatnet gateway runs (started here and stopped by PID) and where this
process runs every plugin, and a fresh namespace per ADD standing in for a container. Each
round runs flatnet's ADD then DEL, and the reference's ADD then DEL, in alternating order,
each timed as the whole plugin process from fork to exit, as a runtime would run it.

- flatnet fast path: the plugin executable the lab installs (a launcher started with
  ``python -SI``), which hands the command to the gateway's socket;
- flatnet in-process: the same executable with ``socket`` pointing where no gateway
  listens, so it loads pyroute2 and does the work itself;
- VERSION: the same executable, and pip's console script ``flatnet-cni`` for comparison;
- reference: /usr/lib/cni/bridge with host-local IPAM, on its own bridge and subnet.

It prints a table, then one JSON object as its last line: medians in milliseconds and the
ratios of flatnet's fast path to the reference.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

from flatnet.cni import launcher

REFERENCE_DIR = Path("/usr/lib/cni")
HOST_ID = 7
BRIDGE = "fnbench0"
REFERENCE_BRIDGE = "fnbenchref0"
REFERENCE_SUBNET = "10.101.0.0/24"
MTU = 1300
GATEWAY_START_SECONDS = 30
MIN_RUNS = 50
_CLONE_NEWNET = 0x40000000


def _ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True, capture_output=True, timeout=30)


def _enter(netns: str) -> None:
    """Move this process's main thread, and so every plugin it starts, into ``netns``."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns} failed")
    finally:
        os.close(fd)


class Bench:
    def __init__(self, work: Path):
        self.work = work
        self.host = f"fnbench-{uuid.uuid4().hex[:8]}"
        self.data_dir = work / "data"
        self.plugin_dir = work / "bin"
        self.plugin = self.plugin_dir / "flatnet"
        self.namespaces: list[str] = []
        self.gateway: subprocess.Popen | None = None

    def set_up(self) -> None:
        self.plugin_dir.mkdir(parents=True)
        self.plugin.write_text(launcher.render_script(
            sys.executable, sysconfig.get_paths()["purelib"], str(Path(launcher.__file__).parent)
        ))
        self.plugin.chmod(0o755)
        _ip("netns", "add", self.host)
        self.namespaces.append(self.host)
        _ip("-n", self.host, "link", "set", "lo", "up")
        self._start_gateway()
        _enter(self.host)

    def _start_gateway(self) -> None:
        config = self.work / "gateway.toml"
        config.write_text("\n".join([
            f"host_id = {HOST_ID}",
            f'data_dir = "{self.data_dir}"',
            f'api_listen = "127.0.{HOST_ID}.1:8080"',
            f'proxy_listen = "127.0.{HOST_ID}.1:8000"',
        ]) + "\n")
        with open(self.work / "gateway.log", "wb") as log:
            self.gateway = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.host}", sys.executable, "-m", "flatnet", "gateway", "--config", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + GATEWAY_START_SECONDS
        while not self._socket_answers():
            if self.gateway.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not open its CNI socket:\n{(self.work / 'gateway.log').read_text()}")
            time.sleep(0.05)
        # Let it finish loading pyroute2 before the first timed ADD.
        time.sleep(1.0)

    def _socket_answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.data_dir / launcher.SOCKET_NAME))
                return True
            except OSError:
                return False

    def container(self) -> str:
        name = f"fnbench-{uuid.uuid4().hex[:8]}"
        _ip("netns", "add", name)
        self.namespaces.append(name)
        return name

    def remove(self, name: str) -> None:
        _ip("netns", "del", name)
        self.namespaces.remove(name)

    def tear_down(self) -> None:
        if self.gateway is not None and self.gateway.poll() is None:
            os.killpg(self.gateway.pid, signal.SIGTERM)
            try:
                self.gateway.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.gateway.pid, signal.SIGKILL)
                self.gateway.wait(timeout=5)
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)

    def flatnet_config(self, *, in_process: bool = False) -> bytes:
        config = {
            "cniVersion": "1.0.0", "name": "flatnet", "type": "flatnet", "hostId": HOST_ID,
            "bridge": BRIDGE, "mtu": MTU, "dataDir": str(self.data_dir), "registryEndpoints": [],
        }
        if in_process:
            config["socket"] = str(self.work / "no-gateway.sock")
        return json.dumps(config).encode()

    def reference_config(self) -> bytes:
        return json.dumps({
            "cniVersion": "1.0.0", "name": "fnbenchref", "type": "bridge", "bridge": REFERENCE_BRIDGE,
            "isGateway": True, "isDefaultGateway": True, "mtu": MTU,
            "ipam": {"type": "host-local", "subnet": REFERENCE_SUBNET, "dataDir": str(self.work / "host-local")},
        }).encode()


def timed(executable: Path | str, command: str, config: bytes, container_id: str = "", netns: str = "",
          cni_path: Path | str = "") -> float:
    environment = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
        "CNI_NETNS": f"/run/netns/{netns}" if netns else "", "CNI_IFNAME": "eth0", "CNI_PATH": str(cni_path),
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=bench",
    }
    started = time.perf_counter()
    completed = subprocess.run([str(executable)], input=config, capture_output=True, env=environment, timeout=120)
    elapsed = (time.perf_counter() - started) * 1000
    if completed.returncode != 0:
        raise RuntimeError(f"{executable} {command} failed ({completed.returncode}): {completed.stdout!r} {completed.stderr!r}")
    return elapsed


def round_trip(bench: Bench, executable: Path, config: bytes, cni_path: Path) -> tuple[float, float]:
    netns = bench.container()
    container_id = uuid.uuid4().hex
    add = timed(executable, "ADD", config, container_id, netns, cni_path)
    delete = timed(executable, "DEL", config, container_id, netns, cni_path)
    bench.remove(netns)
    return add, delete


def measure(bench: Bench, runs: int, inproc_runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {key: [] for key in (
        "add", "del", "ref_add", "ref_del", "inproc_add", "inproc_del", "version", "console_version", "ref_version",
    )}
    fast, reference = bench.flatnet_config(), bench.reference_config()
    reference_plugin = REFERENCE_DIR / "bridge"
    for run in range(runs):
        pairs = [("", bench.plugin, fast, bench.plugin_dir), ("ref_", reference_plugin, reference, REFERENCE_DIR)]
        for prefix, executable, config, cni_path in (pairs if run % 2 == 0 else reversed(pairs)):
            add, delete = round_trip(bench, executable, config, cni_path)
            samples[f"{prefix}add"].append(add)
            samples[f"{prefix}del"].append(delete)

    in_process = bench.flatnet_config(in_process=True)
    for _ in range(inproc_runs):
        add, delete = round_trip(bench, bench.plugin, in_process, bench.plugin_dir)
        samples["inproc_add"].append(add)
        samples["inproc_del"].append(delete)

    version_config = b'{"cniVersion": "1.0.0"}'
    console_script = Path(sys.executable).with_name("flatnet-cni")
    for _ in range(runs):
        samples["version"].append(timed(bench.plugin, "VERSION", version_config))
        samples["console_version"].append(timed(console_script, "VERSION", version_config))
        samples["ref_version"].append(timed(reference_plugin, "VERSION", version_config))
    return samples


def report(samples: dict[str, list[float]]) -> dict[str, float]:
    median = {key: statistics.median(values) for key, values in samples.items()}
    rows = [
        ("ADD", "fast path", "add", "ref_add"),
        ("DEL", "fast path", "del", "ref_del"),
        ("ADD", "in-process", "inproc_add", "ref_add"),
        ("DEL", "in-process", "inproc_del", "ref_del"),
        ("VERSION", "launcher (python -SI)", "version", "ref_version"),
        ("VERSION", "pip console script", "console_version", "ref_version"),
    ]
    print(f"{'command':<8} {'flatnet path':<22} {'runs':>5} {'flatnet ms':>11} {'p90 ms':>8} {'reference ms':>13} {'ratio':>6}")
    for command, path, ours, theirs in rows:
        values = sorted(samples[ours])
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        print(f"{command:<8} {path:<22} {len(values):>5} {median[ours]:>11.1f} {p90:>8.1f} "
              f"{median[theirs]:>13.1f} {median[ours] / median[theirs]:>6.2f}")
    print("reference: /usr/lib/cni/bridge + host-local; ratios are flatnet / reference; medians unless marked p90")
    return {
        "add_ms": round(median["add"], 2),
        "del_ms": round(median["del"], 2),
        "ref_add_ms": round(median["ref_add"], 2),
        "ref_del_ms": round(median["ref_del"], 2),
        "add_ratio": round(median["add"] / median["ref_add"], 3),
        "del_ratio": round(median["del"] / median["ref_del"], 3),
        "inproc_add_ms": round(median["inproc_add"], 2),
        "inproc_del_ms": round(median["inproc_del"], 2),
        "version_ms": round(median["version"], 2),
        "console_version_ms": round(median["console_version"], 2),
        "ref_version_ms": round(median["ref_version"], 2),
        "runs": len(samples["add"]),
        "inproc_runs": len(samples["inproc_add"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=MIN_RUNS, help=f"ADD/DEL pairs per plugin (at least {MIN_RUNS})")
    parser.add_argument("--inproc-runs", type=int, default=20, help="ADD/DEL pairs on the in-process path")
    options = parser.parse_args()
    if options.runs < MIN_RUNS or options.inproc_runs < 1:
        parser.error(f"--runs must be at least {MIN_RUNS} and --inproc-runs at least 1")
    if os.geteuid() != 0:
        print("bench/cni.py needs root: it creates network namespaces", file=sys.stderr)
        return 1
    if not (REFERENCE_DIR / "bridge").exists() or not (REFERENCE_DIR / "host-local").exists():
        print(f"the reference plugins are missing from {REFERENCE_DIR}; install containernetworking-plugins", file=sys.stderr)
        return 1

    work = Path(tempfile.mkdtemp(prefix="fnbench-cni-"))
    bench = Bench(work)
    try:
        bench.set_up()
        samples = measure(bench, options.runs, options.inproc_runs)
    finally:
        bench.tear_down()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report(samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
