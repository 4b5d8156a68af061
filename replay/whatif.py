"""`flatnet replay what-if`: decide every recorded request again under other timer settings.

Each decision is replayed twice with the proxy's Router: once as recorded (the
record's vector, expired origins and owner silence), and once as it would have
gone with the new ``ttl`` and ``resync``. The decisions whose results differ
are listed with the reason.

Liveness is not in the log, so each origin's silence over time is estimated
from the decision records, in time order:

- a record whose stale policy applied gives the owner's silence exactly, so
  the owner was last heard at the record's time minus that silence;
- an origin first listed as expired had been silent for at least the recorded
  ttl: it was last heard no later than the record's time minus that ttl;
- a record routed to an owner without the stale policy, or a record that no
  longer lists an origin as expired while the estimate puts it past the ttl,
  shows the origin was heard again, and its silence starts over.

Under the new ttl, an origin is expired when its estimated silence reaches
it. Under ``resync S``, a live origin's part of the view is brought up to the
events its log held S seconds before the request (the snapshot backstop
compares heads every S seconds); an expired origin cannot be reached, so its
part stays as recorded. These are estimates from what was recorded: a silence
never observed by a record (no request went to that host) is not seen.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
from pathlib import Path
from typing import Any

from flatnet import i18n
from flatnet.gateway.decisions import Decision
from flatnet.gateway.settings import Settings
from flatnet.replay.audit import AuditOptions, make_shape, same_route
from flatnet.replay.datadir import DataDir
from flatnet.replay.history import History, build_history
from flatnet.replay.output import Progress
from flatnet.replay.records import parse_vector, scan_records, shape_fields
from flatnet.replay.routing import Result, Replayer, quiet_proxy_logger
from flatnet.replay.settings import ReplaySettings

i18n.define({
    "replay.reason_resync": (
        "a resync every {resync:g} s would have brought origin {origin} to seq {seq}",
        "{resync:g} 秒ごとの再同期があれば、起点 {origin} は seq {seq} まで進んでいました",
    ),
    "replay.reason_past_ttl": (
        "h{origin} silent {silent:.1f} s, past the ttl of {ttl:g} s",
        "h{origin} は {silent:.1f} 秒応答がなく、ttl {ttl:g} 秒を過ぎています",
    ),
    "replay.reason_within_ttl": (
        "h{origin} silent {silent:.1f} s, within the ttl of {ttl:g} s",
        "h{origin} の無応答は {silent:.1f} 秒で、ttl {ttl:g} 秒以内です",
    ),
    "replay.reason_threshold": (
        "the stale policy's threshold moved with the ttl",
        "stale ポリシーのしきい値が ttl とともに変わりました",
    ),
})

_ROUTED = frozenset({Decision.PEER.value, Decision.STALE_RETRY.value})


@dataclasses.dataclass(frozen=True)
class Timers:
    """The timer settings to try; None keeps the recorded one."""

    ttl: float | None = None
    resync: float | None = None


@dataclasses.dataclass(frozen=True)
class Difference:
    """A decision that would have come out differently."""

    ts: float
    request_id: str
    name: str | None
    source: str
    recorded: Result
    replayed: Result
    # Catalogue messages: str() gives the English text, render() the reader's language.
    reason: i18n.Joined | i18n.Message


@dataclasses.dataclass
class WhatIfReport:
    data_dir: Path
    gateway: int
    recorded_ttl: float
    timers: Timers
    decisions: int = 0
    transitions: collections.Counter[tuple[str, str]] = dataclasses.field(default_factory=collections.Counter)
    differences: list[Difference] = dataclasses.field(default_factory=list)
    # Records not replayed: unreadable, or before the retained history.
    skipped: int = 0


class Liveness:
    """Each origin's estimated last-heard time, as change points in time order."""

    def __init__(self) -> None:
        self.times: dict[int, list[float]] = collections.defaultdict(list)
        self.heard: dict[int, list[float | None]] = collections.defaultdict(list)

    def set(self, origin: int, ts: float, last_heard: float | None) -> None:
        times, heard = self.times[origin], self.heard[origin]
        if heard and heard[-1] == last_heard:
            return
        times.append(ts)
        heard.append(last_heard)

    def current(self, origin: int) -> float | None:
        heard = self.heard.get(origin)
        return heard[-1] if heard else None

    def silence(self, origin: int, ts: float) -> float:
        """Seconds ``origin`` had been silent at ``ts``; 0 when no record showed a silence."""
        times = self.times.get(origin)
        if not times:
            return 0.0
        index = bisect.bisect_right(times, ts) - 1
        last_heard = self.heard[origin][index] if index >= 0 else None
        return max(0.0, ts - last_heard) if last_heard is not None else 0.0


def estimate_liveness(observations: list[tuple[float, dict[str, Any]]], own: int, recorded_ttl: float) -> Liveness:
    """Build the liveness estimate from (time, routing fields) of the records, sorted by time."""
    liveness = Liveness()
    for ts, fields in observations:
        expired = set(fields["expired"])
        owner = fields["owner"]
        for origin in sorted(expired):
            last = liveness.current(origin)
            # Listed as expired: silent for at least the recorded ttl, whatever the earlier estimate.
            if origin != own and (last is None or ts - last < recorded_ttl):
                liveness.set(origin, ts, ts - recorded_ttl)
        if isinstance(owner, int) and owner != own and owner not in expired:
            if fields["stale_policy"] is not None and fields["owner_silent_seconds"] is not None:
                liveness.set(owner, ts, ts - float(fields["owner_silent_seconds"]))
            elif fields["decision"] in _ROUTED:
                liveness.set(owner, ts, None)
        for origin, heard in list(liveness.heard.items()):
            last = heard[-1] if heard else None
            if last is not None and origin not in expired and ts - last >= recorded_ttl:
                liveness.set(origin, ts, None)
    return liveness


def what_if(
    data_dir: DataDir, settings: ReplaySettings, timers: Timers, options: AuditOptions, *, history: History | None = None,
) -> WhatIfReport:
    """Replay every decision of ``data_dir`` under ``timers`` and report the ones that change."""
    if history is None:
        history = build_history(data_dir)
    recorded = settings.settings
    trial = recorded.model_copy(update={key: value for key, value in (("ttl", timers.ttl), ("resync", timers.resync)) if value is not None})
    report = WhatIfReport(data_dir.path, recorded.host_id, recorded.ttl, timers)

    records = []
    fields_of: dict[Any, dict[str, Any] | None] = {}
    for keys in scan_records(data_dir):
        if keys.ts < options.since or keys.ts > options.until:
            continue
        if keys.shape_key not in fields_of:
            fields_of[keys.shape_key] = shape_fields(keys.shape_key)
        fields = fields_of[keys.shape_key]
        if fields is None or not isinstance(fields.get("expired"), list):
            report.skipped += 1
            continue
        records.append(keys)
    records.sort(key=lambda keys: (keys.ts, keys.file.worker, keys.file.rolled, keys.number))
    liveness = estimate_liveness([(keys.ts, fields_of[keys.shape_key]) for keys in records], recorded.host_id, recorded.ttl)

    baseline, trial_replayer = Replayer(recorded), Replayer(trial)
    progress = Progress("what-if", len(records))
    try:
        with quiet_proxy_logger():
            for index, keys in enumerate(records):
                _replay_one(keys, fields_of[keys.shape_key], history, liveness, baseline, trial_replayer, trial, timers, options, report)
                if index % 4096 == 0:
                    progress.update(index)
    finally:
        progress.close()
        baseline.close()
        trial_replayer.close()
    return report


def _replay_one(
    keys, fields: dict[str, Any], history: History, liveness: Liveness, baseline: Replayer, trial_replayer: Replayer,
    trial: Settings, timers: Timers, options: AuditOptions, report: WhatIfReport,
) -> None:
    shape = make_shape(fields)
    if shape.problem is not None:
        report.skipped += 1
        return
    if options.name is not None and shape.name != options.name.lower():
        return
    seqs = parse_vector(keys.vector_key)
    if seqs is None or any(seqs.get(origin, 0) < span.base or seqs.get(origin, 0) > span.head for origin, span in history.spans.items()):
        report.skipped += 1
        return
    report.decisions += 1
    holders = history.holders(shape.name, seqs) if shape.name is not None else ()
    before = baseline.decide(shape.request, holders, seqs, seed=shape.recorded)

    own = trial.host_id
    silences = {origin: liveness.silence(origin, keys.ts) for origin in history.spans if origin != own}
    expired = frozenset(origin for origin, silent in silences.items() if silent >= trial.ttl)
    reasons: list[i18n.Message | str] = []
    trial_seqs = dict(seqs)
    if timers.resync is not None:
        for origin, span in history.spans.items():
            if origin in expired or origin == own:
                continue
            caught_up = min(span.seq_known_by(keys.ts - timers.resync), span.head)
            if caught_up > trial_seqs.get(origin, 0):
                trial_seqs[origin] = caught_up
                reasons.append(i18n.Message("replay.reason_resync", resync=timers.resync, origin=origin, seq=caught_up))
    for origin in sorted(expired - shape.request.expired):
        reasons.append(i18n.Message("replay.reason_past_ttl", origin=origin, silent=silences[origin], ttl=trial.ttl))
    for origin in sorted(shape.request.expired - expired):
        reasons.append(i18n.Message("replay.reason_within_ttl", origin=origin, silent=silences.get(origin, 0.0), ttl=trial.ttl))

    request = dataclasses.replace(shape.request, expired=expired, owner_silent=None)
    trial_holders = history.holders(shape.name, trial_seqs) if shape.name is not None else ()
    after = trial_replayer.decide(request, trial_holders, trial_seqs, seed=shape.recorded, silences=silences)
    if same_route(before, after) and before.status == after.status:
        return
    report.transitions[(before.decision, after.decision)] += 1
    report.differences.append(Difference(
        keys.ts, _request_id(keys.line), shape.name, f"{keys.file.path.name}:{keys.number}", before, after,
        i18n.Joined(reasons) if reasons else i18n.Message("replay.reason_threshold"),
    ))


def _request_id(line: bytes) -> str:
    start = line.find(b'"request_id":"')
    if start < 0:
        return ""
    end = line.find(b'"', start + 14)
    return line[start + 14:end].decode(errors="replace")

