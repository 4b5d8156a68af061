"""Route apply against a real kernel, in a throwaway namespace: netlink directly, and `flatnet routes`."""

import subprocess
import sys
from pathlib import Path

import pytest

from flatnet.gateway.route_settings import RouteMode, RouteSettings
from flatnet.lab.namespaces import call_in
from flatnet.routes import Fleet, RouteError, RouteTable, Status, apply, plan, survey
from tests.routes.conftest import NEXT_HOP, ip, routes

pytestmark = pytest.mark.root

DEV = RouteSettings(mode=RouteMode.DEV, device="nebula1")
VIA = RouteSettings(mode=RouteMode.VIA, via=NEXT_HOP)
FLEET = Fleet(host_id=1, peers=frozenset({2, 3}))
FLATNET = str(Path(sys.executable).with_name("flatnet"))


def reconcile(netns: str, settings: RouteSettings, fleet: Fleet = FLEET):
    """Survey, plan and apply inside ``netns``; return the rows found and the result."""
    def work():
        with RouteTable() as table:
            rows = survey(table, settings, fleet)
            return rows, apply(table, plan(rows))

    return call_in(netns, work)


def test_apply_adds_routes_into_the_tun(host_netns):
    _, result = reconcile(host_netns, DEV)

    assert not result.failed
    assert routes(host_netns, "10.100.2.0/24") == ["10.100.2.0/24 dev nebula1 proto 102 scope link metric 50 linkdown"]
    assert routes(host_netns, "10.100.3.0/24") == ["10.100.3.0/24 dev nebula1 proto 102 scope link metric 50 linkdown"]


def test_apply_twice_changes_nothing(host_netns):
    reconcile(host_netns, DEV)

    rows, result = reconcile(host_netns, DEV)

    assert result.done == []
    assert {row.status for row in rows} == {Status.OK}


def test_via_mode_routes_through_the_next_hop(host_netns):
    _, result = reconcile(host_netns, VIA)

    assert not result.failed
    assert routes(host_netns, "10.100.2.0/24") == [f"10.100.2.0/24 via {NEXT_HOP} dev eth0 proto 102 metric 50"]


def test_switching_mode_replaces_flatnet_routes(host_netns):
    reconcile(host_netns, DEV)

    _, result = reconcile(host_netns, VIA)

    assert [change.action.value for change in result.done] == ["replace", "replace"]
    assert routes(host_netns, "10.100.3.0/24") == [f"10.100.3.0/24 via {NEXT_HOP} dev eth0 proto 102 metric 50"]


def test_expired_host_route_is_removed(host_netns):
    reconcile(host_netns, DEV)

    _, result = reconcile(host_netns, DEV, Fleet(host_id=1, peers=frozenset({2, 3}), expired=frozenset({3})))

    assert [(change.action.value, str(change.route.prefix)) for change in result.done] == [("delete", "10.100.3.0/24")]
    assert routes(host_netns, "10.100.3.0/24") == []
    assert routes(host_netns, "10.100.2.0/24") != []


def test_foreign_routes_are_never_touched(host_netns):
    ip(host_netns, "route", "add", "10.100.77.0/24", "dev", "nebula1", "proto", "static")
    ip(host_netns, "route", "add", "10.100.2.0/24", "dev", "nebula1", "metric", "100")
    ip(host_netns, "route", "add", "10.100.3.0/24", "via", NEXT_HOP, "metric", "50")
    before = ip(host_netns, "route", "show", "proto", "static") + ip(host_netns, "route", "show", "proto", "boot")

    rows, result = reconcile(host_netns, DEV, Fleet(host_id=1, peers=frozenset({2})))

    after = ip(host_netns, "route", "show", "proto", "static") + ip(host_netns, "route", "show", "proto", "boot")
    assert after == before
    assert [str(change.route.prefix) for change in result.done] == ["10.100.2.0/24"]
    foreign = {str(row.prefix) for row in rows if row.status is Status.FOREIGN}
    assert foreign == {"10.100.2.0/24", "10.100.3.0/24", "10.100.77.0/24"}


def test_foreign_route_with_same_key_blocks_without_error(host_netns):
    ip(host_netns, "route", "add", "10.100.2.0/24", "dev", "nebula1", "metric", "50", "proto", "static")

    rows, result = reconcile(host_netns, DEV, Fleet(host_id=1, peers=frozenset({2})))

    assert result.done == []
    assert result.failed == []
    assert [row.blocked for row in rows if row.status is Status.MISSING] == [True]
    assert routes(host_netns, "10.100.2.0/24") == ["10.100.2.0/24 dev nebula1 proto static scope link metric 50 linkdown"]


def test_missing_device_names_nebula(host_netns):
    ip(host_netns, "link", "del", "nebula1")

    _, result = reconcile(host_netns, DEV)

    assert len(result.failed) == 2
    message = result.failed[0][1].english()
    assert message == (
        "failed to add route 10.100.2.0/24 dev nebula1 metric 50 proto 102: "
        "device nebula1 does not exist; is Nebula running on this host?"
    )


def test_unreachable_next_hop_names_the_setting(host_netns):
    settings = RouteSettings(mode=RouteMode.VIA, via="198.18.200.1")

    _, result = reconcile(host_netns, settings)

    assert isinstance(result.failed[0][1], RouteError)
    assert "the next hop 198.18.200.1 is not on a directly connected network" in result.failed[0][1].english()


def _config(tmp_path: Path, mode: str = "dev") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text("\n".join([
        "host_id = 1",
        f'data_dir = "{tmp_path / "data"}"',
        'api_listen = "127.0.1.1:8080"',
        'proxy_listen = "127.0.1.1:8000"',
        "[routes]",
        f'mode = "{mode}"',
        f'via = "{NEXT_HOP}"',
        "[[peers]]", "host_id = 2", 'api = "http://10.100.0.2:8080"',
        "[[peers]]", "host_id = 3", 'api = "http://10.100.0.3:8080"',
    ]) + "\n")
    return path


def flatnet_in(netns: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{netns}", FLATNET, *arguments],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
    )


def test_cli_dry_run_changes_nothing(host_netns, tmp_path):
    result = flatnet_in(host_netns, "routes", "apply", "--dry-run", "--config", str(_config(tmp_path)))

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "would add route 10.100.2.0/24 dev nebula1 metric 50 proto 102",
        "would add route 10.100.3.0/24 dev nebula1 metric 50 proto 102",
    ]
    assert routes(host_netns, "10.100.2.0/24") == []


def test_cli_apply_logs_and_show_lists(host_netns, tmp_path):
    config = str(_config(tmp_path))
    ip(host_netns, "route", "add", "10.100.9.0/24", "dev", "nebula1", "proto", "102", "metric", "50")

    applied = flatnet_in(host_netns, "routes", "apply", "--config", config)
    shown = flatnet_in(host_netns, "routes", "show", "--config", config)

    assert applied.returncode == 0, applied.stderr
    assert "INFO flatnet.routes: deleted route 10.100.9.0/24 dev nebula1 metric 50 proto 102: stale (host 9 is not a peer)" in applied.stderr
    assert "INFO flatnet.routes: added route 10.100.2.0/24 dev nebula1 metric 50 proto 102" in applied.stderr
    assert "the gateway at http://127.0.1.1:8080 did not answer" in applied.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["PREFIX", "STATUS", "HOST", "WANTED", "IN", "THE", "KERNEL", "NOTE"]
    assert [line.split()[:3] for line in lines[1:]] == [["10.100.2.0/24", "ok", "2"], ["10.100.3.0/24", "ok", "3"]]


def test_cli_apply_refuses_mode_off(host_netns, tmp_path):
    result = flatnet_in(host_netns, "routes", "apply", "--config", str(_config(tmp_path, mode="off")))

    assert result.returncode == 1
    assert '[routes] mode is "off"' in result.stderr


def test_cli_apply_fails_when_a_route_fails(host_netns, tmp_path):
    ip(host_netns, "link", "del", "nebula1")

    result = flatnet_in(host_netns, "routes", "apply", "--config", str(_config(tmp_path)))

    assert result.returncode == 1
    assert "device nebula1 does not exist" in result.stderr


def test_script_wraps_routes_apply(host_netns, tmp_path):
    script = Path(__file__).resolve().parents[2] / "scripts" / "cross-host-routing.sh"

    result = subprocess.run(
        ["nsenter", f"--net=/run/netns/{host_netns}", str(script), "--dry-run", "--config", str(_config(tmp_path))],
        capture_output=True, text=True, timeout=60, env={"PATH": f"{Path(FLATNET).parent}:/usr/sbin:/usr/bin:/sbin:/bin"},
    )

    assert result.returncode == 0, result.stderr
    assert "would add route 10.100.2.0/24 dev nebula1 metric 50 proto 102" in result.stdout
