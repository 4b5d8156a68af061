"""A 2-host lab from `up` to `down`: namespaces, Nebula, gateways, stop and start, teardown.

The tests run in file order on one lab: the first builds and breaks its own lab, the last
tears the shared one down and checks that nothing is left.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

from flatnet.errors import FlatnetError
from flatnet.lab import build, layout, namespaces, services, teardown
from flatnet.lab.lab import Lab
from flatnet.lab.processes import ProcessState, command_line

pytestmark = pytest.mark.lab

TOOLS = ("ip", "nsenter", "podman", "runc", "nebula", "nebula-cert", "busybox")
LAB_NAMESPACES = ["flatnet-client", "flatnet-h1", "flatnet-h2", "flatnet-lan"]


def _require_lab() -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "the lab needs root to create network namespaces"
    elif missing := [tool for tool in TOOLS if shutil.which(tool) is None]:
        reason = f"the lab needs {', '.join(missing)} on PATH"
    elif not build.cni_plugin_path().exists():
        reason = f"the lab needs flatnet's CNI plugin at {build.cni_plugin_path()}"
    elif leftovers := namespaces.lab_namespaces():
        reason = f"another lab is running ({', '.join(leftovers)}); run `flatnet lab down`"
    if reason is None:
        return
    if os.environ.get("FLATNET_REQUIRE_LAB") == "1":
        pytest.fail(reason + " (FLATNET_REQUIRE_LAB=1 forbids skipping)")
    pytest.skip(reason)


def _ended(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _retry(check, seconds: float):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_failed_up_removes_what_it_made(tmp_path, monkeypatch):
    _require_lab()
    failing = [sys.executable, "-c", "import sys; print('gateway cannot start', file=sys.stderr); sys.exit(3)"]
    real_argv = services.service_argv
    monkeypatch.setattr(
        services, "service_argv",
        lambda service, paths, name: failing if service is services.Service.GATEWAY else real_argv(service, paths, name),
    )

    with pytest.raises(FlatnetError) as raised:
        build.up(hosts=2, lab_dir=tmp_path / "lab")

    message = str(raised.value)
    assert "gateway" in message
    assert "gateway cannot start" in message
    assert namespaces.lab_namespaces() == []
    assert not namespaces.OWNER_FILE.exists()
    assert not (tmp_path / "lab").exists()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _require_lab()
    lab_dir = tmp_path_factory.mktemp("lab") / "lab"
    started = time.monotonic()
    built = build.up(hosts=2, lab_dir=lab_dir)
    print(f"lab up: {time.monotonic() - started:.2f} s")
    try:
        yield built
    finally:
        teardown.down(lab_dir=lab_dir)


def test_up_creates_every_namespace(lab):
    assert namespaces.lab_namespaces() == LAB_NAMESPACES


def test_up_over_existing_lab_is_rejected(lab):
    with pytest.raises(FlatnetError) as raised:
        build.up(hosts=2, lab_dir=lab.paths.root)

    assert "flatnet lab down" in str(raised.value)


def test_up_records_lab_dir_as_owner(lab):
    assert namespaces.recorded_owner() == lab.paths.root


def test_up_in_other_dir_names_running_lab(lab, tmp_path):
    other = tmp_path / "other"

    with pytest.raises(FlatnetError) as raised:
        build.up(hosts=2, lab_dir=other)

    assert f"`FLATNET_LAB_DIR={lab.paths.root} flatnet lab down`" in str(raised.value)
    assert not other.exists()


def _flatnet(*args: str, lab_dir, language: str = "C") -> subprocess.CompletedProcess:
    env = {**os.environ, "FLATNET_LAB_DIR": str(lab_dir), "LC_ALL": language}
    return subprocess.run([sys.executable, "-m", "flatnet", *args], env=env, capture_output=True, text=True, timeout=120)


def _lab_pids(lab) -> list[int]:
    lab.reload()
    return [record.pid for member in lab.state.hosts for record in member.processes.values()]


def test_down_of_other_dir_leaves_lab_running(lab, tmp_path):
    result = _flatnet("lab", "down", lab_dir=tmp_path / "other")

    assert result.returncode == 1
    assert f"`FLATNET_LAB_DIR={lab.paths.root} flatnet lab down`" in result.stderr
    assert "namespaces deleted" not in result.stdout
    assert namespaces.lab_namespaces() == LAB_NAMESPACES
    for pid in _lab_pids(lab):
        assert not _ended(pid), pid
    assert namespaces.recorded_owner() == lab.paths.root


@pytest.mark.parametrize(("host", "address"), [("h1", "10.100.0.1/24"), ("h2", "10.100.0.2/24")])
def test_nebula_device_has_host_address(lab, host, address):
    assert namespaces.ipv4_addresses(f"flatnet-{host}", "nebula1") == [address]


@pytest.mark.parametrize("host", ["h1", "h2"])
def test_ip_forward_is_on_in_host(lab, host):
    result = lab.exec(host, ["cat", "/proc/sys/net/ipv4/ip_forward"], check=True)

    assert result.stdout.strip() == "1"


def test_h1_pings_h2_over_nebula(lab):
    result = lab.exec("h1", ["busybox", "ping", "-c", "1", "-W", "2", "10.100.0.2"], timeout=10)

    assert result.returncode == 0, result.stdout + result.stderr


def test_client_reaches_hosts_on_lan_only(lab):
    lan = lab.exec("client", ["busybox", "ping", "-c", "1", "-W", "2", "198.18.0.2"], timeout=10)
    overlay = lab.exec("client", ["busybox", "ping", "-c", "1", "-W", "1", "10.100.0.2"], timeout=10)

    assert lan.returncode == 0, lan.stdout + lan.stderr
    assert overlay.returncode != 0


def test_status_shows_everything_running(lab):
    statuses = {status.member.name: status for status in lab.status()}

    assert list(statuses) == ["h1", "h2", "client"]
    for host in ("h1", "h2"):
        assert {p.service: p.state for p in statuses[host].processes} == {
            "nebula": ProcessState.RUNNING, "gateway": ProcessState.RUNNING,
        }
        assert statuses[host].health.ok, statuses[host].health.describe()
    assert statuses["client"].processes == []


def test_status_command_prints_table(lab):
    env = {**os.environ, "FLATNET_LAB_DIR": str(lab.paths.root), "LANG": "C"}
    result = subprocess.run([sys.executable, "-m", "flatnet", "lab", "status"],
                            env=env, capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["HOST", "NETNS"]
    assert "10.100.0.2" in lines[2]
    assert lines[2].count("running") == 2
    assert lines[2].endswith("ok")


def test_exec_command_passes_exit_status(lab):
    env = {**os.environ, "FLATNET_LAB_DIR": str(lab.paths.root)}
    result = subprocess.run(
        [sys.executable, "-m", "flatnet", "lab", "exec", "h2", "--", "sh", "-c", 'echo "$CONTAINERS_CONF"; exit 7'],
        env=env, capture_output=True, text=True, timeout=30,
    )

    assert result.returncode == 7
    assert result.stdout.strip() == str(lab.paths.containers_conf("h2"))


def test_web_container_serves_its_name(lab):
    address = lab.run_web("h2", "web-lifecycle")
    try:
        response = _retry(lambda: _get_or_none(lab, "h1", f"http://{address}/"), 5)
    finally:
        lab.podman("h2", "rm", "-f", "-t", "0", "web-lifecycle")

    assert address.startswith("10.100.2.")
    assert response is not None
    assert response.status == 200
    assert response.text == "web-lifecycle"


def _get_or_none(lab, member, url):
    try:
        return lab.http_get(member, url, timeout=1)
    except OSError:
        return None


def test_nebula_stop_and_start_on_h2(lab):
    old_pid = lab.state.members["h2"].processes["nebula"].pid

    assert lab.stop("h2", "nebula") is True

    assert _ended(old_pid)
    assert lab.process_state("h2", "nebula") is ProcessState.STOPPED
    assert namespaces.ipv4_addresses("flatnet-h2", "nebula1") == []
    assert lab.stop("h2", "nebula") is False

    new_pid = lab.start("h2", "nebula")

    assert new_pid != old_pid
    assert lab.process_state("h2", "nebula") is ProcessState.RUNNING
    assert namespaces.ipv4_addresses("flatnet-h2", "nebula1") == ["10.100.0.2/24"]
    ping = _retry(
        lambda: lab.exec("h1", ["busybox", "ping", "-c", "1", "-W", "1", "10.100.0.2"], timeout=5).returncode == 0, 10,
    )
    assert ping
    assert Lab.load(lab.paths.root).state.members["h2"].processes["nebula"].pid == new_pid


def test_start_of_running_process_is_rejected(lab):
    with pytest.raises(FlatnetError) as raised:
        lab.start("h1", "gateway")

    assert "already running" in str(raised.value)


def test_status_describes_refused_health_in_japanese(lab):
    lab.stop("h1", "gateway")
    try:
        result = _flatnet("lab", "status", lab_dir=lab.paths.root, language="ja_JP.UTF-8")
    finally:
        lab.start("h1", "gateway")

    h1_line = next(line for line in result.stdout.splitlines() if line.startswith("h1 "))
    assert result.returncode == 1
    assert h1_line.endswith("10.100.0.1:8080 への接続が拒否されました")
    assert "Errno" not in result.stdout


def test_gateway_stop_and_start_on_h1(lab):
    assert lab.stop("h1", "gateway") is True
    assert not lab.health("h1").ok

    lab.start("h1", "gateway")

    assert lab.health("h1").ok
    assert "10.100.0.1:8080" in lab.gateway_log("h1")


def test_down_removes_everything(lab):
    lab.run_web("h1", "web-down-1")
    lab.run_web("h2", "web-down-2")
    container_ids = [lab.podman(host, "inspect", "--format", "{{.Id}}", name).stdout.strip()
                     for host, name in (("h1", "web-down-1"), ("h2", "web-down-2"))]
    lab.reload()
    pids = [record.pid for member in lab.state.hosts for record in member.processes.values()]
    # A copy of h1's containers.conf pointing into another directory, to ask podman afterwards:
    # podman creates the network config dir and the events log that its configuration names.
    probe_dir = lab.paths.root.parent / "probe"
    probe_conf = lab.paths.root.parent / "probe-containers.conf"
    probe_conf.write_text(lab.paths.containers_conf("h1").read_text().replace(str(lab.paths.root), str(probe_dir)))

    started = time.monotonic()
    teardown.down(lab_dir=lab.paths.root)
    print(f"lab down: {time.monotonic() - started:.2f} s")

    assert namespaces.lab_namespaces() == []
    assert not namespaces.OWNER_FILE.exists()
    assert not lab.paths.root.exists()
    for pid in pids:
        assert _ended(pid), command_line(pid)
    for container_id in container_ids:
        exists = subprocess.run(["podman", "container", "exists", container_id],
                                env={**os.environ, "CONTAINERS_CONF": str(probe_conf)}, timeout=60)
        assert exists.returncode == 1
        assert not os.path.exists(f"/var/lib/cni/results/{layout.NETWORK_NAME}-{container_id}-eth0")

    teardown.down(lab_dir=lab.paths.root)


def _probe_conf(lab, directory) -> dict[str, str]:
    """Return an environment whose podman lists the lab's containers but writes only under ``directory``.

    podman creates the network config dir and the events log that its configuration names.
    """
    conf = directory / "probe-containers.conf"
    conf.write_text(lab.paths.containers_conf("h1").read_text().replace(str(lab.paths.root), str(directory / "probe")))
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def test_down_removes_lab_whose_dir_is_gone(tmp_path):
    _require_lab()
    lab_dir = tmp_path / "gone"
    lab = build.up(hosts=2, lab_dir=lab_dir)
    try:
        lab.run_web("h2", "web-gone")
        container_id = lab.podman("h2", "inspect", "--format", "{{.Id}}", "web-gone").stdout.strip()
        pids = _lab_pids(lab)
        probe_env = _probe_conf(lab, tmp_path)
        shutil.rmtree(lab_dir)

        refused = _flatnet("lab", "down", lab_dir=tmp_path / "other")
        result = _flatnet("lab", "down", lab_dir=lab_dir)
    finally:
        teardown.down(lab_dir=lab_dir, force=True)

    assert refused.returncode == 1
    assert f"`FLATNET_LAB_DIR={lab_dir} flatnet lab down`" in refused.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert "containers removed (1)" in result.stdout
    assert namespaces.lab_namespaces() == []
    assert not namespaces.OWNER_FILE.exists()
    for pid in pids:
        assert _ended(pid), command_line(pid)
    exists = subprocess.run(["podman", "container", "exists", container_id], env=probe_env, timeout=60)
    assert exists.returncode == 1
    assert not os.path.exists(f"/var/lib/cni/results/{layout.NETWORK_NAME}-{container_id}-eth0")


def test_force_removes_lab_without_owner(tmp_path):
    _require_lab()
    lab_dir = tmp_path / "unowned"
    lab = build.up(hosts=2, lab_dir=lab_dir)
    try:
        pids = _lab_pids(lab)
        # A lab whose directory and owner record are both gone: nothing names its directory.
        namespaces.forget_owner()
        shutil.rmtree(lab_dir)

        refused = _flatnet("lab", "down", lab_dir=tmp_path / "other")
        namespaces_after_refusal = namespaces.lab_namespaces()
        result = _flatnet("lab", "down", "--force", lab_dir=tmp_path / "other")
    finally:
        teardown.down(lab_dir=lab_dir, force=True)

    assert refused.returncode == 1
    assert "`flatnet lab down --force`" in refused.stderr
    assert namespaces_after_refusal == LAB_NAMESPACES
    assert result.returncode == 0, result.stdout + result.stderr
    assert namespaces.lab_namespaces() == []
    for pid in pids:
        assert _ended(pid), command_line(pid)
