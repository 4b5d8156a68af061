"""What the real plugin does in network namespaces, on the fast path and in-process alike.

Each test runs once per path (the ``plugin`` fixture), with a data directory of
its own; see conftest.py for the hosts.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from flatnet.cni import faults, spec
from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED
from tests.cni.conftest import (
    BRIDGE,
    FAST,
    GATEWAY,
    HOST_ID,
    MTU,
    container_address,
    ip_json,
    ipv4_addresses,
    link_names,
)

pytestmark = pytest.mark.root

VERSIONS = ["0.3.1", "0.4.0", "1.0.0"]


def new_id() -> str:
    return uuid.uuid4().hex


def last_change(plugin, container_id: str) -> str | None:
    changes = [change["type"] for change in plugin.announced() if change["id"] == container_id]
    return changes[-1] if changes else None


# ADD


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_describes_interfaces(plugin, version):
    netns = plugin.container()

    result = plugin.add(new_id(), netns, version=version)

    assert result["cniVersion"] == version
    assert all(interface.get("mac") for interface in result["interfaces"])
    sandboxed = [interface for interface in result["interfaces"] if interface.get("sandbox")]
    assert [interface["name"] for interface in sandboxed] == ["eth0"]
    assert sandboxed[0]["sandbox"] == netns
    assert result["interfaces"][0]["name"] == BRIDGE


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_ips_point_at_container_interface(plugin, version):
    result = plugin.add(new_id(), plugin.container(), version=version)

    assert len(result["ips"]) == 1
    ip = result["ips"][0]
    assert ip["address"] == f"10.100.{HOST_ID}.10/24"
    assert ip["gateway"] == GATEWAY
    assert result["interfaces"][ip["interface"]]["name"] == "eth0"
    assert result["interfaces"][ip["interface"]].get("sandbox")
    if version == "1.0.0":
        assert "version" not in ip
    else:
        assert ip["version"] == "4"


def test_add_takes_the_path_under_test(plugin):
    container_id = new_id()

    plugin.add(container_id, plugin.container())

    assert plugin.used_fast_path("ADD", container_id) is (plugin.path == FAST)


def test_add_configures_container_eth0(plugin):
    netns = plugin.container()
    name = Path(netns).name

    result = plugin.add(new_id(), netns)

    assert ipv4_addresses(name, "eth0") == [container_address(result)]
    routes = ip_json("-n", name, "route", "show", "default")
    assert [(route["gateway"], route["dev"]) for route in routes] == [(GATEWAY, "eth0")]
    eth0 = ip_json("-n", name, "link", "show", "eth0")[0]
    assert eth0["mtu"] == MTU
    assert "UP" in eth0["flags"]
    assert eth0["address"] == result["interfaces"][2]["mac"]


def test_add_sets_bridge_gateway_and_mtu(plugin):
    plugin.add(new_id(), plugin.container())

    bridge = ip_json("-n", plugin.name, "link", "show", BRIDGE)[0]
    assert ipv4_addresses(plugin.name, BRIDGE) == [f"{GATEWAY}/24"]
    assert bridge["mtu"] == MTU
    assert "UP" in bridge["flags"]


def test_host_veth_is_attached_to_bridge(plugin):
    result = plugin.add(new_id(), plugin.container())
    host_veth = result["interfaces"][1]["name"]

    link = ip_json("-n", plugin.name, "link", "show", host_veth)[0]

    assert link["master"] == BRIDGE
    assert link["address"] == result["interfaces"][1]["mac"]


def test_two_containers_get_consecutive_addresses(plugin):
    first = plugin.add(new_id(), plugin.container())
    second = plugin.add(new_id(), plugin.container())

    assert container_address(first) == f"10.100.{HOST_ID}.10/24"
    assert container_address(second) == f"10.100.{HOST_ID}.11/24"


def test_add_announces_container(plugin):
    container_id = new_id()

    result = plugin.add(container_id, plugin.container(), args="IgnoreUnknown=1;K8S_POD_NAME=web-1")

    added = [change for change in plugin.announced() if change["id"] == container_id]
    assert [change["type"] for change in added] == [CONTAINER_ADDED]
    assert added[0]["hostname"] == "web-1"
    assert added[0]["ip"] == container_address(result).split("/")[0]
    assert added[0]["hostId"] == HOST_ID
    assert added[0]["ifname"] == "eth0"


def test_ports_and_aliases_are_announced(plugin):
    container_id = new_id()
    runtime = {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}, {"hostPort": 53, "containerPort": 53, "protocol": "udp"}],
        "aliases": {"flatnet": ["api", "www"], "elsewhere": ["other"]},
    }

    plugin.add(container_id, plugin.container(), runtimeConfig=runtime)

    added = next(change for change in plugin.announced() if change["id"] == container_id)
    assert added["ports"] == [80]
    assert added["aliases"] == ["api", "www"]


def test_repeated_add_returns_same_attachment_and_touches_nothing(plugin):
    container_id, netns = new_id(), plugin.container()
    first = plugin.add(container_id, netns)
    reservations = plugin.reservations()
    veths = plugin.host.host_veths()

    again = plugin.add(container_id, netns)

    assert again == first
    assert plugin.reservations() == reservations
    assert plugin.host.host_veths() == veths
    assert [change["type"] for change in plugin.announced() if change["id"] == container_id] == [CONTAINER_ADDED]


def test_add_over_foreign_interface_fails_and_frees_address(plugin):
    netns = plugin.container()
    subprocess.run(["ip", "-n", Path(netns).name, "link", "add", "eth0", "type", "veth", "peer", "name", "other0"], check=True)
    container_id = new_id()

    run = plugin.run("ADD", container_id, netns)

    assert run.returncode == 1
    assert run.document()["code"] == spec.INTERFACE_EXISTS
    assert "eth0" in run.document()["msg"]
    assert container_id not in plugin.reservations()
    assert last_change(plugin, container_id) != CONTAINER_ADDED


def test_requested_ip_is_given_exactly(plugin):
    netns = plugin.container()

    result = plugin.add(new_id(), netns, args=f"IgnoreUnknown=1;IP=10.100.{HOST_ID}.50")

    assert container_address(result) == f"10.100.{HOST_ID}.50/24"
    assert ipv4_addresses(Path(netns).name, "eth0") == [f"10.100.{HOST_ID}.50/24"]


def test_requested_ip_held_by_another_fails(plugin):
    holder = new_id()
    plugin.add(holder, plugin.container(), args=f"IP=10.100.{HOST_ID}.50")
    container_id, netns = new_id(), plugin.container()

    run = plugin.run("ADD", container_id, netns, args=f"IP=10.100.{HOST_ID}.50")

    assert run.returncode == 1
    assert run.document()["code"] == spec.ADDRESS_UNAVAILABLE
    assert f"10.100.{HOST_ID}.50" in run.document()["msg"]
    assert holder in run.document()["msg"]
    assert "eth0" not in link_names(Path(netns).name)
    assert container_id not in plugin.reservations()


@pytest.mark.parametrize("requested", ["10.100.7.5", "10.100.8.20", "10.100.7.1"])
def test_requested_ip_outside_range_fails(plugin, requested):
    run = plugin.run("ADD", new_id(), plugin.container(), args=f"IP={requested}")

    assert run.returncode == 1
    assert run.document()["code"] == spec.ADDRESS_UNAVAILABLE
    assert requested in run.document()["msg"]
    assert plugin.reservations() == {}


def test_requested_mac_is_given_exactly(plugin):
    netns = plugin.container()

    result = plugin.add(new_id(), netns, args="MAC=02:fa:17:00:00:2a")

    assert result["interfaces"][2]["mac"] == "02:fa:17:00:00:2a"
    assert ip_json("-n", Path(netns).name, "link", "show", "eth0")[0]["address"] == "02:fa:17:00:00:2a"


def test_invalid_mac_fails_before_any_change(plugin):
    run = plugin.run("ADD", new_id(), plugin.container(), args="MAC=01:00:5e:00:00:01")

    assert run.returncode == 1
    assert run.document()["code"] == spec.INVALID_ENVIRONMENT
    assert "01:00:5e:00:00:01" in run.document()["msg"]
    assert plugin.reservations() == {}


@pytest.mark.parametrize("point", faults.ADD_POINTS)
def test_failed_add_undoes_everything(plugin, point):
    container_id, netns = new_id(), plugin.container()
    veths = plugin.host.host_veths()

    run = plugin.run("ADD", container_id, netns, fault=f"{point}:fail")

    assert run.returncode == 1
    assert point in run.document()["msg"]
    assert container_id not in plugin.reservations()
    assert "eth0" not in link_names(Path(netns).name)
    assert plugin.host.host_veths() == veths
    assert last_change(plugin, container_id) in (None, CONTAINER_REMOVED)
    plugin.delete(container_id, netns)


def test_add_into_missing_netns_frees_address(plugin):
    failed = plugin.run("ADD", new_id(), f"/run/netns/fntest-cni-missing-{uuid.uuid4().hex[:8]}")
    later = plugin.add(new_id(), plugin.container(), reuseDelay=0)

    assert failed.returncode == 1
    assert failed.document()["code"] == spec.NETLINK_FAILURE
    assert container_address(later) == f"10.100.{HOST_ID}.11/24"
    assert len(plugin.reservations()) == 1


def test_exhausted_range_names_the_range(plugin):
    single = {"rangeStart": f"10.100.{HOST_ID}.10", "rangeEnd": f"10.100.{HOST_ID}.10"}
    plugin.add(new_id(), plugin.container(), **single)

    run = plugin.run("ADD", new_id(), plugin.container(), **single)

    assert run.returncode == 1
    assert run.document()["code"] == spec.ADDRESSES_EXHAUSTED
    assert f"10.100.{HOST_ID}.10-10.100.{HOST_ID}.10" in run.document()["msg"]


# Addresses over time


def test_cursor_survives_plugin_processes(plugin):
    container_id, netns = new_id(), plugin.container()
    plugin.add(container_id, netns, reuseDelay=0)
    plugin.delete(container_id, netns, reuseDelay=0)

    later = plugin.add(new_id(), plugin.container(), reuseDelay=0)

    assert container_address(later) == f"10.100.{HOST_ID}.11/24"


def test_released_address_waits_while_others_are_free(plugin):
    small = {"rangeStart": f"10.100.{HOST_ID}.10", "rangeEnd": f"10.100.{HOST_ID}.12", "reuseDelay": 2}
    ids = [new_id() for _ in range(3)]
    spaces = [plugin.container() for _ in ids]
    for container_id, netns in zip(ids, spaces):
        plugin.add(container_id, netns, **small)
    plugin.delete(ids[1], spaces[1], **small)
    # .11 now was released longer than reuseDelay ago; .10 is released just now.
    time.sleep(2.5)
    plugin.delete(ids[0], spaces[0], **small)

    later = plugin.add(new_id(), plugin.container(), **small)

    assert container_address(later) == f"10.100.{HOST_ID}.11/24"


def test_only_recently_released_addresses_left_are_given_out(plugin):
    small = {"rangeStart": f"10.100.{HOST_ID}.10", "rangeEnd": f"10.100.{HOST_ID}.10"}
    container_id, netns = new_id(), plugin.container()
    plugin.add(container_id, netns, **small)
    plugin.delete(container_id, netns, **small)

    later = plugin.add(new_id(), plugin.container(), **small)

    assert container_address(later) == f"10.100.{HOST_ID}.10/24"


# DEL


@pytest.mark.parametrize("version", VERSIONS)
def test_del_frees_address_and_interface(plugin, version):
    container_id, netns = new_id(), plugin.container()
    plugin.add(container_id, netns, version=version)

    deleted = plugin.run("DEL", container_id, netns, version=version)

    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert deleted.stdout == ""
    assert "eth0" not in link_names(Path(netns).name)
    assert container_id not in plugin.reservations()


def test_del_with_prev_result_succeeds(plugin):
    container_id, netns = new_id(), plugin.container()
    result = plugin.add(container_id, netns)

    plugin.delete(container_id, netns, prevResult=result)

    assert container_id not in plugin.reservations()


def test_repeated_del_exits_zero(plugin):
    container_id, netns = new_id(), plugin.container()
    plugin.add(container_id, netns)

    plugin.delete(container_id, netns)
    plugin.delete(container_id, netns)

    removals = [change for change in plugin.announced() if change["id"] == container_id and change["type"] == CONTAINER_REMOVED]
    assert len(removals) == 1


def test_del_after_netns_gone_frees_address(plugin):
    container_id, netns = new_id(), plugin.container()
    plugin.add(container_id, netns)
    plugin.remove_container(netns)

    plugin.delete(container_id, netns)

    assert container_id not in plugin.reservations()
    assert "is gone" in (plugin.data_dir / "cni.log").read_text()


def test_del_without_netns_frees_address(plugin):
    container_id = new_id()
    plugin.add(container_id, plugin.container())

    plugin.delete(container_id, "")

    assert container_id not in plugin.reservations()


def test_del_of_unknown_container_frees_nothing(plugin):
    holder = new_id()
    plugin.add(holder, plugin.container())
    stranger = new_id()

    plugin.delete(stranger, plugin.container())

    assert holder in plugin.reservations()
    assert last_change(plugin, stranger) is None


def test_del_of_other_interface_frees_nothing(plugin):
    container_id, netns = new_id(), plugin.container()
    plugin.add(container_id, netns, ifname="eth0")

    plugin.delete(container_id, netns, ifname="eth1")

    assert "eth0" in link_names(Path(netns).name)
    assert container_id in plugin.reservations()
    assert last_change(plugin, container_id) == CONTAINER_ADDED


def test_del_announces_removal(plugin):
    container_id, netns = new_id(), plugin.container()
    plugin.add(container_id, netns)

    plugin.delete(container_id, netns)

    assert last_change(plugin, container_id) == CONTAINER_REMOVED


# CHECK


def test_check_after_add_passes(plugin):
    container_id, netns = new_id(), plugin.container()
    result = plugin.add(container_id, netns)

    check = plugin.run("CHECK", container_id, netns, prevResult=result)

    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout == ""


def test_check_without_prev_result_is_code_7(plugin):
    container_id, netns = new_id(), plugin.container()
    plugin.add(container_id, netns)

    check = plugin.run("CHECK", container_id, netns)

    assert check.returncode == 1
    assert check.document()["code"] == spec.INVALID_NETWORK_CONFIG
    assert "prevResult" in check.document()["msg"]


def test_check_notices_missing_address(plugin):
    container_id, netns = new_id(), plugin.container()
    result = plugin.add(container_id, netns)
    subprocess.run(["ip", "-n", Path(netns).name, "addr", "flush", "dev", "eth0"], check=True)

    check = plugin.run("CHECK", container_id, netns, prevResult=result)

    assert check.returncode == 1
    assert check.document()["code"] == spec.CHECK_FAILED
    assert container_address(result) in check.document()["msg"]


def test_check_notices_changed_mac(plugin):
    container_id, netns = new_id(), plugin.container()
    result = plugin.add(container_id, netns)
    subprocess.run(["ip", "-n", Path(netns).name, "link", "set", "eth0", "address", "02:00:00:00:0b:0b"], check=True)

    check = plugin.run("CHECK", container_id, netns, prevResult=result)

    assert check.returncode == 1
    assert check.document()["code"] == spec.CHECK_FAILED
    assert "02:00:00:00:0b:0b" in check.document()["msg"]


def test_check_notices_missing_reservation(plugin):
    container_id, netns = new_id(), plugin.container()
    result = plugin.add(container_id, netns)
    plugin.delete(container_id, "")

    check = plugin.run("CHECK", container_id, netns, prevResult=result)

    assert check.returncode == 1
    assert check.document()["code"] == spec.CHECK_FAILED
    assert "holds no address" in check.document()["msg"]


# GC and STATUS (CNI 1.1)


def test_gc_frees_attachments_not_listed(plugin):
    kept, stale = new_id(), new_id()
    plugin.add(kept, plugin.container(), version="1.1.0")
    plugin.add(stale, plugin.container(), version="1.1.0")
    valid = [{"containerID": kept, "ifname": "eth0"}]

    run = plugin.run("GC", version="1.1.0", **{"cni.dev/valid-attachments": valid})

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == ""
    assert list(plugin.reservations()) == [kept]
    assert last_change(plugin, stale) == CONTAINER_REMOVED
    assert last_change(plugin, kept) == CONTAINER_ADDED


def test_gc_reads_the_older_key(plugin):
    stale = new_id()
    plugin.add(stale, plugin.container(), version="1.1.0")

    run = plugin.run("GC", version="1.1.0", **{"cni.dev/attachments": []})

    assert run.returncode == 0, run.stdout + run.stderr
    assert plugin.reservations() == {}


def test_gc_without_attachment_list_frees_nothing(plugin):
    kept = new_id()
    plugin.add(kept, plugin.container(), version="1.1.0")

    run = plugin.run("GC", version="1.1.0")

    assert run.returncode == 1
    assert run.document()["code"] == spec.INVALID_NETWORK_CONFIG
    assert list(plugin.reservations()) == [kept]


def test_status_is_ready_with_free_address(plugin):
    run = plugin.run("STATUS", version="1.1.0")

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == ""


def test_status_without_free_address_is_code_50(plugin):
    single = {"rangeStart": f"10.100.{HOST_ID}.10", "rangeEnd": f"10.100.{HOST_ID}.10"}
    plugin.add(new_id(), plugin.container(), version="1.1.0", **single)

    run = plugin.run("STATUS", version="1.1.0", **single)

    assert run.returncode == 1
    assert run.document()["code"] == spec.PLUGIN_NOT_AVAILABLE
    assert f"10.100.{HOST_ID}.10-10.100.{HOST_ID}.10" in run.document()["msg"]


# VERSION and errors


@pytest.mark.parametrize("version", VERSIONS + ["1.1.0"])
def test_version_lists_supported_versions(plugin, version):
    run = plugin.run("VERSION", stdin=json.dumps({"cniVersion": version}).encode())

    assert run.returncode == 0
    assert run.document() == {"cniVersion": version, "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def test_ip_range_of_other_host_is_code_7(plugin):
    run = plugin.run("ADD", new_id(), plugin.container(), ipRange="10.100.8.0/24")

    document = run.document()
    assert run.returncode == 1
    assert document["code"] == spec.INVALID_NETWORK_CONFIG
    assert "10.100.8.0/24" in document["msg"]
    assert f"hostId {HOST_ID}" in document["msg"]


def test_unsupported_cni_version_is_code_1(plugin):
    run = plugin.run("ADD", new_id(), plugin.container(), version="9.9.9")

    assert run.returncode == 1
    assert run.document()["code"] == spec.INCOMPATIBLE_VERSION
    assert "9.9.9" in run.document()["msg"]


def test_invalid_json_is_code_6(plugin):
    run = plugin.run("ADD", new_id(), plugin.container(), stdin=b'{"cniVersion": "1.0.0",')

    assert run.returncode == 1
    assert run.document()["code"] == spec.DECODE_FAILURE


def test_missing_netns_on_add_is_code_4(plugin):
    run = plugin.run("ADD", new_id(), "")

    assert run.returncode == 1
    assert run.document()["code"] == spec.INVALID_ENVIRONMENT
    assert "CNI_NETNS" in run.document()["msg"]
