"""Bodies the internal API accepts and returns, validated with pydantic."""

from __future__ import annotations

import datetime
import re
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, field_validator

from flatnet.events.record import CONTAINER_NAME

CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
HOSTNAME = re.compile(f"^{CONTAINER_NAME.pattern}$")

Port = Annotated[int, Field(ge=1, le=65535)]


class ContainerAdded(BaseModel):
    """`POST /api/containers`: a container of this host got its address."""

    model_config = ConfigDict(extra="forbid")

    eventId: str = Field(
        default_factory=lambda: str(uuid.uuid4()),
        description="idempotency key: a change posted twice with one eventId is recorded once",
        json_schema_extra={"format": "uuid"},
    )
    ts: str | None = Field(None, description="when the change happened, RFC 3339 UTC")
    id: str = Field(description="the container id", json_schema_extra={"pattern": CONTAINER_ID.pattern})
    ip: IPvAnyAddress = Field(description="the container's address, inside this host's 10.100.<hostId>.0/24")
    hostname: str = Field(description="the container's name, a DNS label", json_schema_extra={"pattern": HOSTNAME.pattern})
    ports: list[Port] = Field([], description="container TCP ports; the proxy uses the first, else 80")
    hostId: int = Field(ge=1, le=254, description="the host that runs the container: this gateway's own")
    createdAt: str = Field(description="when the container got its address, RFC 3339 UTC")
    ifname: str = Field("eth0", description="the container's interface name")
    aliases: list[str] = Field([], description="other names of the container (podman's network aliases), as container names")

    @field_validator("id")
    @classmethod
    def _container_id(cls, value: str) -> str:
        if not CONTAINER_ID.match(value):
            raise ValueError("must start with a letter or digit and contain only letters, digits, '_', '.' and '-' (at most 128)")
        return value

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not HOSTNAME.match(value):
            raise ValueError("must be a container name: letters, digits, '_', '.' and '-', starting with a letter or digit, at most 253")
        return value

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        for alias in value:
            if not HOSTNAME.match(alias):
                raise ValueError(f"alias {alias[:80]!r} must be a container name: letters, digits, '_', '.' and '-', starting with a letter or digit")
        return value

    @field_validator("createdAt", "ts")
    @classmethod
    def _rfc3339(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be an RFC 3339 time with a zone, e.g. 2026-12-04T10:00:00.123Z") from None
        if moment.tzinfo is None:
            raise ValueError("must carry a time zone, e.g. a trailing Z for UTC")
        return value

    @field_validator("eventId")
    @classmethod
    def _event_id(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("must be a UUID") from None


class ContainerEntry(BaseModel):
    """One container of the fleet, as it is in this gateway's view."""

    id: str
    ip: str
    hostname: str
    aliases: list[str] = Field(
        description="the container's other names (podman's --network-alias), lower-cased and without the hostname."
        " The proxy routes <alias>.<domain> here unless another container wins the name: a hostname wins over an alias,"
        " then the most recently created container",
    )
    ports: list[int]
    hostId: int
    createdAt: str
    ifname: str
    origin: int = Field(description="the host whose log recorded the container")
    seq: int = Field(description="the seq of that record in the origin's log")
    ttl: int = Field(description="seconds until the owner expires; 0 means expired and not routed to")


class ChangeAccepted(BaseModel):
    """The response to a change: its event id, the seq it got, and whether it was already recorded."""

    eventId: str
    seq: int | None = Field(description="the seq the change got in this host's log; null for a duplicate")
    duplicate: bool
    known: bool | None = Field(None, description="on DELETE: whether the container was in the view")


class PeerHealth(BaseModel):
    state: str = Field(description="connecting, connected or disconnected")
    lastHeardSecondsAgo: float | None
    expired: bool
    replicaHead: int = Field(description="the last seq of the peer stored here")
    remoteHead: int = Field(description="the peer's head as carried by its last frame")
    node: str = Field(description="the node id the peer's last heartbeat carried; empty before the first")
    repairs: int = Field(description="times the snapshot backstop repaired this peer's replica")
    inSyncSince: str | None = Field(description="since when the backstop has found the replica equal to the peer's own; null when not")
    reconnects: int
    lastError: str


class Health(BaseModel):
    """The body of `GET /api/health`."""

    status: str
    hostId: int
    node: str = Field(description="this gateway's node id, a UUID kept in the data directory")
    epoch: int = Field(description="how many times this node has started")
    uptimeSeconds: float
    vector: dict[str, int] = Field(description="origin -> last stored seq")
    containers: int
    peers: dict[str, PeerHealth]
    conflicts: dict[str, list[str]] = Field(description="name -> ids of the live containers sharing it as hostname or alias, winner first")
    stoppedOrigins: dict[str, str] = Field(
        description="origin -> why its log stopped (corruption, a seq gap); the other origins keep working"
    )
    snapshot: str | None = Field(description="when the newest snapshot was written, or null before the first")


class OriginSnapshot(BaseModel):
    """The body of `GET /api/snapshot`: this gateway's view of one origin."""

    origin: int
    head: int = Field(description="the origin's last seq folded into this view")
    node: str = Field(description="the node id of the responding gateway")
    epoch: int
    digest: str = Field(description="SHA-256 of the origin's containers as exported; equal views have equal digests")
    containers: int = Field(description="how many live containers the origin has in this view")
    state: dict | None = Field(None, description="the containers as arrays in Container field order; left out with summary=1")


class Problem(BaseModel):
    field: str
    problem: str
    value: str


class ErrorBody(BaseModel):
    """Every error the API returns: a message naming the value and the rule."""

    error: str
    problems: list[Problem] | None = None


class StreamReset(BaseModel):
    """409 from `GET /api/events`: the follower has more of this origin than this gateway."""

    error: str = Field(description="always 'reset'")
    detail: str
    origin: int
    head: int
    node: str
    epoch: int
