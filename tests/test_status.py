"""`flatnet status` without a lab: its table layout and its checks of --api and --watch."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from flatnet import status
from flatnet.errors import FlatnetError
from flatnet.lab.progress import display_width

FLATNET = str(Path(sys.executable).parent / "flatnet")


def _peer(state: str, last_heard_seconds: float, remote: int, replica: int, **extra) -> dict:
    lag = remote - replica
    return dict(
        state=state, lastHeardSecondsAgo=last_heard_seconds, remoteHead=remote, replicaHead=replica, expired=False,
        lag=lag, inSync=state == "connected" and lag == 0, **extra,
    )


# A fleet of three peers as collect() returns it: one in sync, one behind, one with no address configured.
STATUS = {
    "api": "http://10.100.0.1:8080", "hostId": 1, "node": "0123456789abcdef", "epoch": 3, "uptimeSeconds": 4000,
    "vector": {}, "containers": 3, "hosts": {"2": {"containers": 2, "expired": False}, "3": {"containers": 1, "expired": False}},
    "peers": {
        "2": _peer("connected", 1, 40, 40, address="http://10.100.0.2:8080", inSyncSince="2026-01-02T03:04:05Z"),
        "3": _peer("disconnected", 300, 12, 7, address="http://10.100.0.3:8080", repairs=2),
        "14": _peer("connecting", 9000, 0, 0, address=None),
    },
    "conflicts": {},
}


def _cells(line: str) -> list[tuple[int, int]]:
    """Return the (first, last + 1) terminal columns of each cell of a table line; cells are 2+ spaces apart."""
    return [
        (display_width(line[: match.start()]), display_width(line[: match.end()]))
        for match in re.finditer(r"\S+(?: \S+)*", line)
    ]


def _peer_table(text: str) -> list[str]:
    """Return the header and rows of the peer table in ``text``."""
    lines = text.splitlines()
    title = next(index for index, line in enumerate(lines) if line in ("Peers", "ピア"))
    return lines[title + 1 : title + 2 + len(STATUS["peers"])]


@pytest.mark.parametrize("lang", ["C", "ja_JP.UTF-8"])
def test_peer_table_columns_line_up(monkeypatch, lang):
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.setenv("LANG", lang)

    header, *rows = _peer_table(status.render(STATUS))

    header_cells = _cells(header)
    assert len(header_cells) == 6, header
    for row in rows:
        cells = _cells(row)
        assert len(cells) == 6, row
        # PEER, ADDRESS, STATE and SYNC are left-aligned, LAST HEARD and LAG right-aligned.
        for column in (0, 1, 2, 5):
            assert cells[column][0] == header_cells[column][0], f"column {column}\n{header}\n{row}"
        for column in (3, 4):
            assert cells[column][1] == header_cells[column][1], f"column {column}\n{header}\n{row}"


def test_japanese_header_is_padded_by_display_width(monkeypatch):
    monkeypatch.setenv("LC_ALL", "ja_JP.UTF-8")

    header, first, *_ = _peer_table(status.render(STATUS))

    # "ピア" takes 4 columns, wider than every peer id, so the address column starts 2 columns after it.
    assert header.startswith("  ピア  アドレス")
    assert first.startswith("  2     http://10.100.0.2:8080")


def _flatnet(*arguments: str, lang: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FLATNET, *arguments], env={"PATH": "/usr/bin:/bin", "LANG": lang}, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("value", ["0", "-1", "abc", "inf"])
def test_watch_out_of_range_is_usage_error(value):
    result = _flatnet("status", "--watch", value, lang="C")

    assert result.returncode == 2
    assert f"argument --watch: {value!r} is invalid: give a number of seconds above 0, e.g. --watch 2" in result.stderr


def test_watch_zero_in_japanese():
    result = _flatnet("status", "--watch", "0", lang="ja_JP.UTF-8")

    assert result.returncode == 2
    assert "引数 --watch: '0' は無効です。0 より大きい秒数を指定してください（例: --watch 2）" in result.stderr
    assert "0.0" not in result.stderr


@pytest.mark.parametrize(("value", "reason"), [
    ("notaurl", "the scheme must be http or https"),
    ("10.100.0.1:8080", "the scheme must be http or https"),
    ("http://:8080", "the host is missing"),
    ("http://10.100.0.1:99999", "the port is not a number from 1 to 65535"),
])
def test_invalid_api_url_is_usage_error(value, reason):
    result = _flatnet("status", "--api", value, lang="C")

    assert result.returncode == 2
    assert f"argument --api: {value!r} is not an http(s) URL ({reason})" in result.stderr
    assert "e.g. --api http://10.100.0.1:8080" in result.stderr
    assert "JSON" not in result.stderr


def test_api_that_is_not_a_url_in_japanese():
    result = _flatnet("status", "--api", "notaurl", lang="ja_JP.UTF-8")

    assert result.returncode == 2
    assert "引数 --api: 'notaurl' は http(s) の URL ではありません（スキームは http か https にしてください）" in result.stderr
    assert "応答が不正です" not in result.stderr


def test_collect_checks_the_api_url(monkeypatch):
    monkeypatch.setenv("LC_ALL", "C")

    with pytest.raises(FlatnetError, match="'notaurl' is not an http\\(s\\) URL"):
        status.collect(None, "notaurl")
