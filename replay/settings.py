"""The gateway settings a replay routes with: the gateway's config file, or what the data directory shows.

Routing reads the host id, the domain, the peers' API addresses (a peer
decision's target) and the stale policy. A copied data directory may come
without its config. Then each of these is taken from what the gateway wrote:
the host id from its snapshots or its own log, the rest from its decision
records. Targets learned that way are checked for agreement between records,
not against a config, and a peer that no record shows an address for gets a
name under ``.invalid``.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from flatnet import i18n
from flatnet.errors import FlatnetError
from flatnet.events import snapshot as snapshots
from flatnet.gateway.settings import Settings, load_settings
from flatnet.replay.datadir import DataDir

# Stands for a peer's API address that no record shows.
UNKNOWN_ADDRESS = "address-unknown.invalid"

i18n.define({
    "replay.no_host_id": (
        "cannot tell which host wrote {path}: it has no snapshot, no own events and no local decision;"
        " give the gateway's config with --config",
        "{path} をどのホストが書いたか判別できません（スナップショット、自ホストのイベント、decision が local の判断レコードがありません）。"
        "--config でゲートウェイの設定を指定してください",
    ),
    "replay.config_other_dir": (
        "the config {config} is for host {config_host}, but {path} was written by host {data_host};"
        " give the config of the gateway that wrote this data directory",
        "設定 {config} はホスト {config_host} 用ですが、{path} はホスト {data_host} が書いたものです。"
        "このデータディレクトリーを書いたゲートウェイの設定を指定してください",
    ),
})


@dataclasses.dataclass(frozen=True)
class ReplaySettings:
    """Settings for the Router, and where they came from (a config path, or None when inferred)."""

    settings: Settings
    config: Path | None


def from_config(path: Path, data_dir: DataDir, snapshot_list: list[snapshots.Snapshot]) -> ReplaySettings:
    # NOTE: one config routes the whole history. The gateway does not record a
    # peer reload (SIGHUP) or a restart with another config, so decisions made
    # under other settings come out divergent. Recording the settings of each
    # start and reload in the data directory would let replay follow them.
    settings = load_settings(path)
    written_by = own_host(data_dir, snapshot_list)
    if written_by is not None and written_by != settings.host_id:
        raise FlatnetError(i18n.text(
            "replay.config_other_dir", config=path, config_host=settings.host_id, path=data_dir.path, data_host=written_by,
        ))
    return ReplaySettings(settings, path)


def infer(data_dir: DataDir, snapshot_list: list[snapshots.Snapshot], shapes: Iterable[tuple[dict[str, Any], int]]) -> ReplaySettings:
    """Settings learned from ``data_dir`` and from decision record fields with their record counts."""
    shapes = list(shapes)
    host_id = own_host(data_dir, snapshot_list)
    if host_id is None:
        local: collections.Counter[int] = collections.Counter()
        for fields, count in shapes:
            if fields.get("decision") == "local" and isinstance(fields.get("owner"), int):
                local[fields["owner"]] += count
        host_id = min(local, key=lambda owner: (-local[owner], owner)) if local else None
    if host_id is None:
        raise FlatnetError(i18n.text("replay.no_host_id", path=data_dir.path))

    domains: collections.Counter[str] = collections.Counter()
    targets: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    policies: collections.Counter[str] = collections.Counter()
    hops = set()
    for fields, count in shapes:
        hops.add(fields.get("hop"))
        domain = _domain_of(fields.get("host"), fields.get("name"))
        if domain is not None:
            domains[domain] += count
        owner, target = fields.get("owner"), fields.get("target")
        # A peer decision's target is the owner's gateway, and so is the target a
        # retried request keeps from its first attempt when the retry found nothing.
        routed = fields.get("decision") in ("peer", "stale-retry") or (owner is not None and fields.get("retried_from") == owner)
        if routed and isinstance(owner, int) and owner != host_id and isinstance(target, str) and target.startswith("http://"):
            targets[owner][target] += count
        if isinstance(fields.get("stale_policy"), str):
            policies[fields["stale_policy"]] += count

    # Every other origin with a log, and every gateway that forwarded a request here, was a peer too.
    # Where no record shows its address, a name under .invalid (RFC 2606) stands for it.
    peers = {owner: _most_common(seen) for owner, seen in targets.items()}
    others = {files.origin for files in data_dir.origins()} | {hop for hop in hops if isinstance(hop, int)}
    for origin in others - set(peers) - {host_id}:
        if 1 <= origin <= 254:
            peers[origin] = f"http://host-{origin}.{UNKNOWN_ADDRESS}"
    values: dict[str, Any] = {
        "host_id": host_id,
        "data_dir": str(data_dir.path),
        # Never used by routing; the Settings model requires them.
        "api_listen": "127.0.0.1:8080",
        "proxy_listen": "127.0.0.1:80",
        "peers": [{"host_id": owner, "api": api} for owner, api in sorted(peers.items())],
    }
    if domains:
        values["domain"] = _most_common(domains)
    if policies:
        values["stale_policy"] = _most_common(policies)
    try:
        return ReplaySettings(Settings.model_validate(values), None)
    except ValidationError as error:
        raise FlatnetError(f"the settings inferred from {data_dir.path} are invalid ({error}); give the gateway's config with --config") from None


def own_host(data_dir: DataDir, snapshot_list: list[snapshots.Snapshot]) -> int | None:
    """Find the host id of the gateway that wrote ``data_dir``: from a snapshot, else its node id in its own log, else its empty own log."""
    for snapshot in reversed(snapshot_list):
        if 1 <= snapshot.origin <= 254:
            return snapshot.origin
    node = data_dir.node()
    origins = data_dir.origins()
    for files in origins:
        if not files.segments or node is None:
            continue
        with open(files.segments[0], "rb") as segment:
            first_line = segment.readline()
        try:
            if orjson.loads(first_line).get("node") == node:
                return files.origin
        except (orjson.JSONDecodeError, AttributeError):
            continue
    # The gateway opens its own log at start, so before its first own event
    # its origin is the one folder without segments.
    empty = [files.origin for files in origins if not files.segments and files.compacted_through == 0]
    return empty[0] if len(empty) == 1 else None


def _domain_of(host: Any, name: Any) -> str | None:
    if not isinstance(host, str) or not isinstance(name, str) or not name:
        return None
    value = host.strip().lower().partition(":")[0].rstrip(".")
    prefix = name + "."
    if not value.startswith(prefix) or len(value) == len(prefix):
        return None
    return value[len(prefix):]


def _most_common(counter: collections.Counter[str]) -> str:
    return min(counter, key=lambda value: (-counter[value], value))
