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
    (["decisions", "--since", "-15x"], "invalid time '-15x' for --since: give an RFC 3339 time such as"),
    (["decisions", "--until=-1.5"], "invalid time '-1.5' for --until"),
    (["decisions", "--since", "-15m", "--until", "-1h"], "--since -15m ("),
    (["what-if", "--ttl", "30", "--since", "-15m", "--until", "-1h"], ") is after --until -1h ("),
    (["state", "--at", "2026-12-04T10:32:00"], "invalid time '2026-12-04T10:32:00' for --at"),
    (["state", "--at", "-5m", "--origin", "300"], "invalid --origin '300'"),
    (["decisions", "--limit", "-3"], "invalid --limit '-3'"),
    (["what-if"], "what-if needs at least one setting to try"),
    (["what-if", "--ttl", "0"], "invalid --ttl '0'"),
    (["decisions", "--config", "/nonexistent/gateway.toml"], "gateway config /nonexistent/gateway.toml not found"),
    (["decisions", "--config", "/tmp"], "gateway config /tmp is a directory"),
])
def test_bad_usage_exits_two_naming_the_value(history, argv, message):
    result = _run(*argv, "--data-dir", str(history.data_dir))

    assert result.returncode == 2
    assert message in result.stderr


def test_relative_times_need_no_equals_sign(history):
    result = _run("decisions", "--data-dir", str(history.data_dir), "--since", "-2d", "--until", "-1d")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("file_name, config_hint", [("gateway.toml", True), ("notes.txt", False)])
def test_data_dir_file_exits_two(tmp_path, file_name, config_hint):
    path = tmp_path / file_name
    path.write_text("host_id = 1\n")

    result = _run("verify", "--data-dir", str(path))

    assert result.returncode == 2
    assert f"invalid --data-dir {path}: it is a file, not a directory" in result.stderr
    assert "--data-dir takes the gateway's data directory" in result.stderr
    assert (f"give --config {path}" in result.stderr) is config_hint
    assert "not found" not in result.stderr


def test_config_data_dir_file_exits_two(tmp_path):
    data_file = tmp_path / "data"
    data_file.write_text("")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'host_id = 1\ndata_dir = "{data_file}"\napi_listen = "127.0.1.1:8080"\nproxy_listen = "127.0.1.1:8000"\n'
    )

    result = _run("verify", "--config", str(config))

    assert result.returncode == 2
    assert f"data directory {data_file} is not a directory" in result.stderr


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


@pytest.fixture(scope="module")
def conflict(tmp_path_factory):
    """A name held by two hosts at once, moved, and an owner that expired, with decisions on the way."""
    fleet = Fleet(tmp_path_factory.mktemp("conflict") / "data")
    first = fleet.add(2, "web", at=START)
    fleet.remove(2, first, at=START + 5)
    fleet.add(3, "web", at=START + 6, number=20)
    fleet.add(1, "web", at=START + 7)
    fleet.add(3, "api", at=START + 7, number=21)
    fleet.deliver()
    fleet.request("web", at=START + 8)
    fleet.request("api", at=START + 9, expired=(3,))
    fleet.request("web", at=START + 10)
    fleet.close()
    return fleet


def test_japanese_timeline_details(conflict):
    result = _run("timeline", "--data-dir", str(conflict.data_dir), "--host", "web", lang="ja_JP.UTF-8")

    assert result.returncode == 0, result.stderr
    assert "h2 から移動（h2 での削除から 1.000 秒後）" in result.stdout
    assert "も保持しています。h1 (" in result.stdout
    assert "h3 は ttl を過ぎても応答がないため" in result.stdout
    assert "h3 から再び応答がありました" in result.stdout
    for english in ("also held by", "wins", "after its removal", "silent past", "heard from again"):
        assert english not in result.stdout


def test_timeline_json_details_stay_english(conflict):
    result = _run("timeline", "--data-dir", str(conflict.data_dir), "--host", "web", "--json", lang="ja_JP.UTF-8")

    details = [json.loads(line)["detail"] for line in result.stdout.splitlines()]
    assert details[2] == "from h2, 1.000 s after its removal there"
    assert details[3].startswith("also held by h3 (")


def test_japanese_state_sources(conflict):
    result = _run("state", "--data-dir", str(conflict.data_dir), "--at", "2027-01-15T08:00:09.5Z", lang="ja_JP.UTF-8")

    assert result.returncode == 0, result.stderr
    assert "判断レコード decisions.jsonl:2、2027-01-15T08:00:09.000Z" in result.stdout
    assert "期限切れの起点: 3（判断レコード decisions.jsonl:2、" in result.stdout
    assert "decision " not in result.stdout


def test_japanese_what_if_reason(conflict):
    result = _run("what-if", "--data-dir", str(conflict.data_dir), "--ttl", "1000", lang="ja_JP.UTF-8")

    assert result.returncode == 0, result.stderr
    assert "理由:          h3 の無応答は" in result.stdout
    assert "within the ttl" not in result.stdout


def test_long_name_keeps_table_narrow(history, tmp_path):
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(history.data_dir), str(copy)], check=True)
    path = copy / "decisions" / "decisions.jsonl"
    record = json.loads(path.read_text().splitlines()[0])
    long_name = "n" * 300
    record.update(name=long_name, host=f"{long_name}.flatnet", decision="not-found", target=None, owner=None, container_id=None, status=404)
    path.write_text(path.read_text() + json.dumps(record, separators=(",", ":")) + "\n")

    text = _run("decisions", "--data-dir", str(copy)).stdout
    lines = [json.loads(line) for line in _run("decisions", "--data-dir", str(copy), "--json").stdout.splitlines()]

    web_row = next(line for line in text.splitlines() if line.startswith("web "))
    assert len(web_row) < 100
    assert "n" * 63 + "…" in text
    assert long_name in lines[-1]["byName"]
