"""Render the configuration files of one lab host: nebula.yml, gateway.toml, containers.conf
and the CNI conflist. Pure functions of the host id, the lab's settings, the fleet and its paths.

nebula.yml is dumped by PyYAML. Strings in the other files are written with ``json.dumps``: a
JSON string is also a valid TOML basic string, so any lab path is quoted correctly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flatnet import nebula
from flatnet.lab import layout
from flatnet.lab.layout import LabPaths

LIGHTHOUSE_ID = 1
RESYNC_SECONDS = 30
MAX_HEARTBEAT_SECONDS = 5


@dataclass(frozen=True)
class LabSettings:
    """Settings of one lab: host ids 1..hosts, registry TTL in seconds, overlay MTU in bytes.

    ``wsl`` hosts run as WSL2 behind a namespace that plays Windows and runs their Nebula.
    ``joined_later`` hosts are built but join the fleet only with `flatnet lab join`.
    """

    hosts: int
    ttl: int
    mtu: int
    wsl: tuple[int, ...] = ()
    joined_later: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # lab.json stores these as JSON lists.
        object.__setattr__(self, "wsl", tuple(self.wsl))
        object.__setattr__(self, "joined_later", tuple(self.joined_later))

    @property
    def host_ids(self) -> range:
        return range(1, self.hosts + 1)

    @property
    def initial_fleet(self) -> tuple[int, ...]:
        """Return the hosts that form the fleet when the lab comes up."""
        return tuple(host_id for host_id in self.host_ids if host_id not in self.joined_later)

    def is_wsl(self, host_id: int) -> bool:
        return host_id in self.wsl


def _quote(value: str | Path) -> str:
    return json.dumps(str(value))


def heartbeat_seconds(ttl: int) -> int:
    """Return the gateway heartbeat interval for a TTL: at most 5 s and at most a third of the TTL.

    A peer that heartbeats less often than the TTL would see its containers expire between
    two heartbeats, which matters for labs started with a short ``--ttl``.
    """
    return max(1, min(MAX_HEARTBEAT_SECONDS, ttl // 3))


def nebula_base_config(paths: LabPaths, host_id: int, settings: LabSettings) -> dict:
    """Return the part of host ``host_id``'s nebula.yml that does not depend on the fleet.

    Host 1 is the lighthouse and the only entry of ``static_host_map``; the others learn each
    other's underlay addresses from it. The unsafe routes and firewall rules come from
    :func:`flatnet.nebula.merge_fleet_config`, as `flatnet nebula config --write` puts them.
    """
    name = layout.host_name(host_id)
    lighthouse = str(layout.nebula_address(LIGHTHOUSE_ID))
    is_lighthouse = host_id == LIGHTHOUSE_ID
    return {
        "pki": {"ca": str(paths.ca_cert()), "cert": str(paths.host_cert(name)), "key": str(paths.host_key(name))},
        "static_host_map": {lighthouse: [f"{layout.lan_address(LIGHTHOUSE_ID)}:{layout.NEBULA_PORT}"]},
        "lighthouse": {"am_lighthouse": is_lighthouse, "interval": 60, "hosts": [] if is_lighthouse else [lighthouse]},
        "listen": {"host": "0.0.0.0", "port": layout.NEBULA_PORT},
        "punchy": {"punch": True},
        "tun": {"dev": layout.NEBULA_DEVICE, "mtu": settings.mtu},
        # Millisecond timestamps make handshake timings readable in nebula.log.
        "logging": {"level": "info", "format": "text", "timestamp_format": "2006-01-02T15:04:05.000Z07:00"},
    }


def render_nebula_config(
    paths: LabPaths, host_id: int, settings: LabSettings, fleet: Sequence[int] | None = None,
) -> str:
    """Render nebula.yml for ``host_id`` in a fleet of the hosts ``fleet`` (default: the initial fleet)."""
    if fleet is None:
        fleet = settings.initial_fleet
    config = nebula.merge_fleet_config(
        nebula_base_config(paths, host_id, settings), host_id, fleet, path=paths.nebula_config(layout.host_name(host_id)),
    )
    return nebula.dump_yaml(config)


def render_gateway_config(
    paths: LabPaths, host_id: int, settings: LabSettings, fleet: Sequence[int] | None = None,
) -> str:
    """Render the gateway's TOML settings for ``host_id``, with every other host of ``fleet`` as a peer.

    Gateways keep the routes to their peers' subnets: into Nebula's tun, or for a WSL2 host
    via the Windows side of its link.
    """
    if fleet is None:
        fleet = settings.initial_fleet
    name = layout.host_name(host_id)
    wsl = settings.is_wsl(host_id)
    lines = [
        f"host_id = {host_id}",
        f"data_dir = {_quote(paths.data_dir(name))}",
        f'api_listen = "{layout.api_listen(host_id, wsl=wsl)}"',
        f'proxy_listen = "{layout.proxy_listen(host_id, wsl=wsl)}"',
        f"access_log = {_quote(paths.access_log(name))}",
        f'domain = "{layout.DOMAIN}"',
        f"ttl = {settings.ttl}",
        f"resync = {RESYNC_SECONDS}",
        f"heartbeat = {heartbeat_seconds(settings.ttl)}",
        "",
        "[routes]",
    ]
    if wsl:
        lines += ['mode = "via"', f'via = "{layout.windows_link_address(host_id)}"']
    else:
        lines += ['mode = "dev"', f'device = "{layout.NEBULA_DEVICE}"']
    for peer in sorted(fleet):
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


# Plugins from containernetworking-plugins (Debian's package, in /usr/lib/cni) chained
# after flatnet for the chain tests: portmap forwards `podman run -p` host ports, and
# tuning sets a sysctl in the container, each reading flatnet's result as prevResult.
PORTMAP_AND_TUNING = (
    {"type": "portmap", "capabilities": {"portMappings": True}},
    {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}},
)


def render_conflist(
    paths: LabPaths, host_id: int, settings: LabSettings, chained: Sequence[dict] = (),
) -> str:
    """Render the CNI network list that runs flatnet's plugin on ``host_id``, then ``chained``."""
    name = layout.host_name(host_id)
    plugin = {
        "type": "flatnet",
        "hostId": host_id,
        "ipRange": str(layout.container_subnet(host_id)),
        "gateway": str(layout.bridge_address(host_id)),
        "registryEndpoints": [f"http://{layout.api_listen(host_id, wsl=settings.is_wsl(host_id))}"],
        "dataDir": str(paths.data_dir(name)),
        "bridge": layout.CONTAINER_BRIDGE,
        "mtu": settings.mtu,
        # podman passes `-p` and `--network-alias` only to plugins that declare them.
        "capabilities": {"portMappings": True, "aliases": True},
        # Peers may route to a released address until their view of it expires.
        "reuseDelay": settings.ttl,
    }
    network = {"cniVersion": "1.0.0", "name": layout.NETWORK_NAME, "plugins": [plugin, *chained]}
    return json.dumps(network, indent=2) + "\n"
