"""`flatnet replay timeline`: the history of one container name across hosts.

Rows come from two sources. The log gives what each origin did to the name:
``added``, ``replaced`` (a new instance of the same container id),
``removed``, and ``moved`` (added on one host after the name was removed from
another) or ``conflict`` (added while another host still has it, and the row
names the winner by the view's own ranking). The gateway's decision records
give liveness: ``expired`` when a host holding the name first appears among a
record's expired origins, ``live`` when it is gone from them again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flatnet import i18n
from flatnet.registry import Container
from flatnet.replay.datadir import DataDir
from flatnet.replay.history import Change, History, NameHistory, build_history, rank
from flatnet.replay.records import scan_records, shape_fields
from flatnet.replay.times import show_time

i18n.define({
    "replay.detail_replaced": (
        "instance created {created} replaces {previous}",
        "{created} に作成されたインスタンスが {previous} のものを置き換えました",
    ),
    "replay.detail_conflict": (
        "also held by {holders}, and {winner} wins",
        "{holders} も保持しています。{winner} が優先されます",
    ),
    "replay.detail_moved": (
        "from h{origin}, {seconds:.3f} s after its removal there",
        "h{origin} から移動（h{origin} での削除から {seconds:.3f} 秒後）",
    ),
    "replay.detail_renamed": ("renamed to {hostname}", "{hostname} に名前を変更"),
    "replay.detail_expired": (
        "h{origin} was silent past the ttl, so requests were not routed to it",
        "h{origin} は ttl を過ぎても応答がないため、転送先から外れました",
    ),
    "replay.detail_live": ("h{origin} heard from again", "h{origin} から再び応答がありました"),
})


@dataclasses.dataclass(frozen=True)
class Row:
    """One thing that happened to the name.

    ``detail`` is a catalogue message, shown in the reader's language, or a
    value from the log (a removal's reason) shown as it is.
    """

    ts: float
    host: int
    event: str
    container_id: str | None
    address: str | None
    detail: i18n.Message | str
    seq: int | None = None

    def to_dict(self) -> dict[str, object]:
        """Return the row for JSON output, with ``detail`` in English."""
        document = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        document["detail"] = str(self.detail)
        document["time"] = show_time(self.ts)
        return document


@dataclasses.dataclass
class TimelineReport:
    data_dir: Path
    name: str
    rows: list[Row]


def timeline(data_dir: DataDir, name: str, *, history: History | None = None) -> TimelineReport:
    """List every change to ``name`` in the log, with the expiries the decision records show, oldest first."""
    name = name.lower()
    if history is None:
        history = build_history(data_dir)
    rows = _log_rows(history, name)
    rows += _liveness_rows(data_dir, history, name)
    rows.sort(key=lambda row: (row.ts, row.host, row.seq or 0, row.event))
    return TimelineReport(data_dir.path, name, rows)


def _log_rows(history: History, name: str) -> list[Row]:
    named = history.names.get(name)
    if named is None:
        return []
    changes = sorted(
        ((change, steps.states[index]) for steps in named.steps for index, change in enumerate(steps.changes) if change is not None),
        key=lambda item: (item[0].seconds, item[0].origin, item[0].seq),
    )
    holding: dict[int, tuple[Container, ...]] = {}
    last_removal: tuple[int, float] | None = None
    rows = []
    for change, state in changes:
        before = holding.get(change.origin, ())
        holding[change.origin] = state
        others = [container for origin, held in sorted(holding.items()) if origin != change.origin for container in held]
        added = change.after if change.after is not None and name in change.after.names else None
        removed = change.before if change.before is not None and name in change.before.names else None

        if added is not None and removed is not None:
            detail = i18n.Message("replay.detail_replaced", created=added.created_at, previous=removed.created_at)
            rows.append(_row(change, "replaced", added, detail))
        elif added is not None:
            if others:
                winner = rank(name, [*others, *holding[change.origin]])[0]
                holders = ", ".join(f"h{container.host_id} ({container.id[:12]})" for container in others)
                winning = f"h{winner.host_id} ({winner.id[:12]})"
                rows.append(_row(change, "conflict", added, i18n.Message("replay.detail_conflict", holders=holders, winner=winning)))
            elif last_removal is not None and last_removal[0] != change.origin:
                origin, removed_at = last_removal
                detail = i18n.Message("replay.detail_moved", origin=origin, seconds=change.seconds - removed_at)
                rows.append(_row(change, "moved", added, detail))
            else:
                rows.append(_row(change, "added", added, ""))
        elif removed is not None:
            detail = change.reason or ""
            if change.after is not None:
                detail = i18n.Message("replay.detail_renamed", hostname=change.after.hostname)
            rows.append(_row(change, "removed", removed, detail))
            if not holding[change.origin] and before:
                last_removal = (change.origin, change.seconds)
    return rows


def _row(change: Change, event: str, container: Container, detail: i18n.Message | str) -> Row:
    return Row(change.seconds, container.host_id, event, container.id, container.ip, detail, change.seq)


def _liveness_rows(data_dir: DataDir, history: History, name: str) -> list[Row]:
    """Expiry and return of the hosts that held ``name``, as the gateway's decision records show them."""
    named = history.names.get(name)
    if named is None:
        return []
    origins = {steps.origin for steps in named.steps}
    # The records are in the order the requests finished; sort by the time they started.
    observed: list[tuple[float, frozenset[int]]] = []
    expired_of: dict[object, frozenset[int]] = {}
    for keys in scan_records(data_dir):
        if keys.file.worker != 0:
            continue
        expired = expired_of.get(keys.shape_key)
        if expired is None:
            fields = shape_fields(keys.shape_key) or {}
            listed = fields.get("expired")
            expired = expired_of[keys.shape_key] = frozenset(listed) & origins if isinstance(listed, list) else frozenset()
        observed.append((keys.ts, expired))
    observed.sort(key=lambda item: item[0])

    rows = []
    previous: frozenset[int] = frozenset()
    reported: set[int] = set()
    for ts, expired in observed:
        for origin in sorted(expired - previous):
            holders = _held_at(named, origin, history, ts)
            if holders:
                reported.add(origin)
                detail = i18n.Message("replay.detail_expired", origin=origin)
                rows.append(Row(ts, origin, "expired", holders[0].id, holders[0].ip, detail))
        for origin in sorted((previous - expired) & reported):
            reported.discard(origin)
            rows.append(Row(ts, origin, "live", None, None, i18n.Message("replay.detail_live", origin=origin)))
        previous = expired
    return rows


def _held_at(named: NameHistory, origin: int, history: History, ts: float) -> tuple[Container, ...]:
    span = history.spans.get(origin)
    seq = span.seq_known_by(ts) if span is not None else 0
    for steps in named.steps:
        if steps.origin == origin:
            return steps.state_at(seq)
    return ()
