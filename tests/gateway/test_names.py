"""Host names and languages as the proxy reads them from requests."""

import pytest

from flatnet.gateway.names import HostName, HostProblem, InvalidHost, parse_host, prefers_japanese, split_absolute_target


@pytest.mark.parametrize(("host", "expected"), [
    (b"web.flatnet", HostName("web", None)),
    (b"WEB.Flatnet", HostName("web", None)),
    (b"web.flatnet.", HostName("web", None)),
    (b"web.flatnet:8080", HostName("web", 8080)),
    (b"web.flatnet.:80", HostName("web", 80)),
    (b"my_app.v2.flatnet", HostName("my_app.v2", None)),
    (b"w" * 253 + b".flatnet", HostName("w" * 253, None)),
])
def test_host_is_parsed_to_name_and_port(host, expected):
    assert parse_host(host, "flatnet") == expected


@pytest.mark.parametrize(("host", "problem"), [
    (None, HostProblem.MISSING),
    (b"  ", HostProblem.MISSING),
    (b"[::1]:80", HostProblem.FOREIGN),
    (b"example.com", HostProblem.FOREIGN),
    (b"flatnet", HostProblem.FOREIGN),
    (b".flatnet", HostProblem.MALFORMED),
    (b"web.flatnet:0", HostProblem.MALFORMED),
    (b"web.flatnet:65536", HostProblem.MALFORMED),
    (b"web.flatnet:http", HostProblem.MALFORMED),
    (b"we b.flatnet", HostProblem.MALFORMED),
    (b"-web.flatnet", HostProblem.MALFORMED),
    (b"web..x.flatnet", HostProblem.MALFORMED),
    (b"w" * 254 + b".flatnet", HostProblem.MALFORMED),
])
def test_invalid_host_names_the_problem(host, problem):
    with pytest.raises(InvalidHost) as caught:
        parse_host(host, "flatnet")

    assert caught.value.problem is problem
    assert caught.value.rule


def test_domain_suffix_is_configurable():
    assert parse_host(b"web.lan.example", "lan.example") == HostName("web", None)
    with pytest.raises(InvalidHost):
        parse_host(b"web.flatnet", "lan.example")


def test_absolute_target_gives_authority_and_path():
    assert split_absolute_target(b"http://web.flatnet/a?b=1") == (b"web.flatnet", b"/a?b=1")
    assert split_absolute_target(b"HTTP://web.flatnet") == (b"web.flatnet", b"/")
    assert split_absolute_target(b"/plain") == (None, b"/plain")


@pytest.mark.parametrize(("header", "japanese"), [
    (None, False),
    (b"ja", True),
    (b"ja-JP,ja;q=0.9,en;q=0.8", True),
    (b"en-US,en;q=0.9,ja;q=0.8", False),
    (b"fr, ja;q=0.5", True),
    (b"*;q=0.5, ja;q=0.2", False),
    (b"ja;q=oops", False),
])
def test_japanese_is_preferred_only_when_ranked_above_english(header, japanese):
    assert prefers_japanese(header) is japanese
