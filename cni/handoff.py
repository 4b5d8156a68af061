"""Hand a change to the host's gateway, or leave it in the outbox.

Local work never waits on sharing: if no gateway takes the change within a
short timeout, it is stored durably in the outbox and the command still
succeeds. The gateway drains the outbox when it starts and on a timer.

Two announcers deliver changes: RegistryAnnouncer posts to the gateway's API
and falls back to the outbox (the in-process path); the gateway's fast path
writes the outbox and drains it at once (flatnet.gateway.cni_socket).
"""

from __future__ import annotations

import dataclasses
import datetime
import http.client
import json
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from flatnet.events import outbox
from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Change
from flatnet.logs import cni as logger

# Long enough for a gateway on the same host, short enough that a dead one
# never holds up `podman run` noticeably.
GATEWAY_TIMEOUT_SECONDS = 0.5


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def added_change(data: dict[str, Any]) -> Change:
    return Change(id=str(uuid.uuid4()), type=CONTAINER_ADDED, data=data, ts=now_iso())


def removed_change(container_id: str, reason: str) -> Change:
    return Change(id=str(uuid.uuid4()), type=CONTAINER_REMOVED, data={"id": container_id, "reason": reason}, ts=now_iso())


@dataclasses.dataclass(frozen=True)
class Delivery:
    """Where a change went: to a gateway (``target``), or into the outbox file ``outbox_path``."""

    change: Change
    target: str
    outbox_path: Path | None = None


class Announcer(Protocol):
    def announce(self, change: Change) -> Delivery: ...


class RegistryAnnouncer:
    """Posts changes to the first gateway of ``endpoints`` that takes them, else writes the outbox."""

    def __init__(self, endpoints: tuple[str, ...], data_dir: Path):
        self.endpoints = endpoints
        self.data_dir = data_dir

    def announce(self, change: Change) -> Delivery:
        for endpoint in self.endpoints:
            try:
                _send(change, endpoint)
                return Delivery(change, endpoint)
            except (OSError, http.client.HTTPException, _Rejected) as error:
                logger.info("gateway %s did not take change %s (%s): %s; trying the next", endpoint, change.id, change.type, error)
        return to_outbox(change, self.data_dir)


def to_outbox(change: Change, data_dir: Path) -> Delivery:
    return Delivery(change, "outbox", outbox.write_change(data_dir, change))


def withdraw(delivery: Delivery, announcer: Announcer) -> None:
    """Take back an announced container.added, for an ADD that fails after announcing.

    A change still waiting in the outbox is deleted. A removal is announced in
    every case: the gateway may have drained the file between its write and
    this delete, and a removal of a container it never saw changes nothing.
    """
    if delivery.outbox_path is not None:
        delivery.outbox_path.unlink(missing_ok=True)
    announcer.announce(removed_change(delivery.change.data["id"], "failed"))


class _Rejected(Exception):
    pass


def _send(change: Change, endpoint: str) -> None:
    parts = urlsplit(endpoint)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=GATEWAY_TIMEOUT_SECONDS)
    base = parts.path.rstrip("/")
    try:
        if change.type == CONTAINER_ADDED:
            body = json.dumps(dict(change.data, eventId=change.id, ts=change.ts)).encode()
            connection.request("POST", f"{base}/api/containers", body, {"Content-Type": "application/json"})
        else:
            container_id = quote(change.data["id"], safe="")
            query = f"eventId={quote(change.id)}&reason={quote(change.data['reason'])}&ts={quote(change.ts)}"
            connection.request("DELETE", f"{base}/api/containers/{container_id}?{query}")
        response = connection.getresponse()
        detail = response.read(500).decode("utf-8", "replace")
        if not 200 <= response.status < 300:
            raise _Rejected(f"HTTP {response.status}: {detail}")
    finally:
        connection.close()
