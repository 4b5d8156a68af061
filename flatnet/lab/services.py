"""The two long-running processes of a lab host, Nebula and the flatnet gateway: how each is
started and how the lab checks that it is ready.
"""

from __future__ import annotations

import enum
import errno
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from flatnet import i18n
from flatnet.errors import FlatnetError
from flatnet.lab import layout, namespaces
from flatnet.lab.config import LabSettings
from flatnet.lab.layout import LabPaths
from flatnet.lab.processes import has_ended, log_tail, start_process

i18n.define({
    "lab.service_exited": (
        "{service} on {host} exited during start-up; the end of {log}:\n{tail}",
        "{host} の {service} が起動中に終了しました。{log} の末尾:\n{tail}",
    ),
    "lab.nebula_timeout": (
        "Nebula on {host} did not put {address} on {device} within {seconds} s; the end of {log}:\n{tail}",
        "{host} の Nebula が {seconds} 秒以内に {device} へ {address} を設定しませんでした。{log} の末尾:\n{tail}",
    ),
    "lab.gateway_timeout": (
        "the gateway of {host} did not answer {url} with 200 within {seconds} s (last result: {last});"
        " the end of {log}:\n{tail}",
        "{host} のゲートウェイが {seconds} 秒以内に {url} へ 200 で応答しませんでした（最後の結果: {last}）。"
        "{log} の末尾:\n{tail}",
    ),
    "lab.health_refused": ("connection to {address} refused", "{address} への接続が拒否されました"),
    "lab.health_timeout": (
        "no answer from {address} within {seconds} s", "{address} から {seconds} 秒以内に応答がありません",
    ),
    "lab.health_unreachable": ("no route to {address}", "{address} への経路がありません"),
    "lab.health_failed": (
        "connection to {address} failed ({error})", "{address} への接続に失敗しました（{error}）",
    ),
    "lab.health_no_answer": ("no answer", "応答なし"),
})

NEBULA_START_SECONDS = 10.0
# Before it serves, the gateway imports aiohttp, pyroute2 and pydantic (about 0.5 s measured on
# a 2-core VM) and may replay its log, so the limit leaves room for slower machines.
GATEWAY_START_SECONDS = 30.0
HEALTH_PATH = "/api/health"
_NEBULA_POLL_SECONDS = 0.01
_GATEWAY_POLL_SECONDS = 0.05


class Service(str, enum.Enum):
    NEBULA = "nebula"
    GATEWAY = "gateway"


def service_argv(service: Service, paths: LabPaths, name: str) -> list[str]:
    """Return the command line of ``service`` on host ``name``; it names a file in the lab directory."""
    if service is Service.NEBULA:
        return ["nebula", "-config", str(paths.nebula_config(name))]
    return [sys.executable, "-m", "flatnet", "gateway", "--config", str(paths.gateway_config(name))]


def service_log(service: Service, paths: LabPaths, name: str) -> Path:
    if service is Service.NEBULA:
        return paths.nebula_log(name)
    return paths.gateway_log(name)


@dataclass(frozen=True)
class Startup:
    """A process just started: which, where, its PID and where its log output began."""

    service: Service
    host_id: int
    pid: int
    log_path: Path
    log_offset: int
    netns: str
    health_url: str

    @property
    def host(self) -> str:
        return layout.host_name(self.host_id)

    def tail(self) -> str:
        return log_tail(self.log_path, start=self.log_offset)

    def fail_if_exited(self) -> None:
        if has_ended(self.pid):
            raise FlatnetError(i18n.text(
                "lab.service_exited", service=self.service.value, host=self.host,
                log=self.log_path, tail=self.tail(),
            ))


def service_netns(service: Service, host_id: int, settings: LabSettings) -> str:
    """Return the namespace ``service`` of ``host_id`` runs in: a WSL2 host's Nebula runs on its Windows."""
    if service is Service.NEBULA and settings.is_wsl(host_id):
        return layout.netns_name(layout.windows_name(host_id))
    return layout.netns_name(layout.host_name(host_id))


def health_url(host_id: int, settings: LabSettings) -> str:
    """Return the URL of the gateway's health, as asked from inside its own host's namespace."""
    return f"http://{layout.api_listen(host_id, wsl=settings.is_wsl(host_id))}{HEALTH_PATH}"


def start_service(service: Service, paths: LabPaths, host_id: int, settings: LabSettings) -> Startup:
    """Start ``service`` of ``host_id`` in its namespace, its output appended to its log."""
    name = layout.host_name(host_id)
    log_path = service_log(service, paths, name)
    log_offset = log_path.stat().st_size if log_path.exists() else 0
    netns = service_netns(service, host_id, settings)
    pid = start_process(netns, service_argv(service, paths, name), log_path=log_path, cwd=paths.host_dir(name))
    return Startup(service, host_id, pid, log_path, log_offset, netns, health_url(host_id, settings))


def wait_nebula_ready(startup: Startup, *, timeout: float = NEBULA_START_SECONDS) -> None:
    """Wait until Nebula has given its tun device the host's Nebula address."""
    expected = f"{layout.nebula_address(startup.host_id)}/24"
    deadline = time.monotonic() + timeout
    while expected not in namespaces.ipv4_addresses(startup.netns, layout.NEBULA_DEVICE):
        startup.fail_if_exited()
        if time.monotonic() > deadline:
            raise FlatnetError(i18n.text(
                "lab.nebula_timeout", host=startup.host, address=expected, device=layout.NEBULA_DEVICE,
                seconds=timeout, log=startup.log_path, tail=startup.tail(),
            ))
        time.sleep(_NEBULA_POLL_SECONDS)


@dataclass(frozen=True)
class Health:
    """The result of one GET /api/health: the HTTP status and JSON body, or why it failed.

    ``error`` is the English OSError text, for JSON output, and ``message`` is a catalogue
    message in the locale's language, for a person.
    """

    status: int | None
    body: object = None
    error: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    def describe(self) -> str:
        if self.status is not None:
            return f"HTTP {self.status}"
        return self.message or self.error or i18n.text("lab.health_no_answer")


def describe_connection_error(error: OSError, address: str, timeout: float) -> str:
    """Return a catalogue message for ``error``, raised while connecting to ``address``."""
    if isinstance(error, ConnectionRefusedError):
        return i18n.text("lab.health_refused", address=address)
    if isinstance(error, TimeoutError):
        return i18n.text("lab.health_timeout", address=address, seconds=timeout)
    if error.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return i18n.text("lab.health_unreachable", address=address)
    name = errno.errorcode.get(error.errno or 0, type(error).__name__)
    return i18n.text("lab.health_failed", address=address, error=name)


def gateway_health(host_id: int, *, timeout: float = 1.0, url: str | None = None) -> Health:
    """Ask the gateway of ``host_id`` for /api/health from inside its namespace, at ``url`` or its Nebula address."""
    netns = layout.netns_name(layout.host_name(host_id))
    url = url or layout.api_url(host_id) + HEALTH_PATH
    try:
        response = namespaces.http_get(netns, url, timeout=timeout)
    except OSError as error:
        message = describe_connection_error(error, urlsplit(url).netloc, timeout)
        return Health(status=None, error=str(error) or type(error).__name__, message=message)
    try:
        body: object = json.loads(response.body)
    except ValueError:
        body = response.text
    return Health(status=response.status, body=body)


def wait_gateway_ready(startup: Startup, *, timeout: float = GATEWAY_START_SECONDS) -> None:
    """Wait until GET /api/health on the gateway's API address returns 200.

    The API listens on the Nebula address (a WSL2 host's: on its link to Windows), so this
    needs Nebula up on the same host first.
    """
    deadline = time.monotonic() + timeout
    health = gateway_health(startup.host_id, timeout=0.5, url=startup.health_url)
    while not health.ok:
        startup.fail_if_exited()
        if time.monotonic() > deadline:
            raise FlatnetError(i18n.text(
                "lab.gateway_timeout", host=startup.host, url=startup.health_url,
                seconds=timeout, last=health.describe(), log=startup.log_path, tail=startup.tail(),
            ))
        time.sleep(_GATEWAY_POLL_SECONDS)
        health = gateway_health(startup.host_id, timeout=0.5, url=startup.health_url)
