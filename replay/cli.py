"""The `flatnet replay` subcommands: argument parsing, output and exit codes only.

Exit status: 0 when every decision is consistent or stale and the logs are
sound, and 1 when anything is divergent or corrupt. Bad usage exits with 2:
argparse's own errors, and values such as a time or a directory that cannot be used.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from flatnet import i18n
from flatnet.errors import FlatnetError

DEFAULT_CONFIG = Path("/etc/flatnet/gateway.toml")
DEFAULT_DATA_DIR = Path("/var/lib/flatnet")
DEFAULT_LIMIT = 100
USAGE_ERROR = 2

i18n.define({
    "replay.help": (
        "audit routing decisions against the log, show past views, verify the logs (reads only)",
        "ルーティング判断をログと照合し、過去のビューを表示し、ログを検証します（読み取りのみ）",
    ),
    "replay.help_decisions": (
        "decide every recorded request again and classify it: consistent, stale or divergent",
        "記録されたリクエストをすべて再判断し、consistent / stale / divergent に分類します",
    ),
    "replay.help_state": ("print the view as this gateway had it at a past time", "このゲートウェイが過去のある時刻に持っていたビューを表示します"),
    "replay.help_verify": (
        "check every segment's CRCs and seqs, and every snapshot against the fold of its events",
        "全セグメントの CRC と seq、各スナップショットとイベントの畳み込みの一致を検証します",
    ),
    "replay.help_whatif": (
        "replay the decisions under other timer settings and list those that change",
        "別のタイマー設定で判断を再実行し、結果が変わる判断を一覧します",
    ),
    "replay.help_timeline": ("show the history of one container name across hosts", "1 つのコンテナー名のホストをまたいだ履歴を表示します"),
    "replay.help_data_dir": (
        "the gateway's data directory, live or a copy (default: data_dir of --config, else /var/lib/flatnet)",
        "ゲートウェイのデータディレクトリー（稼働中でもコピーでも可。既定: --config の data_dir、なければ /var/lib/flatnet）",
    ),
    "replay.help_config": (
        "the gateway's TOML config, for its host id, domain, peers and stale policy"
        " (default /etc/flatnet/gateway.toml when no --data-dir is given; else inferred from the data directory)",
        "ゲートウェイの TOML 設定。ホスト ID、ドメイン、ピア、stale ポリシーに使います"
        "（--data-dir がなければ既定 /etc/flatnet/gateway.toml、あればデータディレクトリーから推定）",
    ),
    "replay.help_json": ("print JSON lines for tools instead of tables", "表の代わりにツール向けの JSON Lines を出力します"),
    "replay.help_since": ("only decisions at or after this time: RFC 3339 or relative, e.g. -15m", "この時刻以降の判断のみ（RFC 3339 または -15m のような相対時刻）"),
    "replay.help_until": ("only decisions at or before this time: RFC 3339 or relative, e.g. -5m", "この時刻以前の判断のみ（RFC 3339 または -5m のような相対時刻）"),
    "replay.help_host": ("only requests for this container name (the part before .<domain>)", "このコンテナー名（.<ドメイン> の前の部分）へのリクエストのみ"),
    "replay.help_request_id": ("only the request with this X-Request-Id", "この X-Request-Id のリクエストのみ"),
    "replay.help_limit": ("decisions listed in text output, 0 for all (default 100)", "テキスト出力に列挙する判断の数。0 ですべて（既定 100）"),
    "replay.help_at": ("the time: RFC 3339 or relative, e.g. 2026-12-04T10:32:00Z or -15m", "時刻（RFC 3339 または相対。例: 2026-12-04T10:32:00Z、-15m）"),
    "replay.help_origin": ("only containers of this host id", "このホスト ID のコンテナーのみ"),
    "replay.help_ttl": ("the ttl to try, in seconds", "試す ttl（秒）"),
    "replay.help_resync": ("the resync interval to try, in seconds", "試す再同期間隔（秒）"),
    "replay.help_name": ("the container name", "コンテナー名"),
    "replay.usage_error": ("flatnet replay: error: {message}", "flatnet replay: エラー: {message}"),
    "replay.no_default_data_dir": (
        "no data directory given and {config} not found; give --data-dir DIR or --config FILE",
        "データディレクトリーの指定がなく、{config} も見つかりません。--data-dir DIR または --config FILE を指定してください",
    ),
    "replay.data_dir_is_file": (
        "invalid --data-dir {path}: it is a file, not a directory. --data-dir takes the gateway's data directory"
        " (data_dir in its config, by default {default})",
        "--data-dir {path} が不正です。ディレクトリーではなくファイルです。--data-dir にはゲートウェイのデータディレクトリー"
        "（設定の data_dir。既定は {default}）を指定してください",
    ),
    "replay.data_dir_is_config": (
        "invalid --data-dir {path}: it is a file, not a directory. --data-dir takes the gateway's data directory"
        " (data_dir in its config, by default {default}). To read this config file, give --config {path}",
        "--data-dir {path} が不正です。ディレクトリーではなくファイルです。--data-dir にはゲートウェイのデータディレクトリー"
        "（設定の data_dir。既定は {default}）を指定してください。この設定ファイルを読むには --config {path} を指定してください",
    ),
    "replay.since_after_until": (
        "--since {since} ({since_time}) is after --until {until} ({until_time}), so no decision can match."
        " Give a --since time before the --until time",
        "--since {since}（{since_time}）が --until {until}（{until_time}）より後なので、該当する判断はありません。"
        "--since には --until より前の時刻を指定してください",
    ),
    "replay.bad_seconds": (
        "invalid {option} {value!r}: give a number of seconds above 0, e.g. {option} 30",
        "{option} {value!r} が不正です。0 より大きい秒数を指定してください（例: {option} 30）",
    ),
    "replay.bad_origin": (
        "invalid --origin {value!r}: give a host id from 1 to 254, e.g. --origin 2",
        "--origin {value!r} が不正です。1〜254 のホスト ID を指定してください（例: --origin 2）",
    ),
    "replay.bad_limit": ("invalid --limit {value!r}: give 0 or a positive whole number", "--limit {value!r} が不正です。0 以上の整数を指定してください"),
    "replay.whatif_needs_timer": (
        "what-if needs at least one setting to try: --ttl SECONDS and/or --resync SECONDS",
        "what-if には試す設定が少なくとも 1 つ必要です: --ttl 秒 と/または --resync 秒",
    ),
})


class UsageError(Exception):
    """A value on the command line that cannot be used; the message names the valid values."""


def register(commands: argparse._SubParsersAction) -> None:
    """Add `replay` and its subcommands to the `flatnet` parser's subcommands."""
    replay = commands.add_parser("replay", help=i18n.text("replay.help"), description=i18n.text("replay.help"))
    actions = replay.add_subparsers(dest="replay_command", required=True, metavar="COMMAND")

    decisions = actions.add_parser("decisions", help=i18n.text("replay.help_decisions"), description=i18n.text("replay.help_decisions"))
    _common(decisions)
    _filters(decisions)
    decisions.add_argument("--request-id", metavar="ID", help=i18n.text("replay.help_request_id"))
    decisions.add_argument("--limit", default=str(DEFAULT_LIMIT), metavar="N", help=i18n.text("replay.help_limit"))
    decisions.set_defaults(run=_guarded(run_decisions))

    state = actions.add_parser("state", help=i18n.text("replay.help_state"), description=i18n.text("replay.help_state"))
    _common(state)
    state.add_argument("--at", required=True, metavar="TIME", help=i18n.text("replay.help_at"))
    state.add_argument("--origin", metavar="HOST_ID", help=i18n.text("replay.help_origin"))
    state.set_defaults(run=_guarded(run_state))

    verify = actions.add_parser("verify", help=i18n.text("replay.help_verify"), description=i18n.text("replay.help_verify"))
    _common(verify)
    verify.set_defaults(run=_guarded(run_verify))

    whatif = actions.add_parser("what-if", help=i18n.text("replay.help_whatif"), description=i18n.text("replay.help_whatif"))
    _common(whatif)
    _filters(whatif)
    whatif.add_argument("--ttl", metavar="SECONDS", help=i18n.text("replay.help_ttl"))
    whatif.add_argument("--resync", metavar="SECONDS", help=i18n.text("replay.help_resync"))
    whatif.add_argument("--limit", default=str(DEFAULT_LIMIT), metavar="N", help=i18n.text("replay.help_limit"))
    whatif.set_defaults(run=_guarded(run_whatif))

    timeline = actions.add_parser("timeline", help=i18n.text("replay.help_timeline"), description=i18n.text("replay.help_timeline"))
    _common(timeline)
    timeline.add_argument("--host", required=True, metavar="NAME", help=i18n.text("replay.help_name"))
    timeline.set_defaults(run=_guarded(run_timeline))


# argparse takes a value starting with "-" for an option, and then fails with
# "expected one argument", unless the value matches the parser's negative-number
# pattern. Every value of the form -<digit>... is made to match it, so
# `--since -15m` works and a mistyped `--since -15x` reaches parse_time, whose
# error lists the valid forms. No replay option starts with "-<digit>", so no
# option is hidden. NOTE: _negative_number_matcher is private to argparse
# (checked with Python 3.11 to 3.13), and test_cli pins this behaviour.
# `--since=-15m` works with any argparse, so the docs use that form.
_NEGATIVE_OR_RELATIVE = re.compile(r"^-\d")


def _common(parser: argparse.ArgumentParser) -> None:
    parser._negative_number_matcher = _NEGATIVE_OR_RELATIVE
    parser.add_argument("--data-dir", metavar="DIR", help=i18n.text("replay.help_data_dir"))
    parser.add_argument("--config", metavar="FILE", help=i18n.text("replay.help_config"))
    parser.add_argument("--json", action="store_true", help=i18n.text("replay.help_json"))


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="TIME", help=i18n.text("replay.help_since"))
    parser.add_argument("--until", metavar="TIME", help=i18n.text("replay.help_until"))
    parser.add_argument("--host", metavar="NAME", help=i18n.text("replay.help_host"))


def _guarded(run):
    def guarded(args: argparse.Namespace) -> int:
        from flatnet.replay.datadir import DataDirError
        from flatnet.replay.times import TimeArgumentError

        try:
            return run(args)
        except (UsageError, DataDirError, TimeArgumentError) as error:
            print(i18n.text("replay.usage_error", message=error), file=sys.stderr)
            return USAGE_ERROR

    return guarded


# Opening the data directory


def _open(args: argparse.Namespace):
    """Open the data directory; return it and the config path to route with (None to infer the settings)."""
    from flatnet.replay.datadir import DataDir

    from flatnet.gateway.settings import load_settings

    if args.data_dir:
        _check_data_dir_option(Path(args.data_dir))
    config = Path(args.config) if args.config else None
    if config is not None and not config.is_file():
        # The same wording as every other command that reads the config.
        from flatnet.gateway import config_errors  # noqa: F401 (defines the messages)

        key = "config.is_directory" if config.is_dir() else "config.not_found"
        raise UsageError(i18n.text(key, path=config))
    if config is None and not args.data_dir:
        if not DEFAULT_CONFIG.is_file():
            if not DEFAULT_DATA_DIR.is_dir():
                raise UsageError(i18n.text("replay.no_default_data_dir", config=DEFAULT_CONFIG))
            return DataDir(DEFAULT_DATA_DIR), None
        config = DEFAULT_CONFIG
    settings = None
    if config is not None:
        # A config that does not load is a wrong argument, like a missing one.
        try:
            settings = load_settings(config)
        except FlatnetError as error:
            raise UsageError(str(error)) from None
    data_dir = DataDir(Path(args.data_dir) if args.data_dir else settings.data_dir)
    return data_dir, config


def _check_data_dir_option(path: Path) -> None:
    if path.exists() and not path.is_dir():
        key = "replay.data_dir_is_config" if path.suffix == ".toml" else "replay.data_dir_is_file"
        raise UsageError(i18n.text(key, path=path, default=DEFAULT_DATA_DIR))


def _settings(data_dir, config: Path | None, snapshot_list):
    from flatnet.replay import records, settings

    if config is not None:
        return settings.from_config(config, data_dir, snapshot_list)
    return settings.infer(data_dir, snapshot_list, records.scan_shapes(data_dir))


def _audit_options(args: argparse.Namespace, now: float):
    from flatnet.replay.audit import AuditOptions
    from flatnet.replay.times import parse_time, show_time

    since = parse_time(args.since, "--since", now) if args.since else float("-inf")
    until = parse_time(args.until, "--until", now) if args.until else float("inf")
    if since > until:
        raise UsageError(i18n.text(
            "replay.since_after_until", since=args.since, since_time=show_time(since), until=args.until, until_time=show_time(until),
        ))
    return AuditOptions(since, until, args.host, getattr(args, "request_id", None))


def _limit(value: str) -> int:
    if not value.isdigit():
        raise UsageError(i18n.text("replay.bad_limit", value=value))
    return int(value)


def _seconds(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise UsageError(i18n.text("replay.bad_seconds", option=option, value=value))
    return seconds


def _print(lines: list[str]) -> None:
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


# The subcommands


def run_decisions(args: argparse.Namespace) -> int:
    from flatnet.replay import audit, render

    limit = _limit(args.limit)
    options = _audit_options(args, time.time())
    data_dir, config = _open(args)
    report = audit.audit(data_dir, config, options)
    _print(render.decisions_json(report) if args.json else render.decisions_text(report, limit))
    return report.exit_status


def run_state(args: argparse.Namespace) -> int:
    from flatnet.replay import render
    from flatnet.replay.settings import own_host
    from flatnet.replay.state import view_at
    from flatnet.replay.times import parse_time

    at = parse_time(args.at, "--at", time.time())
    origin = None
    if args.origin is not None:
        if not args.origin.isdigit() or not 1 <= int(args.origin) <= 254:
            raise UsageError(i18n.text("replay.bad_origin", value=args.origin))
        origin = int(args.origin)
    data_dir, config = _open(args)
    snapshot_list, _ = data_dir.load_snapshots()
    gateway = _settings(data_dir, config, snapshot_list).settings.host_id if config else own_host(data_dir, snapshot_list) or 0
    report = view_at(data_dir, gateway, at, origin=origin)
    _print(render.state_json(report) if args.json else render.state_text(report))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from flatnet.replay import render
    from flatnet.replay.verify import verify

    data_dir, _ = _open(args)
    report = verify(data_dir)
    _print(render.verify_json(report) if args.json else render.verify_text(report))
    return report.exit_status


def run_whatif(args: argparse.Namespace) -> int:
    from flatnet.replay import render
    from flatnet.replay.history import build_history
    from flatnet.replay.whatif import Timers, what_if

    timers = Timers(_seconds(args.ttl, "--ttl"), _seconds(args.resync, "--resync"))
    if timers.ttl is None and timers.resync is None:
        raise UsageError(i18n.text("replay.whatif_needs_timer"))
    limit = _limit(args.limit)
    options = _audit_options(args, time.time())
    data_dir, config = _open(args)
    snapshot_list, _ = data_dir.load_snapshots()
    replay_settings = _settings(data_dir, config, snapshot_list)
    report = what_if(data_dir, replay_settings, timers, options, history=build_history(data_dir, snapshot_list))
    _print(render.whatif_json(report) if args.json else render.whatif_text(report, limit))
    return 0


def run_timeline(args: argparse.Namespace) -> int:
    from flatnet.replay import render
    from flatnet.replay.timeline import timeline

    data_dir, _ = _open(args)
    report = timeline(data_dir, args.host)
    _print(render.timeline_json(report) if args.json else render.timeline_text(report))
    return 0
