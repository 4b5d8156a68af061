"""The lab's network namespaces: the LAN between hosts, entering a namespace from Python,
and HTTP requests made from inside one.

Nothing here touches the root namespace: every address, route and bridge is created in a
namespace named ``flatnet-*`` that the lab made itself.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from flatnet import i18n
from flatnet.errors import FlatnetError
from flatnet.lab import layout
from flatnet.lab.processes import netns_path, nsenter_argv, run_command

i18n.define({
    "lab.needs_root": (
        "flatnet lab {command} needs root, because it creates and deletes network namespaces; run it as root",
        "flatnet lab {command} はネットワーク名前空間を作成・削除するため root 権限が必要です。root で実行してください",
    ),
})

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_NETNS_DIR = Path("/run/netns")
# The lab directory whose `lab up` created the running lab's namespaces. The namespace names are
# fixed, so one lab runs at a time. `lab down` deletes the file with the namespaces, and because
# /run is a tmpfs, a reboot removes both as well.
OWNER_FILE = Path("/run/flatnet-lab-owner")
_LAB_NETNS = re.compile(r"^flatnet-(lan|client|rm|[hw][0-9]+)$")
# Python 3.11 has neither os.setns nor socket.IP_FREEBIND (both arrived in 3.12).
_libc = ctypes.CDLL(None, use_errno=True)


def require_root(command: str) -> None:
    """Raise FlatnetError unless this process runs as root, naming the lab ``command``."""
    if os.geteuid() != 0:
        raise FlatnetError(i18n.text("lab.needs_root", command=command))


def exists(netns: str) -> bool:
    return (_NETNS_DIR / netns).exists()


def lab_namespaces() -> list[str]:
    """Return the namespaces in /run/netns whose names the lab uses, in sorted order."""
    if not _NETNS_DIR.is_dir():
        return []
    return sorted(entry.name for entry in _NETNS_DIR.iterdir() if _LAB_NETNS.match(entry.name))


def record_owner(lab_dir: Path) -> None:
    """Record ``lab_dir`` as the owner of the lab namespaces about to be created."""
    OWNER_FILE.write_text(f"{lab_dir}\n")


def recorded_owner() -> Path | None:
    """Return the lab directory recorded as the owner of the lab namespaces, or None if there is none."""
    try:
        text = OWNER_FILE.read_text().strip()
    except FileNotFoundError:
        return None
    return Path(text) if text else None


def forget_owner() -> None:
    OWNER_FILE.unlink(missing_ok=True)


def create(netns: str) -> None:
    """Create ``netns`` with its loopback up."""
    run_command(["ip", "netns", "add", netns])
    run_command(["ip", "-n", netns, "link", "set", "lo", "up"])


def delete(netns: str) -> None:
    """Delete ``netns``. The kernel keeps it alive while processes still run inside it."""
    run_command(["ip", "netns", "del", netns])


def create_lan() -> None:
    """Create the LAN namespace with the bridge that every host and the client plug into."""
    create(layout.LAN_NETNS)
    run_command(["ip", "-n", layout.LAN_NETNS, "link", "add", layout.LAN_BRIDGE, "type", "bridge"])
    run_command(["ip", "-n", layout.LAN_NETNS, "link", "set", layout.LAN_BRIDGE, "up"])


def join_lan(netns: str, address: str) -> None:
    """Create ``netns`` and connect it to the LAN bridge as ``eth0`` with ``address``/24."""
    create(netns)
    lan_port = f"lan-{netns.removeprefix(layout.NETNS_PREFIX)}"
    run_command([
        "ip", "-n", layout.LAN_NETNS, "link", "add", lan_port, "type", "veth",
        "peer", "name", "eth0", "netns", netns,
    ])
    run_command(["ip", "-n", layout.LAN_NETNS, "link", "set", lan_port, "master", layout.LAN_BRIDGE, "up"])
    prefix = layout.LAN_NETWORK.prefixlen
    run_command(
        ["ip", "-n", netns, "-batch", "-"],
        input_text=f"addr add {address}/{prefix} dev eth0\nlink set eth0 up\n",
    )


def create_wsl_host(host_id: int) -> None:
    """Create WSL2 host ``host_id`` and the namespace that plays its Windows.

    Windows holds the host's LAN address and runs its Nebula. What Windows does for WSL2 is
    played by: forwarding; a route to the WSL2 host's container subnet (an operator's
    ``route add`` on Windows); the API port forwarded from the Nebula address to WSL2, as
    ``netsh interface portproxy`` would; and NAT for WSL2's own traffic into the overlay, as
    WinNAT does. The WSL2 host reaches the Nebula network through Windows, and the other
    hosts' container subnets only through flatnet's ``via`` routes.
    """
    windows = layout.netns_name(layout.windows_name(host_id))
    wsl = layout.netns_name(layout.host_name(host_id))
    windows_address, wsl_address = layout.windows_link_address(host_id), layout.wsl_link_address(host_id)
    prefix = layout.wsl_link(host_id).prefixlen
    link = f"wsl-{layout.host_name(host_id)}"

    join_lan(windows, str(layout.lan_address(host_id)))
    enable_ip_forward(windows)
    create(wsl)
    run_command(["ip", "-n", windows, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", wsl])
    run_command(["ip", "-n", windows, "-batch", "-"], input_text=(
        f"addr add {windows_address}/{prefix} dev {link}\nlink set {link} up\n"
        f"route add {layout.container_subnet(host_id)} via {wsl_address}\n"
    ))
    run_command(["ip", "-n", wsl, "-batch", "-"], input_text=(
        f"addr add {wsl_address}/{prefix} dev eth0\nlink set eth0 up\n"
        f"route add {layout.NEBULA_NETWORK} via {windows_address}\n"
    ))
    nebula = layout.NEBULA_DEVICE
    run_command(nsenter_argv(windows, [
        "iptables", "-t", "nat", "-A", "PREROUTING", "-i", nebula, "-d", f"{layout.nebula_address(host_id)}/32",
        "-p", "tcp", "--dport", str(layout.API_PORT), "-j", "DNAT", "--to-destination", f"{wsl_address}:{layout.API_PORT}",
    ]))
    run_command(nsenter_argv(windows, [
        "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", f"{wsl_address}/32", "-o", nebula, "-j", "MASQUERADE",
    ]))


def call_in(netns: str, function: Callable[[], T]) -> T:
    """Call ``function`` in a new thread that has entered ``netns``, and return its result.

    setns(CLONE_NEWNET) moves only the calling thread, so the rest of the process stays where
    it was. Sockets created by ``function`` keep belonging to ``netns`` afterwards, and
    /proc/sys/net opened in that thread shows ``netns``'s settings.
    """
    outcome: dict[str, object] = {}

    def enter_and_call() -> None:
        try:
            descriptor = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(descriptor, _CLONE_NEWNET) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, f"setns into {netns} failed: {os.strerror(error)}")
            finally:
                os.close(descriptor)
            outcome["value"] = function()
        except BaseException as error:  # re-raised in the calling thread below
            outcome["error"] = error

    thread = threading.Thread(target=enter_and_call, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def enable_ip_forward(netns: str) -> None:
    """Set net.ipv4.ip_forward=1 in ``netns``.

    A new namespace copies the root namespace's value, so a machine where it is already 1
    would hide a lab that forgot to set it.
    """
    def write() -> None:
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")

    call_in(netns, write)


def ipv4_addresses(netns: str, device: str) -> list[str]:
    """Return ``device``'s IPv4 addresses in ``netns`` as ``address/prefix``, [] if it is missing."""
    result = subprocess.run(
        ["ip", "-j", "-n", netns, "-4", "addr", "show", "dev", device],
        capture_output=True, text=True, timeout=10, check=False,
    )
    # ip exits 1 with 'Device "nebula1" does not exist.' until Nebula has created its tun.
    if result.returncode != 0 or not result.stdout.strip():
        return []
    return [
        f"{entry['local']}/{entry['prefixlen']}"
        for link in json.loads(result.stdout)
        for entry in link.get("addr_info", [])
    ]


def processes_inside(netns: str) -> list[int]:
    """Return the PIDs of processes whose network namespace is ``netns``."""
    try:
        target = os.stat(netns_path(netns)).st_ino
    except FileNotFoundError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino == target:
                pids.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return pids


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def http_get(
    netns: str, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 2.0,
) -> HttpResponse:
    """Send ``GET url`` from inside ``netns`` and return the whole response.

    Raises OSError (including socket.timeout) when the connection fails or times out.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"only http:// URLs with a host are supported, not {url!r}")
    port = parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query

    sock = call_in(netns, lambda: socket.create_connection((parts.hostname, port), timeout=timeout))
    connection = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    # HTTPConnection connects only when it has no socket: hand it the one made inside netns.
    connection.sock = sock
    try:
        connection.request("GET", target, headers=dict(headers or {}))
        response = connection.getresponse()
        body = response.read()
        return HttpResponse(response.status, dict(response.getheaders()), body)
    finally:
        connection.close()
