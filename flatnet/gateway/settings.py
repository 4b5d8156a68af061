"""The gateway's settings: one frozen object, loaded once from a TOML file."""

from __future__ import annotations

import enum
import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from flatnet import i18n
from flatnet.errors import FlatnetError
from flatnet.gateway import config_errors
from flatnet.gateway.log_settings import LogSettings, ReconcileSettings, check_tombstone_retention
from flatnet.gateway.route_settings import RouteSettings
from flatnet.i18n import Message

_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
HostId = Annotated[int, Field(ge=1, le=254)]

i18n.define({
    "settings.listen_not_address": (
        "{value!r} is not an IPv4 address and port; give one like '10.100.0.1:8080'",
        "{value!r} は IPv4 アドレスとポートではありません。'10.100.0.1:8080' のように指定してください",
    ),
    "settings.listen_bad_port": (
        "{value!r} has no valid port; give a port from 1 to 65535, e.g. '10.100.0.1:8080'",
        "{value!r} のポートが不正です。1 から 65535 までのポートを指定してください（例: '10.100.0.1:8080'）",
    ),
    "settings.domain_invalid": (
        "{value!r} is not a DNS suffix; give one like 'flatnet' or 'lan.example'",
        "{value!r} は DNS サフィックスではありません。'flatnet' や 'lan.example' のように指定してください",
    ),
    "settings.stale_after_not_below_ttl": (
        "stale_after {stale_after:g} must be less than ttl {ttl:g}, or the stale policy never applies",
        "stale_after {stale_after:g} は ttl {ttl:g} より小さくしてください。そうでないと stale ポリシーが働きません",
    ),
    "settings.peer_is_self": (
        "peer host_id {host_id} is this gateway's own host_id; list only the other hosts in [[peers]]",
        "ピアの host_id {host_id} はこのゲートウェイ自身の host_id です。[[peers]] には他のホストだけを書いてください",
    ),
    "settings.peer_twice": (
        "peer host_id {host_id} is listed twice; keep one [[peers]] table per host",
        "ピアの host_id {host_id} が 2 回書かれています。[[peers]] テーブルはホストごとに 1 つにしてください",
    ),
    "settings.path_not_absolute": (
        "{value!r} must be an absolute path, like '/var/lib/flatnet/gateway.sock'",
        "{value!r} は '/var/lib/flatnet/gateway.sock' のような絶対パスにしてください",
    ),
})


class StalePolicy(str, enum.Enum):
    """What the proxy does for an owner silent longer than ``stale_after`` but still within ``ttl``."""

    SERVE = "serve"
    WARN = "warn"  # serve, with an X-Flatnet-Stale response header
    REJECT = "reject"  # answer 503


class Peer(BaseModel):
    """Another host's gateway, reached over Nebula."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host_id: HostId
    api: AnyHttpUrl

    @property
    def base_url(self) -> str:
        return str(self.api).rstrip("/")


class Settings(BaseModel):
    """Everything the gateway reads from its config file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host_id: HostId
    data_dir: Path
    api_listen: str = Field(description="host:port of the internal API, on the Nebula address")
    proxy_listen: str = Field(description="host:port of the LAN proxy")
    access_log: Path | None = None
    domain: str = "flatnet"
    ttl: float = Field(300.0, gt=0, description="seconds a silent peer's containers stay routable")
    resync: float = Field(30.0, gt=0, description="seconds between snapshot checks of each peer")
    heartbeat: float = Field(5.0, gt=0, description="seconds between heartbeat frames on an event stream")
    stream_queue_events: int = Field(
        10_000, ge=10, description="events a stream may fall behind before it is closed and the follower resumes from the log"
    )
    stream_write_timeout: float = Field(
        10.0, gt=0, description="seconds a stream may wait for its reader before it is closed"
    )
    upstream_connect_timeout: float = Field(3.0, gt=0, description="seconds to connect upstream; past it the client gets 504")
    upstream_timeout: float = Field(60.0, gt=0, description="seconds to wait for each read from upstream; past it 504")
    tunnel_idle_timeout: float = Field(3600.0, gt=0, description="seconds an upgraded connection (WebSocket) may be silent")
    client_idle_timeout: float = Field(75.0, gt=0, description="seconds an idle keep-alive client connection stays open")
    stale_after: float | None = Field(
        None, gt=0, description="seconds of silence after which an owner is stale; default min(3 heartbeats, ttl/2)"
    )
    stale_policy: StalePolicy = StalePolicy.WARN
    proxy_workers: int = Field(1, ge=1, le=64, description="processes serving the LAN proxy, sharing its port")
    decision_log_bytes: int = Field(64 << 20, ge=1 << 16, description="size at which the decision log rolls over")
    decision_log_files: int = Field(4, ge=1, le=100, description="rolled-over decision logs kept besides the current one")
    peers: tuple[Peer, ...] = ()
    routes: RouteSettings = RouteSettings()
    # After ttl and resync: its check reads them.
    log: LogSettings = Field(default_factory=LogSettings, validate_default=True)
    reconcile: ReconcileSettings = ReconcileSettings()
    cni_socket: Path | None = Field(
        None, description="Unix socket of the CNI plugin's fast path; <data_dir>/gateway.sock, where the plugin looks, by default"
    )

    @field_validator("api_listen", "proxy_listen")
    @classmethod
    def _is_host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(Message("settings.listen_not_address", value=value)) from None
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(Message("settings.listen_bad_port", value=value))
        return value

    @field_validator("log")
    @classmethod
    def _tombstones_outlive_ttl(cls, value: LogSettings, info: ValidationInfo) -> LogSettings:
        if "ttl" in info.data and "resync" in info.data:
            check_tombstone_retention(value, info.data["ttl"], info.data["resync"])
        return value

    @field_validator("domain")
    @classmethod
    def _is_domain(cls, value: str) -> str:
        value = value.strip(".").lower()
        if not _DOMAIN.match(value):
            raise ValueError(Message("settings.domain_invalid", value=value))
        return value

    @model_validator(mode="after")
    def _stale_before_expired(self) -> "Settings":
        if self.stale_after is not None and self.stale_after >= self.ttl:
            raise ValueError(Message("settings.stale_after_not_below_ttl", stale_after=self.stale_after, ttl=self.ttl))
        return self

    @property
    def stale_seconds(self) -> float:
        """Seconds of silence after which an owner's containers are served by ``stale_policy``."""
        if self.stale_after is not None:
            return self.stale_after
        return min(3 * self.heartbeat, self.ttl / 2)

    @model_validator(mode="after")
    def _peers_are_others(self) -> "Settings":
        seen = set()
        for peer in self.peers:
            if peer.host_id == self.host_id:
                raise ValueError(Message("settings.peer_is_self", host_id=peer.host_id))
            if peer.host_id in seen:
                raise ValueError(Message("settings.peer_twice", host_id=peer.host_id))
            seen.add(peer.host_id)
        return self

    @field_validator("cni_socket")
    @classmethod
    def _is_absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(Message("settings.path_not_absolute", value=str(value)))
        return value

    @property
    def cni_socket_path(self) -> Path:
        return self.cni_socket or self.data_dir / "gateway.sock"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.100.{self.host_id}.0/24")

    def peer(self, host_id: int) -> Peer | None:
        for peer in self.peers:
            if peer.host_id == host_id:
                return peer
        return None


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


def load_settings(path: str | Path) -> Settings:
    """Read and validate the gateway config at ``path``; every error is a catalogue message in the locale's language."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FlatnetError(i18n.text("config.not_found", path=path)) from None
    except IsADirectoryError:
        raise FlatnetError(i18n.text("config.is_directory", path=path)) from None
    except OSError as error:
        raise FlatnetError(i18n.text("config.unreadable", path=path, error=error.strerror or error)) from None
    except UnicodeDecodeError as error:
        raise FlatnetError(i18n.text("config.unreadable", path=path, error=error)) from None
    except tomllib.TOMLDecodeError as error:
        raise FlatnetError(i18n.text("config.not_toml", path=path, error=error)) from None
    try:
        return Settings.model_validate(raw)
    except ValidationError as error:
        problems = config_errors.describe_all(error.errors(), Settings, raw)
        raise FlatnetError(i18n.text("config.invalid", path=path, problems=problems)) from None
