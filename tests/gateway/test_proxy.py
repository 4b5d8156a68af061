"""The LAN proxy routes by Host: locally, through the owning peer, or 404."""

import json

import pytest

from tests.gateway.harness import http, wait_until

pytestmark = pytest.mark.root


def test_local_container_is_proxied_directly(fleet):
    gateways = fleet(host_ids=(1,))
    fleet.web("web-a1", "10.100.1.10", 8001)
    gateways[1].add_container("web-a1", "10.100.1.10", ports=[8001])

    status, body = http(gateways[1].netns, "GET", f"{gateways[1].proxy}/", headers={"Host": "WEB-A1.flatnet."})

    assert status == 200
    assert body == "web-a1\n"
    assert "decision=local" in gateways[1].access_log.read_text()


def test_remote_container_is_reached_through_its_gateway(fleet):
    gateways = fleet()
    fleet.web("web-b1", "10.100.2.10", 8002)
    gateways[2].add_container("web-b1", "10.100.2.10", ports=[8002])
    wait_until(lambda: any(e["hostname"] == "web-b1" for e in gateways[1].containers()), 5, "web-b1 on gateway 1")

    status, body = http(gateways[1].netns, "GET", f"{gateways[1].proxy}/", headers={"Host": "web-b1.flatnet:80"})

    assert status == 200
    assert body == "web-b1\n"
    assert "decision=peer" in gateways[1].access_log.read_text()
    assert "hop=1" in gateways[2].access_log.read_text()
    decisions = [json.loads(line) for line in (gateways[1].data_dir / "decisions" / "decisions.jsonl").read_text().splitlines()]
    assert decisions[-1]["decision"] == "peer"
    assert decisions[-1]["owner"] == 2


def test_unknown_name_gets_404_naming_it(fleet):
    gateway = fleet(host_ids=(1,))[1]

    status, body = http(gateway.netns, "GET", f"{gateway.proxy}/", headers={"Host": "nobody.flatnet"})

    assert status == 404
    assert "'nobody'" in body


def test_unknown_name_answered_in_japanese_when_preferred(fleet):
    gateway = fleet(host_ids=(1,))[1]

    status, body = http(
        gateway.netns, "GET", f"{gateway.proxy}/", headers={"Host": "nobody.flatnet", "Accept-Language": "ja,en;q=0.5"}
    )

    assert status == 404
    assert "登録されていません" in body


def test_host_outside_domain_gets_400(fleet):
    gateway = fleet(host_ids=(1,))[1]

    status, body = http(gateway.netns, "GET", f"{gateway.proxy}/", headers={"Host": "example.com"})

    assert status == 400
    assert "example.com" in body


def test_lan_proxy_never_serves_the_api(fleet):
    gateway = fleet(host_ids=(1,))[1]

    status, _ = http(gateway.netns, "GET", f"{gateway.proxy}/api/containers", headers={"Host": "nobody.flatnet"})

    assert status == 404


def test_unreachable_container_gets_502(fleet):
    gateways = fleet(host_ids=(1,))
    gateways[1].add_container("dead", "10.100.1.99", ports=[8009])

    status, body = http(gateways[1].netns, "GET", f"{gateways[1].proxy}/", headers={"Host": "dead.flatnet"})

    assert status == 502
    assert "dead" in body
