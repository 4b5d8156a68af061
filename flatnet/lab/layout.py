"""The lab's names, addresses and file paths, computed from a host id and the lab directory.

Host ``h`` of the lab is the network namespace ``flatnet-h<h>``. Its underlay address on the
lab's LAN is ``198.18.0.<h>``, its Nebula address ``10.100.0.<h>`` and its containers use
``10.100.<h>.0/24``. The LAN client sits at ``198.18.0.100``, so a lab has at most 99 hosts.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LAB_DIR = Path("/var/lib/flatnet-lab")
LAB_DIR_VARIABLE = "FLATNET_LAB_DIR"

LAN_NETNS = "flatnet-lan"
# Scratch namespace that `lab down` runs podman in when a container's host namespace is gone,
# so that no CNI plugin ever runs in the root namespace.
SCRATCH_NETNS = "flatnet-rm"
NETNS_PREFIX = "flatnet-"
CLIENT = "client"

LAN_BRIDGE = "lan0"
LAN_NETWORK = ipaddress.IPv4Network("198.18.0.0/24")
CLIENT_LAN_ADDRESS = ipaddress.IPv4Address("198.18.0.100")
MAX_HOSTS = 99

NEBULA_DEVICE = "nebula1"
NEBULA_PORT = 4242
API_PORT = 8080
PROXY_PORT = 80
CONTAINER_BRIDGE = "flatnet0"
NETWORK_NAME = "flatnet"
DOMAIN = "flatnet"
# Annotation that every container started with a lab host's containers.conf carries;
# `lab down` selects the lab's containers by it.
HOST_ANNOTATION = "flatnet.lab.host"


def default_lab_dir() -> Path:
    """Return the lab directory: $FLATNET_LAB_DIR if set, else /var/lib/flatnet-lab, made absolute."""
    configured = os.environ.get(LAB_DIR_VARIABLE)
    return Path(configured).absolute() if configured else DEFAULT_LAB_DIR


def lab_dir_assignment(lab_dir: Path) -> str:
    """Return ``FLATNET_LAB_DIR=<lab_dir> `` to put before a command that must act on ``lab_dir``.

    Return "" when the command reaches ``lab_dir`` without it: ``lab_dir`` is the default
    directory and FLATNET_LAB_DIR is unset here.
    """
    if lab_dir == DEFAULT_LAB_DIR and LAB_DIR_VARIABLE not in os.environ:
        return ""
    return f"{LAB_DIR_VARIABLE}={shlex.quote(str(lab_dir))} "


def host_name(host_id: int) -> str:
    return f"h{host_id}"


def netns_name(name: str) -> str:
    """Return the network namespace of a lab host or of the client (``h2`` -> ``flatnet-h2``)."""
    return NETNS_PREFIX + name


def lan_address(host_id: int) -> ipaddress.IPv4Address:
    return LAN_NETWORK.network_address + host_id


NEBULA_NETWORK = ipaddress.IPv4Network("10.100.0.0/24")


def nebula_address(host_id: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(f"10.100.0.{host_id}")


def container_subnet(host_id: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"10.100.{host_id}.0/24")


def bridge_address(host_id: int) -> ipaddress.IPv4Address:
    """Return the address of ``flatnet0`` on host ``host_id``: the containers' default gateway."""
    return container_subnet(host_id).network_address + 1


def api_url(host_id: int) -> str:
    return f"http://{nebula_address(host_id)}:{API_PORT}"


# A WSL2 host of the lab: its Nebula runs in a second namespace that plays Windows, which holds
# the host's LAN address, and the two are joined by a link of their own.
WINDOWS_PREFIX = "w"


def windows_name(host_id: int) -> str:
    """Return the lab member that plays Windows for WSL2 host ``host_id`` (``w3``)."""
    return f"{WINDOWS_PREFIX}{host_id}"


def wsl_link(host_id: int) -> ipaddress.IPv4Network:
    """Return the link between a WSL2 host and its Windows: 198.18.(100+h).0/24."""
    return ipaddress.IPv4Network(f"198.18.{100 + host_id}.0/24")


def windows_link_address(host_id: int) -> ipaddress.IPv4Address:
    return wsl_link(host_id).network_address + 1


def wsl_link_address(host_id: int) -> ipaddress.IPv4Address:
    return wsl_link(host_id).network_address + 2


def api_listen(host_id: int, *, wsl: bool = False) -> str:
    """Return where a host's gateway API listens: its Nebula address, or a WSL2 host's link address.

    Peers reach a WSL2 host's API at its Nebula address all the same, forwarded by Windows.
    """
    address = wsl_link_address(host_id) if wsl else nebula_address(host_id)
    return f"{address}:{API_PORT}"


def proxy_listen(host_id: int, *, wsl: bool = False) -> str:
    address = wsl_link_address(host_id) if wsl else lan_address(host_id)
    return f"{address}:{PROXY_PORT}"


@dataclass(frozen=True)
class LabPaths:
    """Paths of the lab's files, all under one root directory."""

    root: Path

    @property
    def process_mark(self) -> str:
        """Text in the command line of every process the lab starts: a path under the lab directory.

        The trailing slash keeps /var/lib/flatnet-lab from matching /var/lib/flatnet-lab2.
        """
        return f"{self.root}/"

    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    @property
    def state_lock(self) -> Path:
        return self.root / "lab.lock"

    @property
    def marker(self) -> Path:
        """A file that proves the directory was made by `lab up`, so `lab down` may delete it."""
        return self.root / ".flatnet-lab"

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def cni_bin_dir(self) -> Path:
        return self.root / "cni-bin"

    def host_dir(self, name: str) -> Path:
        return self.root / name

    def nebula_config(self, name: str) -> Path:
        return self.host_dir(name) / "nebula.yml"

    def nebula_log(self, name: str) -> Path:
        return self.host_dir(name) / "nebula.log"

    def gateway_config(self, name: str) -> Path:
        return self.host_dir(name) / "gateway.toml"

    def gateway_log(self, name: str) -> Path:
        return self.host_dir(name) / "gateway.log"

    def access_log(self, name: str) -> Path:
        return self.host_dir(name) / "access.log"

    def data_dir(self, name: str) -> Path:
        return self.host_dir(name) / "data"

    def containers_conf(self, name: str) -> Path:
        return self.host_dir(name) / "containers.conf"

    def podman_events_log(self, name: str) -> Path:
        return self.host_dir(name) / "podman-events.log"

    def cni_config_dir(self, name: str) -> Path:
        return self.host_dir(name) / "cni"

    def conflist(self, name: str) -> Path:
        return self.cni_config_dir(name) / f"{NETWORK_NAME}.conflist"

    def ca_cert(self) -> Path:
        return self.pki_dir / "ca.crt"

    def ca_key(self) -> Path:
        return self.pki_dir / "ca.key"

    def host_cert(self, name: str) -> Path:
        return self.pki_dir / f"{name}.crt"

    def host_key(self, name: str) -> Path:
        return self.pki_dir / f"{name}.key"
