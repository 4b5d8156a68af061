"""flatnet replay on the command line: exit codes, text and JSON output, languages, bad usage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.replay.builder import START, Fleet


def _run(*argv: str, lang: str = "C.UTF-8") -> subprocess.CompletedProcess:
    env = dict(os.environ, LANG=lang, LC_ALL="", LC_MESSAGES="")
    return subprocess.run([sys.executable, "-m", "flatnet", "replay", *argv], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A gateway's data directory with consistent and stale decisions, a move and a snapshot."""
    fleet = Fleet(tmp_path_factory.mktemp("cli") / "data")
    web = fleet.add(2, "web", at=START)
    fleet.add(1, "db", at=START + 0.5)
    fleet.deliver()
    fleet.request("web", at=START + 1)
    fleet.request("db", at=START + 1.5)
    fleet.remove(2, web, at=START + 10)
    fleet.add(3, "web", at=START + 10.5, number=20)
    fleet.request("web", at=START + 12, not_here=False, status=502)
    fleet.deliver()
    fleet.request("web", at=START + 13)
    fleet.snapshot(at=START + 14)
    fleet.close()
    return fleet


def test_decisions_text_lists_stale(history):
    result = _run("decisions", "--data-dir", str(history.data_dir))

    assert result.returncode == 0, result.stderr
    assert "stale               1" in result.stdout
    assert "divergent           0" in result.stdout
    assert "2027-01-15T08:00:12.000Z  stale  web" in result.stdout
    assert "owners' logs:  peer owner=3" in result.stdout
    assert "(moved, 2.000 s after the owner's change)" in result.stdout
    assert "result: every decision is consistent or stale" in result.stdout
    assert result.stderr == ""


def test_decisions_json_is_the_same_bytes_every_run(history):
    first = _run("decisions", "--data-dir", str(history.data_dir), "--json")
    second = _run("decisions", "--data-dir", str(history.data_dir), "--json")

    assert first.returncode == 0
    assert first.stdout == second.stdout
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert [line["kind"] for line in lines] == ["decision", "summary"]
    assert lines[0]["verdict"] == "stale"
    assert lines[0]["lagSeconds"] == 2.0
    assert (lines[-1]["consistent"], lines[-1]["stale"], lines[-1]["divergent"]) == (3, 1, 0)


def test_divergent_decision_exits_one(history, tmp_path):
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(history.data_dir), str(copy)], check=True)
    path = copy / "decisions" / "decisions.jsonl"
    path.write_text(path.read_text().replace('"decision":"local"', '"decision":"not-found"'))

    result = _run("decisions", "--data-dir", str(copy))

    assert result.returncode == 1
    assert "divergent           1" in result.stdout
    assert "result: 1 divergent, 0 corrupt" in result.stdout


def test_verify_exits_zero_then_one_on_damage(history, tmp_path):
    assert _run("verify", "--data-dir", str(history.data_dir)).returncode == 0
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(history.data_dir), str(copy)], check=True)
    segment = sorted((copy / "log" / "2").glob("*.jsonl"))[0]
    data = bytearray(segment.read_bytes())
    data[70] ^= 1
    segment.write_bytes(bytes(data))

    result = _run("verify", "--data-dir", str(copy), "--json")

    assert result.returncode == 1
    problems = [json.loads(line) for line in result.stdout.splitlines() if json.loads(line)["kind"] == "problem"]
    assert [(problem["problem"], problem["origin"], problem["seq"], problem["offset"]) for problem in problems] == [("corrupt-record", 2, 1, 0)]


def test_state_shows_the_view_at_a_time(history):
    result = _run("state", "--data-dir", str(history.data_dir), "--at", "2027-01-15T08:00:12Z")

    assert result.returncode == 0, result.stderr
    assert "view of gateway h1 at 2027-01-15T08:00:12.000Z" in result.stdout
    # The decision at 08:00:12 shows gateway 1 still held web on host 2.
    assert "h2    web" in result.stdout
    assert "h1    db" in result.stdout


def test_state_origin_filter_and_json(history):
    result = _run("state", "--data-dir", str(history.data_dir), "--at", "2027-01-15T08:00:13.5Z", "--origin", "3", "--json")

    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["hostname"], line["hostId"]) for line in lines if line["kind"] == "container"] == [("web", 3)]
    assert lines[-1]["kind"] == "view"


def test_timeline_shows_the_move(history):
    result = _run("timeline", "--data-dir", str(history.data_dir), "--host", "web")

    assert result.returncode == 0
    events = [line.split()[2] for line in result.stdout.splitlines()[3:]]
    assert events == ["added", "removed", "moved"]


def test_what_if_runs_and_reports(history):
    result = _run("what-if", "--data-dir", str(history.data_dir), "--resync", "1")

    assert result.returncode == 0, result.stderr
    assert "a resync every 1 s" in result.stdout


@pytest.mark.parametrize("argv, message", [
    (["decisions", "--since", "yesterday"], "invalid time 'yesterday' for --since"),
    (["state", "--at", "2026-12-04T10:32:00"], "invalid time '2026-12-04T10:32:00' for --at"),
    (["state", "--at", "-5m", "--origin", "300"], "invalid --origin '300'"),
    (["decisions", "--limit", "-3"], "invalid --limit '-3'"),
    (["what-if"], "what-if needs at least one setting to try"),
    (["what-if", "--ttl", "0"], "invalid --ttl '0'"),
    (["decisions", "--config", "/nonexistent/gateway.toml"], "config /nonexistent/gateway.toml not found"),
])
def test_bad_usage_exits_two_naming_the_value(history, argv, message):
    result = _run(*argv, "--data-dir", str(history.data_dir))

    assert result.returncode == 2
    assert message in result.stderr


def test_invalid_config_exits_two(history, tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text("host_id = [\n")

    result = _run("decisions", "--data-dir", str(history.data_dir), "--config", str(config))

    assert result.returncode == 2
    assert f"gateway config {config} is not valid TOML" in result.stderr


def test_missing_data_dir_exits_two(tmp_path):
    result = _run("verify", "--data-dir", str(tmp_path / "nothing"))

    assert result.returncode == 2
    assert f"data directory {tmp_path / 'nothing'} not found" in result.stderr


def test_unknown_option_exits_two():
    assert _run("decisions", "--frobnicate").returncode == 2


def test_japanese_locale_gives_japanese_text(history):
    result = _run("decisions", "--data-dir", str(history.data_dir), lang="ja_JP.UTF-8")

    assert result.returncode == 0
    assert "ゲートウェイ h1 の判断" in result.stdout
    assert "結果: すべての判断が consistent または stale です" in result.stdout
    assert "所有者のログ" in result.stdout


def test_japanese_usage_error(history):
    result = _run("state", "--at", "tomorrow", "--data-dir", str(history.data_dir), lang="ja_JP.UTF-8")

    assert result.returncode == 2
    assert "の時刻 'tomorrow' が不正です" in result.stderr


def test_no_progress_bar_off_terminal(history):
    result = _run("verify", "--data-dir", str(history.data_dir))

    assert result.stderr == ""
