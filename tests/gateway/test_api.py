"""The internal API rejects bad input with errors that name the value."""

import json

import pytest

from tests.gateway.harness import http

pytestmark = pytest.mark.root


def test_post_for_another_host_is_forbidden(fleet):
    gateway = fleet(host_ids=(1,))[1]
    body = {"id": "a" * 12, "ip": "10.100.2.10", "hostname": "x", "hostId": 2, "createdAt": "2026-12-04T10:00:00Z"}

    status, text = http(gateway.netns, "POST", f"{gateway.api}/api/containers", body=body)

    assert status == 403
    assert "hostId 2" in json.loads(text)["error"]


def test_post_with_invalid_hostname_names_the_field(fleet):
    gateway = fleet(host_ids=(1,))[1]
    body = {"id": "a" * 12, "ip": "10.100.1.10", "hostname": "bad name!", "hostId": 1, "createdAt": "2026-12-04T10:00:00Z"}

    status, text = http(gateway.netns, "POST", f"{gateway.api}/api/containers", body=body)

    assert status == 400
    problems = json.loads(text)["problems"]
    assert [problem["field"] for problem in problems] == ["hostname"]


def test_post_with_address_outside_subnet_is_rejected(fleet):
    gateway = fleet(host_ids=(1,))[1]
    body = {"id": "a" * 12, "ip": "10.100.7.10", "hostname": "x", "hostId": 1, "createdAt": "2026-12-04T10:00:00Z"}

    status, text = http(gateway.netns, "POST", f"{gateway.api}/api/containers", body=body)

    assert status == 400
    assert "10.100.1.0/24" in json.loads(text)["error"]


def test_event_stream_rejects_after_beyond_head(fleet):
    gateway = fleet(host_ids=(1,))[1]

    status, text = http(gateway.netns, "GET", f"{gateway.api}/api/events?origin=1&after=5")

    assert status == 409
    assert json.loads(text)["error"] == "reset"


def test_event_stream_rejects_bad_query(fleet):
    gateway = fleet(host_ids=(1,))[1]

    status, text = http(gateway.netns, "GET", f"{gateway.api}/api/events?origin=300&after=0")

    assert status == 400
    assert "origin" in json.loads(text)["error"]
