"""Render the configuration files of one lab host: nebula.yml, gateway.toml, containers.conf
and the CNI conflist. Pure functions of the host id, the lab's host ids and its paths.

Strings are written with ``json.dumps``: a JSON string is also a valid TOML basic string and a
valid YAML double-quoted scalar, so any lab path is quoted correctly in all three formats.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flatnet.lab import layout
from flatnet.lab.layout import LabPaths

LIGHTHOUSE_ID = 1
RESYNC_SECONDS = 30
MAX_HEARTBEAT_SECONDS = 5


@dataclass(frozen=True)
class LabSettings:
    """Settings of one lab: host ids 1..hosts, registry TTL in seconds, overlay MTU in bytes."""

    hosts: int
    ttl: int
    mtu: int

    @property
    def host_ids(self) -> range:
        return range(1, self.hosts + 1)


def _quote(value: str | Path) -> str:
    return json.dumps(str(value))


def heartbeat_seconds(ttl: int) -> int:
    """Return the gateway heartbeat interval for a TTL: at most 5 s and at most a third of the TTL.

    A peer that heartbeats less often than the TTL would see its containers expire between
    two heartbeats, which matters for labs started with a short ``--ttl``.
    """
    return max(1, min(MAX_HEARTBEAT_SECONDS, ttl // 3))


def render_nebula_config(paths: LabPaths, host_id: int, settings: LabSettings) -> str:
    """Render nebula.yml for ``host_id``.

    Host 1 is the lighthouse and the only entry of ``static_host_map``; the others learn each
    other's underlay addresses from it. Every other host's container subnet is an unsafe route
    via that host's Nebula address, which Nebula accepts only because each certificate carries
    its host's subnet.
    """
    name = layout.host_name(host_id)
    lighthouse = layout.nebula_address(LIGHTHOUSE_ID)
    is_lighthouse = host_id == LIGHTHOUSE_ID
    lighthouse_hosts = "[]" if is_lighthouse else f'["{lighthouse}"]'
    lines = [
        "pki:",
        f"  ca: {_quote(paths.ca_cert())}",
        f"  cert: {_quote(paths.host_cert(name))}",
        f"  key: {_quote(paths.host_key(name))}",
        "static_host_map:",
        f'  "{lighthouse}": ["{layout.lan_address(LIGHTHOUSE_ID)}:{layout.NEBULA_PORT}"]',
        "lighthouse:",
        f"  am_lighthouse: {'true' if is_lighthouse else 'false'}",
        "  interval: 60",
        f"  hosts: {lighthouse_hosts}",
        "listen:",
        "  host: 0.0.0.0",
        f"  port: {layout.NEBULA_PORT}",
        "punchy:",
        "  punch: true",
        "tun:",
        f"  dev: {layout.NEBULA_DEVICE}",
        f"  mtu: {settings.mtu}",
    ]
    peers = [peer for peer in settings.host_ids if peer != host_id]
    if peers:
        lines.append("  unsafe_routes:")
        for peer in peers:
            lines.append(
                f"    - {{route: {layout.container_subnet(peer)}, via: {layout.nebula_address(peer)}}}"
            )
    else:
        lines.append("  unsafe_routes: []")
    lines += [
        # Millisecond timestamps make handshake timings readable in nebula.log.
        "logging:",
        "  level: info",
        "  format: text",
        '  timestamp_format: "2006-01-02T15:04:05.000Z07:00"',
        "firewall:",
        "  outbound:",
        "    - {port: any, proto: any, host: any}",
        "  inbound:",
        "    - {port: any, proto: any, host: any}",
    ]
    return "\n".join(lines) + "\n"


def render_gateway_config(paths: LabPaths, host_id: int, settings: LabSettings) -> str:
    """Render the gateway's TOML settings for ``host_id``, with every other lab host as a peer."""
    name = layout.host_name(host_id)
    lines = [
        f"host_id = {host_id}",
        f"data_dir = {_quote(paths.data_dir(name))}",
        f'api_listen = "{layout.nebula_address(host_id)}:{layout.API_PORT}"',
        f'proxy_listen = "{layout.lan_address(host_id)}:{layout.PROXY_PORT}"',
        f"access_log = {_quote(paths.access_log(name))}",
        f'domain = "{layout.DOMAIN}"',
        f"ttl = {settings.ttl}",
        f"resync = {RESYNC_SECONDS}",
        f"heartbeat = {heartbeat_seconds(settings.ttl)}",
    ]
    for peer in settings.host_ids:
        if peer == host_id:
            continue
        lines += ["", "[[peers]]", f"host_id = {peer}", f'api = "{layout.api_url(peer)}"']
    return "\n".join(lines) + "\n"


def render_containers_conf(paths: LabPaths, host_id: int, plugin_dirs: Sequence[Path]) -> str:
    """Render the containers.conf that every podman command of ``host_id`` runs with.

    runc and cgroupfs because crun rejects a hybrid cgroup layout; ``default_ulimits = []``
    because the runtime may not raise RLIMIT_NOFILE here. The annotation marks the host's
    containers for `lab down`, and a per-host events log keeps podman's shared one from growing.
    """
    name = layout.host_name(host_id)
    dirs = ", ".join(_quote(directory) for directory in plugin_dirs)
    return "\n".join([
        "[containers]",
        "default_ulimits = []",
        f'annotations = ["{layout.HOST_ANNOTATION}={host_id}"]',
        "",
        "[network]",
        'network_backend = "cni"',
        f"cni_plugin_dirs = [{dirs}]",
        f"network_config_dir = {_quote(paths.cni_config_dir(name))}",
        f'default_network = "{layout.NETWORK_NAME}"',
        "",
        "[engine]",
        'runtime = "runc"',
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        f"events_logfile_path = {_quote(paths.podman_events_log(name))}",
        "",
    ])


def render_conflist(paths: LabPaths, host_id: int, settings: LabSettings) -> str:
    """Render the CNI network list that runs flatnet's plugin on ``host_id``."""
    name = layout.host_name(host_id)
    plugin = {
        "type": "flatnet",
        "hostId": host_id,
        "ipRange": str(layout.container_subnet(host_id)),
        "gateway": str(layout.bridge_address(host_id)),
        "registryEndpoints": [layout.api_url(host_id)],
        "dataDir": str(paths.data_dir(name)),
        "bridge": layout.CONTAINER_BRIDGE,
        "mtu": settings.mtu,
    }
    network = {"cniVersion": "1.0.0", "name": layout.NETWORK_NAME, "plugins": [plugin]}
    return json.dumps(network, indent=2) + "\n"
