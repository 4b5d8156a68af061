"""The `flatnet` command: argument parsing and exit codes only.

Each subcommand calls into the module that does the work; only
:class:`~flatnet.errors.FlatnetError` is caught here and printed for a person.
"""

from __future__ import annotations

import argparse
import math
import sys

from flatnet import help_format, i18n
from flatnet.errors import FlatnetError

i18n.define({
    "cli.error": ("flatnet: error: {message}", "flatnet: エラー: {message}"),
    "cli.interrupted": ("flatnet: interrupted", "flatnet: 中断しました"),
    "cli.description": (
        "A flat network for podman containers on hosts joined by Nebula.",
        "Nebula で結ばれたホスト群の podman コンテナーを 1 つのフラットなネットワークにつなぎます。",
    ),
    "cli.help_log_level": (
        "the lowest level of log records written to stderr (default INFO)",
        "stderr に書くログレコードの最低レベル（既定 INFO）",
    ),
    "cli.help_log_format": (
        "text lines for people (default), or JSON lines for log collectors",
        "人が読むテキスト行（既定）、またはログ収集ツール向けの JSON Lines",
    ),
    "cli.help_gateway": ("run this host's gateway daemon", "このホストのゲートウェイデーモンを実行します"),
    "cli.help_gateway_config": ("path of the gateway's TOML config file", "ゲートウェイの TOML 設定ファイルのパス"),
    "cli.help_install": (
        "install the plugin, configs and systemd unit on this host (root)",
        "このホストにプラグイン、設定、systemd ユニットをインストールします（root が必要）",
    ),
    "cli.help_install_host_id": ("this host's id, 1-254, unique in the fleet", "このホストの ID（1〜254、フリート内で一意）"),
    "cli.help_install_dry_run": (
        "print each file that would be written, with its content, and write nothing",
        "書き込む各ファイルを内容とともに表示するだけで、何も書き込みません",
    ),
    "cli.help_install_force": ("overwrite existing files that differ", "内容の異なる既存ファイルを上書きします"),
    "cli.help_install_root": (
        "install under this directory instead of / (default /)",
        "/ の代わりにこのディレクトリーの下へインストールします（既定 /）",
    ),
    "cli.help_uninstall": ("remove what flatnet install wrote", "flatnet install が書き込んだものを削除します"),
    "cli.help_uninstall_dry_run": ("show what would be removed, remove nothing", "削除する対象を表示するだけで、何も削除しません"),
    "cli.help_uninstall_purge": (
        "also remove /var/lib/flatnet (the event log and IP reservations) and /var/log/flatnet (the access log)",
        "/var/lib/flatnet（イベントログと IP アドレスの予約）と /var/log/flatnet（アクセスログ）も削除します",
    ),
    "cli.help_uninstall_force": (
        "also remove installed files that were changed since flatnet install wrote them",
        "flatnet install が書き込んだ後に変更されたファイルも削除します",
    ),
    "cli.help_uninstall_root": (
        "uninstall under this directory instead of / (default /)",
        "/ の代わりにこのディレクトリーの下からアンインストールします（既定 /）",
    ),
    "cli.help_status": (
        "show this host's gateway, its peers and containers",
        "このホストのゲートウェイ、そのピアとコンテナーを表示します",
    ),
    "cli.help_status_config": (
        "the gateway's TOML config (default /etc/flatnet/gateway.toml)",
        "ゲートウェイの TOML 設定ファイル（既定 /etc/flatnet/gateway.toml）",
    ),
    "cli.help_status_api": (
        "the gateway API URL instead of reading the config, e.g. http://10.100.0.1:8080",
        "設定ファイルを読む代わりに使うゲートウェイ API の URL（例: http://10.100.0.1:8080）",
    ),
    "cli.help_status_json": ("print JSON for tools instead of a table", "表の代わりにツール向けの JSON を出力します"),
    "cli.help_status_watch": ("redraw every SECONDS seconds until Ctrl-C", "Ctrl-C まで SECONDS 秒ごとに表示し直します"),
    "cli.help_demo": (
        "build a 2-host lab and walk through flatnet end to end",
        "2 ホストのラボを構築し、flatnet を端から端まで順に実演します",
    ),
    "cli.invalid_watch": (
        "{value!r} is invalid: give a number of seconds above 0, e.g. --watch 2",
        "{value!r} は無効です。0 より大きい秒数を指定してください（例: --watch 2）",
    ),
})


def _seconds_above_zero(value: str) -> float:
    """Parse the --watch interval: finite seconds above 0, or a usage error naming the value as typed."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(i18n.text("cli.invalid_watch", value=value))
    return seconds


def _api_url(value: str) -> str:
    """Check the --api URL before any request is sent."""
    from flatnet.status import api_url_problem

    problem = api_url_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the `flatnet` parser, with every help text and argparse's own words in the locale's language."""
    help_format.install_argparse_translation()
    parser = help_format.ArgumentParser(prog="flatnet", description=i18n.text("cli.description"))
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help=i18n.text("cli.help_log_level"),
    )
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help=i18n.text("cli.help_log_format"),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gateway = help_format.add_command(commands, "gateway", i18n.text("cli.help_gateway"))
    gateway.add_argument("--config", required=True, help=i18n.text("cli.help_gateway_config"))
    gateway.set_defaults(run=_run_gateway)

    install = help_format.add_command(commands, "install", i18n.text("cli.help_install"))
    from flatnet.install import host_id_argument

    install.add_argument("--host-id", type=host_id_argument, required=True, help=i18n.text("cli.help_install_host_id"))
    install.add_argument("--dry-run", action="store_true", help=i18n.text("cli.help_install_dry_run"))
    install.add_argument("--force", action="store_true", help=i18n.text("cli.help_install_force"))
    install.add_argument("--root", default="/", help=i18n.text("cli.help_install_root"))
    install.set_defaults(run=_run_install)

    uninstall = help_format.add_command(commands, "uninstall", i18n.text("cli.help_uninstall"))
    uninstall.add_argument("--dry-run", action="store_true", help=i18n.text("cli.help_uninstall_dry_run"))
    uninstall.add_argument("--purge", action="store_true", help=i18n.text("cli.help_uninstall_purge"))
    uninstall.add_argument("--force", action="store_true", help=i18n.text("cli.help_uninstall_force"))
    uninstall.add_argument("--root", default="/", help=i18n.text("cli.help_uninstall_root"))
    uninstall.set_defaults(run=_run_uninstall)

    status = help_format.add_command(commands, "status", i18n.text("cli.help_status"))
    status.add_argument("--config", help=i18n.text("cli.help_status_config"))
    status.add_argument("--api", type=_api_url, help=i18n.text("cli.help_status_api"))
    status.add_argument("--json", action="store_true", help=i18n.text("cli.help_status_json"))
    status.add_argument("--watch", type=_seconds_above_zero, metavar="SECONDS", help=i18n.text("cli.help_status_watch"))
    status.set_defaults(run=_run_status)

    demo = help_format.add_command(commands, "demo", i18n.text("cli.help_demo"))
    demo.set_defaults(run=_run_demo)

    from flatnet.lab.cli import register as register_lab

    register_lab(commands)

    from flatnet.routing_cli import register as register_routing

    register_routing(commands)

    from flatnet.replay.cli import register as register_replay

    register_replay(commands)
    return parser


def _run_gateway(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flatnet.gateway.app import run_gateway
    from flatnet.gateway.settings import load_settings

    settings = load_settings(args.config)
    return run_gateway(settings, Path(args.config))


def _run_install(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flatnet.install import install

    for line in install(args.host_id, root=Path(args.root), dry_run=args.dry_run, force=args.force):
        print(line)
    return 0


def _run_uninstall(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flatnet.install import uninstall

    for line in uninstall(root=Path(args.root), dry_run=args.dry_run, purge=args.purge, force=args.force):
        print(line)
    return 0


def _run_status(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flatnet.status import run_status

    config = Path(args.config) if args.config else None
    return run_status(config, args.api, as_json=args.json, watch=args.watch)


def _run_demo(args: argparse.Namespace) -> int:
    from flatnet.demo import run_demo

    return run_demo()


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)

    from flatnet.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    try:
        status = args.run(args)
    except FlatnetError as error:
        print(i18n.text("cli.error", message=error), file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print(i18n.text("cli.interrupted"), file=sys.stderr)
        status = 130
    sys.exit(status or 0)
