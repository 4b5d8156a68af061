"""Hand a change to the host's gateway, or leave it in the outbox.

Local work never waits on sharing: if no gateway answers within a short
timeout, the change is stored durably in the outbox and the command still
succeeds. The gateway drains the outbox when it starts.
"""

from __future__ import annotations

import datetime
import http.client
import json
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from flatnet.events import outbox
from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Change

# Long enough for a gateway on the same host, short enough that a dead one
# never holds up `podman run` noticeably.
GATEWAY_TIMEOUT_SECONDS = 0.5


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def added_change(data: dict[str, Any]) -> Change:
    return Change(id=str(uuid.uuid4()), type=CONTAINER_ADDED, data=data, ts=now_iso())


def removed_change(container_id: str, reason: str) -> Change:
    return Change(id=str(uuid.uuid4()), type=CONTAINER_REMOVED, data={"id": container_id, "reason": reason}, ts=now_iso())


def hand_off(change: Change, endpoints: tuple[str, ...], data_dir: Path) -> str:
    """Deliver ``change`` to the first gateway that accepts it, else to the outbox.

    Returns where it went: the endpoint URL, or ``"outbox"``.
    """
    for endpoint in endpoints:
        try:
            _send(change, endpoint)
            return endpoint
        except (OSError, http.client.HTTPException, _Rejected) as error:
            print(f"flatnet: gateway {endpoint} did not take change {change.id}: {error}", file=sys.stderr)
    outbox.write_change(data_dir, change)
    return "outbox"


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
