"""`flatnet status`: this host's gateway and its view of the fleet, for people or tools."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from flatnet import i18n
from flatnet.errors import FlatnetError
from flatnet.gateway.settings import load_settings
from flatnet.lab.progress import display_width, pad

DEFAULT_CONFIG = Path("/etc/flatnet/gateway.toml")

i18n.define({
    "status.unreachable": (
        "gateway API {url} is not answering ({error}); is flatnet-gateway running, and is Nebula up?",
        "ゲートウェイ API {url} が応答しません ({error})。flatnet-gateway と Nebula が動いているか確認してください",
    ),
    "status.bad_answer": ("gateway API {url} returned {detail}", "ゲートウェイ API {url} の応答が不正です: {detail}"),
    "status.header": (
        "host {host_id}  node {node}  epoch {epoch}  up {uptime}  containers {containers}",
        "ホスト {host_id}  ノード {node}  エポック {epoch}  稼働 {uptime}  コンテナー {containers}",
    ),
    "status.peers": ("\nPeers", "\nピア"),
    "status.no_peers": ("  (none configured)", "  (設定なし)"),
    "status.invalid_api": (
        "{value!r} is not an http(s) URL ({reason}): give the gateway API's URL with scheme, address and port,"
        " e.g. --api http://10.100.0.1:8080",
        "{value!r} は http(s) の URL ではありません（{reason}）。スキーム、アドレス、ポートを含むゲートウェイ API の URL を"
        "指定してください（例: --api http://10.100.0.1:8080）",
    ),
    "status.api_scheme": ("the scheme must be http or https", "スキームは http か https にしてください"),
    "status.api_no_host": ("the host is missing", "ホストがありません"),
    "status.api_bad_port": ("the port is not a number from 1 to 65535", "ポートが 1 から 65535 までの数ではありません"),
    "status.invalid_json": ("invalid JSON: {error}", "JSON として不正です: {error}"),
    "status.unexpected_shape": ("JSON of an unexpected shape", "想定外の形の JSON です"),
    "status.column_peer": ("PEER", "ピア"),
    "status.column_address": ("ADDRESS", "アドレス"),
    "status.column_state": ("STATE", "状態"),
    "status.column_heard": ("LAST HEARD", "最終受信"),
    "status.column_lag": ("LAG", "遅れ"),
    "status.column_sync": ("SYNC", "同期"),
    "status.in_sync": ("in sync", "同期済み"),
    "status.in_sync_since": ("in sync since {since}", "{since} から同期済み"),
    "status.repairs": (", {count} repaired", "、修復 {count} 回"),
    "status.behind": ("behind by {lag}", "{lag} 件遅れ"),
    "status.expired": ("expired", "期限切れ"),
    "status.containers": ("\nContainers per host", "\nホストごとのコンテナー数"),
    "status.container_row": ("  host {host_id:<4} {count:>5}  ({expired})", "  ホスト {host_id:<4} {count:>5}  ({expired})"),
    "status.live": ("live", "有効"),
    "status.conflicts": ("\nName conflicts (winner first)", "\n名前の衝突 (先頭が優先)"),
    "status.conflict_row": ("  {name}: {ids}", "  {name}: {ids}"),
})


def api_url_problem(value: str) -> str | None:
    """Return why ``value`` is not a usable gateway API URL (http or https, a host, a port from 1 to 65535), or None."""
    parts = urllib.parse.urlsplit(value)
    reason = None
    if parts.scheme not in ("http", "https"):
        reason = "status.api_scheme"
    elif not parts.hostname:
        reason = "status.api_no_host"
    else:
        try:
            port = parts.port
        except ValueError:
            # urllib raises it for a port that is not a number from 0 to 65535.
            port = 0
        if port == 0:
            reason = "status.api_bad_port"
    if reason is None:
        return None
    return i18n.text("status.invalid_api", value=value, reason=i18n.text(reason))


def _fetch(url: str, timeout: float) -> object:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        raise FlatnetError(i18n.text("status.bad_answer", url=url, detail=f"HTTP {error.code}")) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise FlatnetError(i18n.text("status.unreachable", url=url, error=reason)) from None
    # Only a body that fails to parse is a bad response. urlopen's own ValueError (an unknown URL type) is about the URL.
    try:
        return json.loads(body)
    except ValueError as error:
        raise FlatnetError(i18n.text("status.bad_answer", url=url, detail=i18n.text("status.invalid_json", error=error))) from None


def collect(config: Path | None, api: str | None, timeout: float = 3.0) -> dict:
    """Gather this host's status from its gateway's API into one JSON-ready dict."""
    peers_config: dict[str, str] = {}
    if api is not None and (problem := api_url_problem(api)) is not None:
        raise FlatnetError(problem)
    if api is None:
        settings = load_settings(config or DEFAULT_CONFIG)
        api = f"http://{settings.api_listen}"
        peers_config = {str(peer.host_id): peer.base_url for peer in settings.peers}
    api = api.rstrip("/")

    health = _fetch(f"{api}/api/health", timeout)
    containers = _fetch(f"{api}/api/containers", timeout)
    if not isinstance(health, dict) or not isinstance(containers, list):
        raise FlatnetError(i18n.text("status.bad_answer", url=api, detail=i18n.text("status.unexpected_shape")))

    per_host: dict[str, dict] = {}
    for entry in containers:
        host = per_host.setdefault(str(entry["hostId"]), {"containers": 0, "expired": entry["ttl"] == 0})
        host["containers"] += 1
    peers = {}
    for peer, state in health.get("peers", {}).items():
        lag = max(0, state["remoteHead"] - state["replicaHead"])
        in_sync = state["state"] == "connected" and lag == 0 and not state["expired"]
        peers[peer] = dict(state, address=peers_config.get(peer), lag=lag, inSync=in_sync)
    return {
        "api": api,
        "hostId": health["hostId"],
        "node": health["node"],
        "epoch": health["epoch"],
        "uptimeSeconds": health["uptimeSeconds"],
        "vector": health["vector"],
        "containers": len(containers),
        "hosts": per_host,
        "peers": peers,
        "conflicts": health.get("conflicts", {}),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _align(rows: list[list[str]], right_aligned: set[int]) -> list[str]:
    """Lay ``rows`` out in columns measured in terminal columns, where a Japanese character takes two."""
    widths = [max(display_width(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            " " * (width - display_width(cell)) + cell if column in right_aligned else pad(cell, width)
            for column, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append(("  " + "  ".join(cells)).rstrip())
    return lines


def render(status: dict) -> str:
    """Format ``status`` as the table a person reads."""
    lines = [i18n.text(
        "status.header", host_id=status["hostId"], node=status["node"][:8], epoch=status["epoch"],
        uptime=_duration(status["uptimeSeconds"]), containers=status["containers"],
    )]

    lines.append(i18n.text("status.peers"))
    if not status["peers"]:
        lines.append(i18n.text("status.no_peers"))
    else:
        table = [[i18n.text(f"status.column_{key}") for key in ("peer", "address", "state", "heard", "lag", "sync")]]
        for peer, state in sorted(status["peers"].items(), key=lambda item: int(item[0])):
            if state["expired"]:
                sync = i18n.text("status.expired")
            elif state["inSync"] and state.get("inSyncSince"):
                sync = i18n.text("status.in_sync_since", since=state["inSyncSince"])
            elif state["inSync"]:
                sync = i18n.text("status.in_sync")
            else:
                sync = i18n.text("status.behind", lag=state["lag"])
            if state.get("repairs"):
                sync += i18n.text("status.repairs", count=state["repairs"])
            table.append([
                peer, state["address"] or "-", state["state"], _duration(state["lastHeardSecondsAgo"]), str(state["lag"]), sync,
            ])
        lines += _align(table, right_aligned={3, 4})

    lines.append(i18n.text("status.containers"))
    for host_id, host in sorted(status["hosts"].items(), key=lambda item: int(item[0])):
        expired = i18n.text("status.expired") if host["expired"] else i18n.text("status.live")
        lines.append(i18n.text("status.container_row", host_id=host_id, count=host["containers"], expired=expired))

    if status["conflicts"]:
        lines.append(i18n.text("status.conflicts"))
        for name, ids in sorted(status["conflicts"].items()):
            lines.append(i18n.text("status.conflict_row", name=name, ids=", ".join(i[:12] for i in ids)))
    return "\n".join(lines)


def run_status(config: Path | None, api: str | None, *, as_json: bool, watch: float | None) -> int:
    """Print the status once, or every ``watch`` seconds until interrupted."""
    while True:
        status = collect(config, api)
        text = json.dumps(status, indent=2) if as_json else render(status)
        if watch is None:
            print(text)
            return 0
        # Clear the screen and redraw in place, as watch(1) does.
        sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
        sys.stdout.flush()
        time.sleep(watch)
