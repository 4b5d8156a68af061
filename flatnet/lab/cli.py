"""The `flatnet lab` subcommands: argument parsing and output only.

Imports of the lab's modules wait until a subcommand runs, because every `flatnet` command
(the gateway too) builds this parser.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from flatnet import i18n
from flatnet.help_format import add_command
from flatnet.errors import FlatnetError

i18n.define({
    "lab.help": ("build and run a lab of simulated hosts on this machine", "このマシン上に模擬ホストのラボを構築・操作します"),
    "lab.help_up": ("build a lab: namespaces, Nebula, gateways, podman configuration", "ラボを構築します（名前空間、Nebula、ゲートウェイ、podman 設定）"),
    "lab.help_hosts": ("number of simulated hosts, 1 to 99 (default 2)", "模擬ホストの数、1〜99（既定 2）"),
    "lab.help_ttl": ("registry TTL of the gateways in seconds (default 300)", "ゲートウェイのレジストリー TTL（秒、既定 300）"),
    "lab.help_mtu": ("MTU of Nebula's tun device and the containers in bytes (default 1300)", "Nebula の tun デバイスとコンテナーの MTU（バイト、既定 1300）"),
    "lab.help_wsl": (
        "run this host as WSL2: its Nebula runs in a second namespace that plays Windows (repeatable)",
        "このホストを WSL2 として動かします。Nebula は Windows 役の別の名前空間で動きます（複数指定可）",
    ),
    "lab.help_join_later": (
        "build this host but keep it out of the fleet until `flatnet lab join` (repeatable)",
        "このホストを構築しますが、`flatnet lab join` までフリートに入れません（複数指定可）",
    ),
    "lab.help_join": (
        "add a host to the fleet: rewrite every config, restart Nebula, reload the gateways' peers",
        "ホストをフリートに追加します。全設定を書き換え、Nebula を再起動し、ゲートウェイのピアを再読み込みします",
    ),
    "lab.help_leave": (
        "take a host out of the fleet: stop it, then rewrite and reload the others' configs",
        "ホストをフリートから外します。停止してから、他のホストの設定を書き換えて再読み込みします",
    ),
    "lab.joined": ("{host} joined the fleet", "{host} がフリートに参加しました"),
    "lab.left": ("{host} left the fleet", "{host} がフリートから外れました"),
    "lab.help_down": ("remove the lab's containers, processes, namespaces and files", "ラボのコンテナー、プロセス、名前空間、ファイルを削除します"),
    "lab.help_force": (
        "take down the running lab even if another lab directory, or none, is recorded as its owner;"
        " stops every process in the lab's namespaces",
        "所有者として記録されたラボのディレクトリが別のものでも、記録がなくても、稼働中のラボを削除します。"
        "ラボの名前空間内のプロセスはすべて停止します",
    ),
    "lab.help_status": ("show hosts, addresses, processes and gateway health; exit status 1 unless all are up", "ホスト、アドレス、プロセス、ゲートウェイの状態を表示します。すべて正常でなければ終了ステータス 1"),
    "lab.help_json": ("print JSON instead of a table", "表の代わりに JSON を出力します"),
    "lab.help_exec": ("run a command in a host's namespace with its podman configuration", "ホストの名前空間でそのホストの podman 設定を使ってコマンドを実行します"),
    "lab.help_member": ("h1, h2, … or client", "h1、h2、… または client"),
    "lab.help_command": ("the command and its arguments, after --", "-- の後に続くコマンドとその引数"),
    "lab.help_stop": ("stop a host's gateway or Nebula by its recorded PID", "記録した PID でホストのゲートウェイまたは Nebula を停止します"),
    "lab.help_start": ("start a host's gateway or Nebula and wait until it is ready", "ホストのゲートウェイまたは Nebula を起動し、準備完了まで待ちます"),
    "lab.help_host": ("h1, h2, …", "h1、h2、…"),
    "lab.help_service": ("which process: gateway or nebula", "対象のプロセス（gateway または nebula）"),
    "lab.no_command": ("missing command: give it after --, e.g. `flatnet lab exec h1 -- podman ps`", "コマンドがありません。-- の後に指定してください（例: `flatnet lab exec h1 -- podman ps`）"),
    "lab.stopped": ("stopped {service} of {host}", "{host} の {service} を停止しました"),
    "lab.was_stopped": ("{service} of {host} was not running", "{host} の {service} は動いていませんでした"),
    "lab.started": ("started {service} of {host} as pid {pid}, ready after {ms} ms", "{host} の {service} を pid {pid} で起動しました（準備完了まで {ms} ms）"),
    "lab.column_host": ("HOST", "ホスト"),
    "lab.column_netns": ("NETNS", "名前空間"),
    "lab.column_lan": ("LAN", "LAN"),
    "lab.column_nebula_address": ("NEBULA ADDRESS", "NEBULA アドレス"),
    "lab.column_subnet": ("SUBNET", "サブネット"),
    "lab.column_nebula": ("NEBULA", "NEBULA"),
    "lab.column_gateway": ("GATEWAY", "ゲートウェイ"),
    "lab.column_health": ("HEALTH", "ヘルス"),
    "lab.state_running": ("running", "稼働中"),
    "lab.state_stopped": ("stopped", "停止"),
    "lab.health_ok": ("ok", "正常"),
})

SERVICES = ("gateway", "nebula")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `lab` and its subcommands to the `flatnet` parser's subcommands."""
    lab = add_command(commands, "lab", i18n.text("lab.help"))
    actions = lab.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")

    up = add_command(actions, "up", i18n.text("lab.help_up"))
    up.add_argument("--hosts", type=int, default=2, metavar="N", help=i18n.text("lab.help_hosts"))
    up.add_argument("--ttl", type=int, default=300, metavar="SECONDS", help=i18n.text("lab.help_ttl"))
    up.add_argument("--mtu", type=int, default=1300, metavar="BYTES", help=i18n.text("lab.help_mtu"))
    up.add_argument("--wsl", type=int, action="append", default=[], metavar="HOST_ID", help=i18n.text("lab.help_wsl"))
    up.add_argument(
        "--join-later", type=int, action="append", default=[], metavar="HOST_ID", help=i18n.text("lab.help_join_later"),
    )
    up.set_defaults(run=run_up)

    down = add_command(actions, "down", i18n.text("lab.help_down"))
    down.add_argument("--force", action="store_true", help=i18n.text("lab.help_force"))
    down.set_defaults(run=run_down)

    status = add_command(actions, "status", i18n.text("lab.help_status"))
    status.add_argument("--json", action="store_true", help=i18n.text("lab.help_json"))
    status.set_defaults(run=run_status)

    execute = add_command(actions, "exec", i18n.text("lab.help_exec"))
    execute.add_argument("member", metavar="HOST", help=i18n.text("lab.help_member"))
    execute.add_argument("command", nargs=argparse.REMAINDER, help=i18n.text("lab.help_command"))
    execute.set_defaults(run=run_exec)

    for name, help_key, run in (("join", "lab.help_join", run_join), ("leave", "lab.help_leave", run_leave)):
        action = add_command(actions, name, i18n.text(help_key))
        action.add_argument("host", metavar="HOST", help=i18n.text("lab.help_host"))
        action.set_defaults(run=run)

    for name, help_key, run in (("stop", "lab.help_stop", run_stop), ("start", "lab.help_start", run_start)):
        action = add_command(actions, name, i18n.text(help_key))
        action.add_argument("host", metavar="HOST", help=i18n.text("lab.help_host"))
        # The metavar names the argument in the usage line and in argparse's invalid-choice error alike.
        action.add_argument("service", choices=SERVICES, metavar="SERVICE", help=i18n.text("lab.help_service"))
        action.set_defaults(run=run)


def _print(message: str) -> None:
    print(message, flush=True)


def run_up(args: argparse.Namespace) -> int:
    from flatnet.lab.build import up

    up(hosts=args.hosts, ttl=args.ttl, mtu=args.mtu, wsl=args.wsl, joined_later=args.join_later, progress=_print)
    return 0


def run_join(args: argparse.Namespace) -> int:
    from flatnet.lab.lab import Lab

    Lab.load().join(args.host)
    _print(i18n.text("lab.joined", host=args.host))
    return 0


def run_leave(args: argparse.Namespace) -> int:
    from flatnet.lab.lab import Lab

    Lab.load().leave(args.host)
    _print(i18n.text("lab.left", host=args.host))
    return 0


def run_down(args: argparse.Namespace) -> int:
    from flatnet.lab.teardown import down

    down(force=args.force, progress=_print)
    return 0


def run_exec(args: argparse.Namespace) -> int:
    from flatnet.lab.lab import Lab

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise FlatnetError(i18n.text("lab.no_command"))
    lab = Lab.load()
    argv = lab.exec_argv(args.member, command)
    env = lab.command_env(args.member)
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: stdin, stdout, stderr, signals and the exit status pass straight through.
    os.execvpe(argv[0], argv, env)
    return 127  # not reached: execvpe either replaces this process or raises OSError


def run_stop(args: argparse.Namespace) -> int:
    from flatnet.lab.lab import Lab

    stopped = Lab.load().stop(args.host, args.service)
    key = "lab.stopped" if stopped else "lab.was_stopped"
    _print(i18n.text(key, service=args.service, host=args.host))
    return 0


def run_start(args: argparse.Namespace) -> int:
    from flatnet.lab.lab import Lab

    started = time.monotonic()
    pid = Lab.load().start(args.host, args.service)
    elapsed = round((time.monotonic() - started) * 1000)
    _print(i18n.text("lab.started", service=args.service, host=args.host, pid=pid, ms=elapsed))
    return 0


def run_status(args: argparse.Namespace) -> int:
    from flatnet.lab.lab import Lab
    from flatnet.lab.processes import ProcessState

    statuses = Lab.load().status()
    healthy = all(
        process.state is ProcessState.RUNNING for status in statuses for process in status.processes
    ) and all(status.health.ok for status in statuses if status.health is not None)

    if args.json:
        print(json.dumps([status.to_dict() for status in statuses], indent=2, default=str))
    else:
        _print_status_table(statuses)
    return 0 if healthy else 1


def _describe_process(statuses: list, service: str) -> str:
    for process in statuses:
        if process.service == service:
            state = i18n.text(f"lab.state_{process.state.value}")
            return f"{process.pid} {state}" if process.pid is not None else state
    return "-"


def _print_status_table(statuses: list) -> None:
    from flatnet.lab.progress import display_width, pad

    header = [i18n.text(f"lab.column_{key}") for key in (
        "host", "netns", "lan", "nebula_address", "subnet", "nebula", "gateway", "health",
    )]
    rows = [header]
    for status in statuses:
        member = status.member
        health = "-"
        if status.health is not None:
            health = i18n.text("lab.health_ok") if status.health.ok else status.health.describe()
        rows.append([
            member.name, member.netns, member.lan_address, member.nebula_address or "-",
            member.subnet or "-", _describe_process(status.processes, "nebula"),
            _describe_process(status.processes, "gateway"), health,
        ])
    widths = [max(display_width(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print("  ".join(pad(cell, width) for cell, width in zip(row, widths)).rstrip())

