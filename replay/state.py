"""`flatnet replay state`: the view as this gateway had it at a past time.

The log does not record when the gateway received each event, so the vector
at time T is pieced together from what does:

- a decision record made at or before T shows a vector the gateway had then,
  and so does a snapshot written at or before T: the view held at least these.
  Where the latest of them shows the gateway behind an origin's log, it is
  taken to have stayed behind until T;
- a decision record or snapshot after T shows a vector it had not passed yet;
- an origin's events carry the time the origin made them: by T, the origin's
  log held those up to T (see ``OriginSpan.seq_known_by``).

Per origin, the seq is the latest event made by T, but never below what a
record at or before T shows, nor above what a record after T shows. The
expired origins are those of the last decision record at or before T. The
view is then the registry's own fold of each origin's events up to its seq.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from pathlib import Path

from flatnet import i18n
from flatnet.errors import FlatnetError
from flatnet.registry import Container, View
from flatnet.replay.datadir import DataDir
from flatnet.replay.history import History, build_history, origin_base
from flatnet.replay.records import parse_vector, scan_records, shape_fields
from flatnet.replay.times import event_seconds, show_time

i18n.define({
    "replay.before_history": (
        "the view at {at} is older than the retained history of origin {origin}: retention deleted its events"
        " up to seq {base}, and the oldest snapshot that covers them was written at {first}; choose a later time",
        "{at} のビューは起点 {origin} の保持履歴より前です。保持期間により seq {base} までのイベントが削除され、"
        "それを含む最古のスナップショットは {first} に書かれました。より後の時刻を指定してください",
    ),
    "replay.source_decision": ("decision record {location} at {time}", "判断レコード {location}、{time}"),
    "replay.source_snapshot": ("snapshot {name} of {time}", "スナップショット {name}、{time}"),
})


@dataclasses.dataclass(frozen=True)
class OriginPoint:
    """The seq of one origin's part of the view at the time, and the evidence for it."""

    origin: int
    seq: int
    # "decision" or "snapshot" (a record at or before the time), "events" (the origin's event times),
    # or "capped" (event times, limited by a record after the time).
    basis: str
    # The decision record or snapshot that shows the seq, for the "decision" and "snapshot" bases.
    source: i18n.Message | None


@dataclasses.dataclass
class StateReport:
    data_dir: Path
    gateway: int
    at: float
    points: list[OriginPoint]
    expired: tuple[int, ...] | None
    expired_source: i18n.Message | None
    containers: list[Container]
    conflicts: dict[str, list[Container]]
    origin_filter: int | None


@dataclasses.dataclass
class _Bounds:
    lower: dict[int, tuple[int, str, i18n.Message | None]] = dataclasses.field(default_factory=dict)
    upper: dict[int, int] = dataclasses.field(default_factory=dict)
    expired: tuple[int, ...] | None = None
    expired_ts: float = -math.inf
    expired_source: i18n.Message | None = None
    # The latest record at or before the time asked: when, what kind, which.
    evidence_ts: float = -math.inf
    evidence_basis: str = ""
    evidence_source: i18n.Message | None = None


def view_at(data_dir: DataDir, gateway: int, at: float, *, origin: int | None = None, history: History | None = None) -> StateReport:
    """Rebuild the view ``data_dir``'s gateway had at POSIX time ``at``."""
    snapshot_list, _ = data_dir.load_snapshots()
    if history is None:
        history = build_history(data_dir, snapshot_list)
    bounds = _Bounds()
    _bounds_from_decisions(data_dir, at, bounds)
    for snapshot in snapshot_list:
        created = event_seconds(snapshot.created_at)
        source = i18n.Message("replay.source_snapshot", name=snapshot.path.name if snapshot.path else "?", time=snapshot.created_at)
        for each, seq in snapshot.vector.items():
            if created <= at:
                if created >= bounds.evidence_ts:
                    bounds.evidence_ts, bounds.evidence_basis, bounds.evidence_source = created, "snapshot", source
                if seq > bounds.lower.get(each, (0, "", None))[0]:
                    bounds.lower[each] = (seq, "snapshot", source)
            elif seq < bounds.upper.get(each, math.inf):
                bounds.upper[each] = seq

    points = []
    for each, span in sorted(history.spans.items()):
        known = span.seq_known_by(at)
        capped = min(known, bounds.upper.get(each, known))
        lower, basis, source = bounds.lower.get(each, (0, bounds.evidence_basis, bounds.evidence_source))
        # A record that shows the gateway behind the origin's log: it is taken
        # to have stayed behind until the time asked, as nothing shows otherwise.
        lagging = bounds.evidence_ts > -math.inf and span.seq_known_by(bounds.evidence_ts) > lower
        if lagging or (lower > 0 and lower >= capped):
            point = OriginPoint(each, min(lower, span.head), basis, source)
        else:
            point = OriginPoint(each, min(capped, span.head), "capped" if capped < known else "events", None)
        # Before the snapshot the history starts from, the origin's seq is not known,
        # unless a decision record shows the gateway already past that snapshot.
        unknown = span.base > 0 and at < span.base_time and lower < span.base
        if point.seq < span.base or unknown:
            raise FlatnetError(i18n.text(
                "replay.before_history", at=show_time(at), origin=each, base=span.base, first=show_time(span.base_time),
            ))
        points.append(point)

    view = _fold_view(data_dir, history, snapshot_list, {point.origin: point.seq for point in points})
    expired = frozenset(bounds.expired or ())
    containers = sorted(
        (container for container in view.containers.values() if origin is None or container.origin == origin),
        key=lambda container: (container.host_id, int(ipaddress.IPv4Address(container.ip)) if _is_ip(container.ip) else 0, container.id),
    )
    conflicts = {
        name: holders for name, holders in view.conflicts(expired_origins=expired).items()
        if origin is None or any(holder.origin == origin for holder in holders)
    }
    return StateReport(data_dir.path, gateway, at, points, bounds.expired, bounds.expired_source, containers, conflicts, origin)


def _bounds_from_decisions(data_dir: DataDir, at: float, bounds: _Bounds) -> None:
    vectors: dict[bytes, dict[int, int] | None] = {}
    for keys in scan_records(data_dir):
        # Only the gateway's own process: a proxy worker's view is a copy that may lag.
        if keys.file.worker != 0:
            continue
        seqs = vectors.get(keys.vector_key)
        if keys.vector_key not in vectors:
            seqs = vectors[keys.vector_key] = parse_vector(keys.vector_key)
        if not seqs:
            continue
        source = i18n.Message("replay.source_decision", location=f"{keys.file.path.name}:{keys.number}", time=show_time(keys.ts))
        if keys.ts <= at:
            if keys.ts >= bounds.evidence_ts:
                bounds.evidence_ts, bounds.evidence_basis, bounds.evidence_source = keys.ts, "decision", source
            for each, seq in seqs.items():
                if seq > bounds.lower.get(each, (0, "", None))[0]:
                    bounds.lower[each] = (seq, "decision", source)
            if keys.ts >= bounds.expired_ts:
                fields = shape_fields(keys.shape_key) or {}
                expired = fields.get("expired")
                if isinstance(expired, list):
                    bounds.expired = tuple(sorted(expired))
                    bounds.expired_ts = keys.ts
                    bounds.expired_source = source
        else:
            for each, seq in seqs.items():
                if seq < bounds.upper.get(each, math.inf):
                    bounds.upper[each] = seq


def _fold_view(data_dir: DataDir, history: History, snapshot_list: list, seqs: dict[int, int]) -> View:
    """Fold each origin's events up to ``seqs[origin]`` with the registry's fold, into one view."""
    containers: list[list] = []
    tombstones: list[list] = []
    for files in data_dir.origins():
        span = history.spans.get(files.origin)
        target = seqs.get(files.origin, 0)
        view, _ = origin_base(files.origin, files, snapshot_list)
        if span is None or view is None:
            continue
        reader = data_dir.read_origin(files, span.base)
        for batch in reader.batches():
            if batch[0]["seq"] > target:
                break
            view.fold_batches([[fields for fields in batch if fields["seq"] <= target]])
        state = view.export_state()
        containers += state["containers"]
        tombstones += state["tombstones"]
    return View.from_state({"containers": containers, "tombstones": tombstones, "tombstoneCutoff": ""}, seqs)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
