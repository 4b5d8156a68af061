"""The `flatnet routes`, `flatnet nebula` and `flatnet doctor` subcommands: parsing and output only.

The modules that do the work (pyroute2 among their imports) load only when a subcommand runs,
because every `flatnet` command builds this parser.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from flatnet import i18n
from flatnet.help_format import add_command
from flatnet.errors import FlatnetError

DEFAULT_CONFIG = Path("/etc/flatnet/gateway.toml")
DEFAULT_NEBULA_CONFIG = Path("/etc/nebula/config.yml")

i18n.define({
    "routing.help_routes": ("show or apply the routes to the other hosts' container subnets", "他ホストのコンテナーサブネットへの経路を表示・適用します"),
    "routing.help_show": ("list wanted and kernel routes with a status for each", "望ましい経路とカーネルの経路を状態付きで一覧表示します"),
    "routing.help_apply": ("make the kernel's routes match the wanted ones", "カーネルの経路を望ましい経路に合わせます"),
    "routing.help_dry_run": ("print the changes without making them", "変更を表示するだけで実行しません"),
    "routing.help_config": ("the gateway's TOML config (default {path})", "ゲートウェイの TOML 設定ファイル（既定 {path}）"),
    "routing.help_json": ("print JSON for tools instead of a table", "表の代わりにツール向けの JSON を出力します"),
    "routing.help_nebula": ("the fleet-dependent parts of this host's Nebula setup", "このホストの Nebula 設定のうちフリートに依存する部分"),
    "routing.help_nebula_config": ("print, or merge into a file, the unsafe routes and firewall rules of the fleet", "フリートの unsafe_routes とファイアウォール規則を表示、またはファイルへ統合します"),
    "routing.help_write": ("merge them into this Nebula config file, rewriting it only when they change", "この Nebula 設定ファイルへ統合します（変わるときだけ書き換えます）"),
    "routing.help_restart": (
        "after the file changed, restart Nebula: a systemd unit, or the PID of the running nebula",
        "ファイルが変わったら Nebula を再起動します: systemd ユニット、または動いている nebula の PID",
    ),
    "routing.help_sign": ("sign a host certificate carrying the host's container subnet, with nebula-cert", "ホストのコンテナーサブネットを含む証明書を nebula-cert で署名します"),
    "routing.help_host_id": ("the host's id, 1-254", "ホスト ID（1〜254）"),
    "routing.help_ca_crt": ("the CA certificate (default ca.crt)", "CA 証明書（既定 ca.crt）"),
    "routing.help_ca_key": ("the CA key (default ca.key)", "CA の鍵（既定 ca.key）"),
    "routing.help_out_crt": ("where to write the certificate (default h<id>.crt)", "証明書の書き込み先（既定 h<id>.crt）"),
    "routing.help_out_key": ("where to write the key (default h<id>.key)", "鍵の書き込み先（既定 h<id>.key）"),
    "routing.help_name": ("the certificate's name (default h<id>)", "証明書の名前（既定 h<id>）"),
    "routing.help_duration": ("validity, e.g. 8760h (default: until the CA expires)", "有効期間、例 8760h（既定: CA の期限まで）"),
    "routing.help_doctor": ("check the path from this host to one peer and name the first broken link", "このホストから 1 台のピアへの経路を確認し、最初に壊れているリンクを示します"),
    "routing.help_peer": ("the peer's host id", "ピアのホスト ID"),
    "routing.help_nebula_file": ("this host's Nebula config, to read its certificate (default {path})", "証明書を読むためのこのホストの Nebula 設定（既定 {path}）"),
    "routing.help_container": ("ping this container address instead of one from the gateway's view", "ゲートウェイのビューから選ぶ代わりにこのコンテナーのアドレスへ ping します"),
    "routing.invalid_host_id": (
        "{value!r} is not a host id: use a whole number from 1 to 254",
        "{value!r} はホスト ID ではありません。1 から 254 の整数を指定してください",
    ),
    "routing.invalid_address": ("{value!r} is not an IPv4 address like 10.100.2.10", "{value!r} は 10.100.2.10 のような IPv4 アドレスではありません"),
    "routing.restart_needs_write": ("--restart needs --write FILE: Nebula is restarted after its file changed", "--restart には --write FILE が必要です。Nebula はファイルが変わった後に再起動されます"),
    "routing.mode_off": (
        "[routes] mode is \"off\" in {config}, so flatnet changes no route; set mode = \"dev\" or \"via\" there",
        "{config} の [routes] mode が \"off\" なので flatnet は経路を変更しません。mode = \"dev\" か \"via\" を設定してください",
    ),
    "routing.gateway_silent": (
        "note: the gateway at {url} did not answer ({error}); every configured peer counts as live",
        "注意: {url} のゲートウェイが応答しません（{error}）。設定されたピアをすべて有効とみなします",
    ),
    "routing.expired": ("expired peers: {peers}", "期限切れのピア: {peers}"),
    "routing.column_prefix": ("PREFIX", "プレフィックス"),
    "routing.column_status": ("STATUS", "状態"),
    "routing.column_host": ("HOST", "ホスト"),
    "routing.column_wanted": ("WANTED", "望ましい経路"),
    "routing.column_kernel": ("IN THE KERNEL", "カーネル上の経路"),
    "routing.column_note": ("NOTE", "備考"),
    "routing.no_routes": ("no routes to show: no live peers and no routes to container subnets", "表示する経路はありません（有効なピアも、コンテナーサブネットへの経路もありません）"),
    "routing.would": ("would {action} route {route}", "経路 {route} を{action}予定"),
    "routing.did": ("{action} route {route}", "経路 {route} を{action}"),
    "routing.action_add": ("add", "追加"),
    "routing.action_replace": ("replace", "置換"),
    "routing.action_delete": ("delete", "削除"),
    "routing.did_add": ("added", "追加しました"),
    "routing.did_replace": ("replaced", "置き換えました"),
    "routing.did_delete": ("deleted", "削除しました"),
    "routing.nothing_to_do": ("routes already match: nothing to change", "経路はすでに一致しています。変更はありません"),
    "routing.blocked": ("cannot add {route}: {note}", "{route} を追加できません: {note}"),
    "routing.updated": ("updated {path}; unsafe routes: {routes}", "{path} を更新しました。unsafe_routes: {routes}"),
    "routing.unchanged": ("{path} unchanged; unsafe routes: {routes}", "{path} は変更なし。unsafe_routes: {routes}"),
    "routing.not_restarted": ("Nebula not restarted: its config did not change", "設定が変わっていないので Nebula は再起動していません"),
    "routing.signed": ("signed {crt} (key {key}): {address}/24, subnet {subnet}", "{crt} に署名しました（鍵 {key}）: {address}/24、サブネット {subnet}"),
})


def _host_id(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 254:
        raise argparse.ArgumentTypeError(i18n.text("routing.invalid_host_id", value=value))
    return int(value)


def _address(value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise argparse.ArgumentTypeError(i18n.text("routing.invalid_address", value=value)) from None


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
        help=i18n.text("routing.help_config", path=DEFAULT_CONFIG),
    )


def register(commands: argparse._SubParsersAction) -> None:
    """Add `routes`, `nebula` and `doctor` to the `flatnet` parser's subcommands."""
    routes = add_command(commands, "routes", i18n.text("routing.help_routes"))
    route_actions = routes.add_subparsers(dest="routes_command", required=True, metavar="COMMAND")
    show = add_command(route_actions, "show", i18n.text("routing.help_show"))
    _add_config(show)
    show.add_argument("--json", action="store_true", help=i18n.text("routing.help_json"))
    show.set_defaults(run=run_routes_show)
    apply = add_command(route_actions, "apply", i18n.text("routing.help_apply"))
    _add_config(apply)
    apply.add_argument("--dry-run", action="store_true", help=i18n.text("routing.help_dry_run"))
    apply.set_defaults(run=run_routes_apply)

    nebula = add_command(commands, "nebula", i18n.text("routing.help_nebula"))
    nebula_actions = nebula.add_subparsers(dest="nebula_command", required=True, metavar="COMMAND")
    config = add_command(nebula_actions, "config", i18n.text("routing.help_nebula_config"))
    _add_config(config)
    config.add_argument("--write", type=Path, metavar="FILE", help=i18n.text("routing.help_write"))
    config.add_argument("--restart", metavar="UNIT_OR_PID", help=i18n.text("routing.help_restart"))
    config.set_defaults(run=run_nebula_config)
    sign = add_command(nebula_actions, "sign", i18n.text("routing.help_sign"))
    sign.add_argument("--host-id", type=_host_id, required=True, help=i18n.text("routing.help_host_id"))
    sign.add_argument("--ca-crt", type=Path, default=Path("ca.crt"), help=i18n.text("routing.help_ca_crt"))
    sign.add_argument("--ca-key", type=Path, default=Path("ca.key"), help=i18n.text("routing.help_ca_key"))
    sign.add_argument("--out-crt", type=Path, help=i18n.text("routing.help_out_crt"))
    sign.add_argument("--out-key", type=Path, help=i18n.text("routing.help_out_key"))
    sign.add_argument("--name", help=i18n.text("routing.help_name"))
    sign.add_argument("--duration", help=i18n.text("routing.help_duration"))
    sign.set_defaults(run=run_nebula_sign)

    doctor = add_command(commands, "doctor", i18n.text("routing.help_doctor"))
    doctor.add_argument("peer", type=_host_id, metavar="HOST_ID", help=i18n.text("routing.help_peer"))
    _add_config(doctor)
    doctor.add_argument(
        "--nebula-config", type=Path, default=DEFAULT_NEBULA_CONFIG, metavar="FILE",
        help=i18n.text("routing.help_nebula_file", path=DEFAULT_NEBULA_CONFIG),
    )
    doctor.add_argument("--container", type=_address, metavar="ADDRESS", help=i18n.text("routing.help_container"))
    doctor.set_defaults(run=run_doctor)


def _expired_peers(settings, url: str) -> frozenset[int] | str:
    """Return the peers the gateway counts as expired, or why it could not be asked."""
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
            health = json.loads(response.read())
        return frozenset(int(peer) for peer, status in health.get("peers", {}).items() if status.get("expired"))
    except (OSError, ValueError, AttributeError) as error:
        return str(getattr(error, "reason", None) or error)


def _fleet(settings):
    from flatnet.routes import Fleet

    url = f"http://{settings.api_listen}"
    expired = _expired_peers(settings, url)
    if isinstance(expired, str):
        print(i18n.text("routing.gateway_silent", url=url, error=expired), file=sys.stderr)
        expired = frozenset()
    peers = frozenset(peer.host_id for peer in settings.peers)
    return Fleet(settings.host_id, peers, expired & peers)


def _survey(args: argparse.Namespace):
    from flatnet.gateway.settings import load_settings
    from flatnet.routes import RouteTable, survey

    settings = load_settings(args.config)
    fleet = _fleet(settings)
    with RouteTable() as table:
        rows = survey(table, settings.routes, fleet)
    return settings, fleet, rows


def _path(route, prefix) -> str:
    if route is None:
        return "-"
    text = route.describe()
    return text.removeprefix(f"{prefix} ")


def run_routes_show(args: argparse.Namespace) -> int:
    _, fleet, rows = _survey(args)
    if args.json:
        print(json.dumps([{
            "prefix": str(row.prefix), "status": row.status.value, "host": row.host_id,
            "wanted": row.wanted.describe() if row.wanted else None,
            "kernel": row.kernel.describe() if row.kernel else None,
            "notes": [note.key for note in row.notes], "note": row.note_text(),
        } for row in rows], indent=2))
        return 0
    if fleet.expired:
        print(i18n.text("routing.expired", peers=", ".join(map(str, sorted(fleet.expired)))))
    if not rows:
        print(i18n.text("routing.no_routes"))
        return 0
    table = [[i18n.text(f"routing.column_{key}") for key in ("prefix", "status", "host", "wanted", "kernel", "note")]]
    for row in rows:
        table.append([
            str(row.prefix), row.status.value, str(row.host_id or "-"),
            _path(row.wanted, row.prefix), _path(row.kernel, row.prefix), row.note_text() or "",
        ])
    _print_table(table)
    return 0


def _print_table(rows: list[list[str]]) -> None:
    from flatnet.lab.progress import display_width, pad

    widths = [max(display_width(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(pad(cell, width) for cell, width in zip(row, widths)).rstrip())


def run_routes_apply(args: argparse.Namespace) -> int:
    from flatnet.gateway.route_settings import RouteMode
    from flatnet.gateway.settings import load_settings
    from flatnet.routes import RouteTable, apply, blocked_rows, plan, survey

    settings = load_settings(args.config)
    if settings.routes.mode is RouteMode.OFF:
        raise FlatnetError(i18n.text("routing.mode_off", config=args.config))
    fleet = _fleet(settings)
    with RouteTable() as table:
        rows = survey(table, settings.routes, fleet)
        changes = plan(rows)
        for row in blocked_rows(rows):
            print(i18n.text("routing.blocked", route=row.wanted.describe(), note=row.note_text()), file=sys.stderr)
        if args.dry_run:
            for change in changes:
                action = i18n.text(f"routing.action_{change.action.value}")
                print(i18n.text("routing.would", action=action, route=change.route.describe()))
            if not changes:
                print(i18n.text("routing.nothing_to_do"))
            return 0
        result = apply(table, changes)
    for change in result.done:
        print(i18n.text("routing.did", action=i18n.text(f"routing.did_{change.action.value}"), route=change.route.describe()))
    for _, error in result.failed:
        print(i18n.text("cli.error", message=error), file=sys.stderr)
    if not changes:
        print(i18n.text("routing.nothing_to_do"))
    return 1 if result.failed else 0


def run_nebula_config(args: argparse.Namespace) -> int:
    from flatnet import nebula
    from flatnet.gateway.settings import load_settings

    if args.restart and not args.write:
        raise FlatnetError(i18n.text("routing.restart_needs_write"))
    settings = load_settings(args.config)
    peers = [peer.host_id for peer in settings.peers]
    if args.write is None:
        sys.stdout.write(nebula.render_fleet_config(settings.host_id, peers))
        return 0

    update = nebula.update_config_file(args.write, settings.host_id, peers)
    routes = ", ".join(update.routes_after) or "-"
    print(i18n.text("routing.updated" if update.changed else "routing.unchanged", path=update.path, routes=routes))
    if args.restart:
        if update.changed:
            print(nebula.restart(args.restart))
        else:
            print(i18n.text("routing.not_restarted"))
    return 0


def run_nebula_sign(args: argparse.Namespace) -> int:
    from flatnet import nebula

    out_crt = args.out_crt or Path(f"h{args.host_id}.crt")
    out_key = args.out_key or Path(f"h{args.host_id}.key")
    nebula.sign(
        args.host_id, ca_crt=args.ca_crt, ca_key=args.ca_key, out_crt=out_crt, out_key=out_key,
        name=args.name, duration=args.duration,
    )
    print(i18n.text(
        "routing.signed", crt=out_crt, key=out_key, address=nebula.nebula_address(args.host_id),
        subnet=nebula.container_subnet(args.host_id),
    ))
    return 0


def run_doctor(args: argparse.Namespace) -> int:
    from flatnet import doctor
    from flatnet.gateway.settings import load_settings

    settings = load_settings(args.config)
    report = doctor.run_doctor(
        settings, args.peer, config_path=args.config, nebula_config=args.nebula_config, container=args.container,
    )
    print(doctor.render(report))
    return 0 if report.first_broken is None else 1
