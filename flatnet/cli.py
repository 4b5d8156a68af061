"""The `flatnet` command: argument parsing and exit codes only.

Each subcommand calls into the module that does the work; only
:class:`~flatnet.errors.FlatnetError` is caught here and printed for a person.
"""

from __future__ import annotations

import argparse
import sys

from flatnet import i18n
from flatnet.errors import FlatnetError

i18n.define({
    "cli.error": ("flatnet: error: {message}", "flatnet: エラー: {message}"),
    "cli.interrupted": ("flatnet: interrupted", "flatnet: 中断しました"),
})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flatnet",
        description="A flat network for podman containers on hosts joined by Nebula.",
    )
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the lowest level of log records written to stderr (default INFO)",
    )
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"],
        help="text lines for people (default), or JSON lines for log collectors",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gateway = commands.add_parser("gateway", help="run this host's gateway daemon")
    gateway.add_argument("--config", required=True, help="path of the gateway's TOML config file")
    gateway.set_defaults(run=_run_gateway)

    install = commands.add_parser("install", help="install the plugin, configs and systemd unit on this host (root)")
    install.add_argument("--host-id", type=int, required=True, help="this host's id, 1-254, unique in the fleet")
    install.add_argument("--dry-run", action="store_true", help="show what would be written, write nothing")
    install.add_argument("--force", action="store_true", help="overwrite existing files that differ")
    install.add_argument("--root", default="/", help="install under this directory instead of / (default /)")
    install.set_defaults(run=_run_install)

    uninstall = commands.add_parser("uninstall", help="remove what flatnet install wrote")
    uninstall.add_argument("--dry-run", action="store_true", help="show what would be removed, remove nothing")
    uninstall.add_argument("--purge", action="store_true", help="also remove /var/lib/flatnet (the event log) and /var/log/flatnet")
    uninstall.add_argument("--root", default="/", help="uninstall under this directory instead of / (default /)")
    uninstall.set_defaults(run=_run_uninstall)

    status = commands.add_parser("status", help="show this host's gateway, its peers and containers")
    status.add_argument("--config", help="the gateway's TOML config (default /etc/flatnet/gateway.toml)")
    status.add_argument("--api", help="the gateway API URL instead of reading the config, e.g. http://10.100.0.1:8080")
    status.add_argument("--json", action="store_true", help="print JSON for tools instead of a table")
    status.add_argument("--watch", type=float, metavar="SECONDS", help="redraw every SECONDS seconds until Ctrl-C")
    status.set_defaults(run=_run_status)

    demo = commands.add_parser("demo", help="build a 2-host lab and walk through flatnet end to end")
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

    for line in uninstall(root=Path(args.root), dry_run=args.dry_run, purge=args.purge):
        print(line)
    return 0


def _run_status(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flatnet.status import run_status

    if args.watch is not None and args.watch <= 0:
        raise FlatnetError(f"--watch {args.watch} is invalid: give a number of seconds above 0, e.g. --watch 2")
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
