"""Bodies the internal API accepts and returns, validated with pydantic."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, field_validator

CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
# A DNS label: what a container name must be to be reachable as <name>.<domain>.
HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9\-_]{0,61}[A-Za-z0-9])?$")

Port = Annotated[int, Field(ge=1, le=65535)]


class ContainerAdded(BaseModel):
    """`POST /api/containers`: a container of this host got its address."""

    model_config = ConfigDict(extra="forbid")

    eventId: str = Field(default_factory=lambda: str(uuid.uuid4()), description="idempotency key of this change")
    ts: str | None = Field(None, description="when the change happened, ISO 8601 UTC")
    id: str
    ip: IPvAnyAddress
    hostname: str
    ports: list[Port] = []
    hostId: int = Field(ge=1, le=254)
    createdAt: str
    ifname: str = "eth0"

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
            raise ValueError("must be a DNS label: 1-63 letters, digits, '-' or '_', not starting or ending with '-'")
        return value

    @field_validator("eventId")
    @classmethod
    def _event_id(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("must be a UUID") from None
