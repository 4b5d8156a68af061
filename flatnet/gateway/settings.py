"""The gateway's settings: one frozen object, loaded once from a TOML file."""

from __future__ import annotations

import enum
import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from flatnet.errors import FlatnetError
from flatnet.gateway.log_settings import LogSettings, ReconcileSettings, check_tombstone_retention
from flatnet.gateway.route_settings import RouteSettings

_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
HostId = Annotated[int, Field(ge=1, le=254)]


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
            raise ValueError(f"{value!r} must be 'IPv4:port', e.g. '10.100.0.1:8080'") from None
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} has no valid port (1-65535)")
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
            raise ValueError(f"{value!r} must be a DNS suffix like 'flatnet' or 'lan.example'")
        return value

    @model_validator(mode="after")
    def _stale_before_expired(self) -> "Settings":
        if self.stale_after is not None and self.stale_after >= self.ttl:
            raise ValueError(f"stale_after {self.stale_after} must be less than ttl {self.ttl}, or the policy never applies")
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
                raise ValueError(f"peer host_id {peer.host_id} is this gateway's own host_id")
            if peer.host_id in seen:
                raise ValueError(f"peer host_id {peer.host_id} is listed twice")
            seen.add(peer.host_id)
        return self

    @field_validator("cni_socket")
    @classmethod
    def _is_absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"{str(value)!r} must be an absolute path, like '/var/lib/flatnet/gateway.sock'")
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
    """Read and validate the gateway config at ``path``."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FlatnetError(f"gateway config {path} not found; pass an existing file with --config") from None
    except IsADirectoryError:
        raise FlatnetError(f"gateway config {path} is a directory; pass the TOML file with --config") from None
    except (OSError, UnicodeDecodeError) as error:
        raise FlatnetError(f"gateway config {path} cannot be read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise FlatnetError(f"gateway config {path} is not valid TOML: {error}") from None
    try:
        return Settings.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(_describe_problem(issue) for issue in error.errors())
        raise FlatnetError(f"gateway config {path} is invalid: {problems}") from None


def _describe_problem(issue: dict) -> str:
    """One config problem in words: the key, what is wrong, and the value when it is short."""
    location = ".".join(map(str, issue["loc"]))
    if issue["type"] == "extra_forbidden":
        model = Peer if len(issue["loc"]) > 1 and issue["loc"][0] == "peers" else Settings
        return f"unknown key {location!r}; valid keys are {', '.join(model.model_fields)}"
    if issue["type"] == "missing":
        return f"{location} is missing"
    message = issue["msg"].removeprefix("Value error, ")
    if not location:
        return message
    if issue["type"] in ("tuple_type", "list_type") and location == "peers":
        return "peers must be a list of [[peers]] tables (double brackets), each with host_id and api"
    value = repr(issue.get("input"))
    shown = f" (got {value})" if len(value) <= 80 else ""
    return f"{location}: {message}{shown}"
