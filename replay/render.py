"""The replay reports as text for people (English or Japanese) and as JSON lines for tools.

Every renderer returns lines and reads nothing but the report, so the same
report always gives the same bytes. Class names (``consistent``, ``stale``,
``divergent``) and decision values (``peer``, ``local`` …) are the documented
identifiers and stay as they are in both languages.
"""

from __future__ import annotations

from flatnet import i18n
from flatnet.replay.report import AuditReport, Finding, Skip, Verdict
from flatnet.replay.output import json_line, seconds_text, table
from flatnet.replay.routing import Result
from flatnet.replay.state import StateReport
from flatnet.replay.timeline import TimelineReport
from flatnet.replay.times import show_time
from flatnet.replay.verify import VerifyReport
from flatnet.replay.whatif import WhatIfReport

# Rows of the by-name table in text; --json lists every name.
NAME_ROWS = 20

i18n.define({
    "replay.decisions_title": (
        "decisions of gateway h{gateway} in {path}; settings {source}",
        "ゲートウェイ h{gateway} の判断（{path}）。設定: {source}",
    ),
    "replay.settings_config": ("from {path}", "{path} から"),
    "replay.settings_inferred": (
        "inferred from the data directory (give --config to check targets against the config)",
        "データディレクトリーから推定（ターゲットを設定と照合するには --config を指定）",
    ),
    "replay.span": ("{count} decisions from {first} to {last}", "{count} 件の判断（{first} 〜 {last}）"),
    "replay.none_audited": ("no decisions to audit", "監査する判断はありません"),
    "replay.column_class": ("CLASS", "分類"),
    "replay.column_decisions": ("DECISIONS", "判断数"),
    "replay.column_name": ("NAME", "名前"),
    "replay.column_gateway": ("GATEWAY", "ゲートウェイ"),
    "replay.skipped": ("skipped", "対象外"),
    "replay.skip_unreplayable": (
        "the record does not keep what the answer rested on (a repeated Host, an invalid hop header, a loop seen in Via)",
        "判断の根拠（重複した Host、不正な hop ヘッダー、Via で検出したループ）が判断レコードに残っていません",
    ),
    "replay.skip_before-history": (
        "the view was made of events that retention has deleted",
        "ビューの元になったイベントが保持期間により削除済みです",
    ),
    "replay.skip_incomplete-line": (
        "a decision file ends in a record still being written",
        "判断ファイルの末尾が書き込み途中のレコードです",
    ),
    "replay.by_gateway_note": (
        "GATEWAY is the host whose container each request was routed to (- for none)",
        "ゲートウェイ列は各リクエストの転送先コンテナーを持つホストです（- はなし）",
    ),
    "replay.more_names": ("… and {count} more names (--json lists them all)", "…ほか {count} 件の名前（--json ですべて表示）"),
    "replay.corrupt": ("corrupt:", "破損:"),
    "replay.notes": ("notes:", "補足:"),
    "replay.findings": ("not consistent ({shown} of {total}; --limit 0 lists all):", "一貫していない判断（{total} 件中 {shown} 件。--limit 0 ですべて表示）:"),
    "replay.findings_all": ("not consistent ({total}):", "一貫していない判断（{total} 件）:"),
    "replay.recorded": ("recorded:      {answer}", "記録:          {answer}"),
    "replay.replayed": ("replayed:      {answer}", "再判断:        {answer}"),
    "replay.expected": ("owners' logs:  {answer} ({change}, {lag} after the owner's change)", "所有者のログ:  {answer}（{change}、所有者の変更から {lag} 後）"),
    "replay.not_here": ("owner h{peer} answered \"not here\"; the retry was decided on the pulled view", "所有者 h{peer} が「ここにはない」と応答し、取得し直したビューで再判断されました"),
    "replay.evidence": (
        "evidence:      origin {origin} seq {seq} {type} {container} at {ts} ({lag} before{reason})",
        "根拠:          起点 {origin} seq {seq} {type} {container}（{ts}、判断の {lag} 前{reason}）",
    ),
    "replay.reason": (", reason {reason}", "、理由 {reason}"),
    "replay.result_ok": ("result: every decision is consistent or stale", "結果: すべての判断が consistent または stale です"),
    "replay.result_bad": ("result: {divergent} divergent, {corrupt} corrupt", "結果: divergent {divergent} 件、破損 {corrupt} 件"),
    "replay.verify_title": ("logs and snapshots in {path}", "{path} のログとスナップショット"),
    "replay.column_origin": ("ORIGIN", "起点"),
    "replay.column_segments": ("SEGMENTS", "セグメント"),
    "replay.column_seqs": ("SEQS", "SEQ 範囲"),
    "replay.column_records": ("RECORDS", "レコード"),
    "replay.column_compacted": ("COMPACTED", "削除済み SEQ"),
    "replay.column_snapshot": ("SNAPSHOT", "スナップショット"),
    "replay.column_vector": ("VECTOR", "ベクター"),
    "replay.column_checked": ("FOLD CHECKED", "畳み込み照合"),
    "replay.unchecked": ("not checkable (retention): {origins}", "照合不可（保持期間）: {origins}"),
    "replay.verify_ok": ("result: no problem found (records: {records}, snapshots: {snapshots})", "結果: 問題はありません（レコード {records} 件、スナップショット {snapshots} 件）"),
    "replay.verify_bad": ("result: {count} problems", "結果: 問題 {count} 件"),
    "replay.unlisted": ("origin {origin}: {count} more problems not listed", "起点 {origin}: ほか {count} 件の問題（省略）"),
    "replay.state_title": ("view of gateway h{gateway} at {at} ({path})", "ゲートウェイ h{gateway} の {at} 時点のビュー（{path}）"),
    "replay.column_seq": ("SEQ", "SEQ"),
    "replay.column_basis": ("FROM", "根拠"),
    "replay.basis_decision": ("decision record", "判断レコード"),
    "replay.basis_snapshot": ("snapshot", "スナップショット"),
    "replay.basis_events": ("event times", "イベント時刻"),
    "replay.basis_capped": ("event times, capped by a later record", "イベント時刻（後のレコードで上限）"),
    "replay.expired_origins": ("expired origins: {origins} ({source})", "期限切れの起点: {origins}（{source}）"),
    "replay.expired_unknown": ("expired origins: unknown (no decision record at or before this time)", "期限切れの起点: 不明（この時刻以前の判断レコードなし）"),
    "replay.none": ("none", "なし"),
    "replay.column_host": ("HOST", "ホスト"),
    "replay.column_address": ("ADDRESS", "アドレス"),
    "replay.column_ports": ("PORTS", "ポート"),
    "replay.column_container": ("CONTAINER", "コンテナー"),
    "replay.column_created": ("CREATED", "作成"),
    "replay.column_state": ("STATE", "状態"),
    "replay.state_live": ("live", "有効"),
    "replay.state_expired": ("expired", "期限切れ"),
    "replay.no_containers": ("no containers", "コンテナーなし"),
    "replay.conflicts": ("conflicts (the first holder wins):", "名前の衝突（先頭が優先）:"),
    "replay.timeline_title": ("history of {name} in {path}", "{path} における {name} の履歴"),
    "replay.column_time": ("TIME", "時刻"),
    "replay.column_event": ("EVENT", "出来事"),
    "replay.column_detail": ("DETAIL", "詳細"),
    "replay.no_history": ("no container called {name} appears in the log", "{name} という名前のコンテナーはログにありません"),
    "replay.whatif_title": (
        "what-if for gateway h{gateway} ({path}): {settings}",
        "ゲートウェイ h{gateway} の what-if（{path}）: {settings}",
    ),
    "replay.whatif_ttl": ("ttl {new:g} s instead of {old:g} s", "ttl {old:g} 秒 → {new:g} 秒"),
    "replay.whatif_resync": ("a resync every {resync:g} s", "{resync:g} 秒ごとの再同期"),
    "replay.whatif_summary": ("{changed} of {total} decisions would have come out differently", "{total} 件中 {changed} 件の判断が変わっていました"),
    "replay.column_from": ("AS RECORDED", "記録どおり"),
    "replay.column_to": ("WOULD BE", "変更後"),
    "replay.whatif_list": ("changed decisions ({shown} of {total}; --limit 0 lists all):", "変わる判断（{total} 件中 {shown} 件。--limit 0 ですべて表示）:"),
    "replay.because": ("because:       {reason}", "理由:          {reason}"),
    "replay.would_be": ("would be:      {answer}", "変更後:        {answer}"),
    "replay.skipped_records": ("{count} records skipped (unreadable, or before the retained history)", "{count} 件の判断レコードは対象外（読めない、または保持期間外）"),
})

_VERDICTS = (Verdict.CONSISTENT, Verdict.STALE, Verdict.DIVERGENT)


# Decisions


def decisions_text(report: AuditReport, limit: int) -> list[str]:
    source = i18n.text("replay.settings_config", path=report.config) if report.config else i18n.text("replay.settings_inferred")
    lines = [i18n.text("replay.decisions_title", gateway=report.gateway, path=report.data_dir, source=source)]
    if report.first_ts is not None:
        lines.append(i18n.text("replay.span", count=report.audited, first=show_time(report.first_ts), last=show_time(report.last_ts)))
    else:
        lines.append(i18n.text("replay.none_audited"))
    lines.append("")

    rows = [[verdict.value, report.counts[verdict]] for verdict in _VERDICTS]
    skipped = sum(report.skipped.values())
    rows.append([i18n.text("replay.skipped"), skipped])
    lines += table([i18n.text("replay.column_class"), i18n.text("replay.column_decisions")], rows, right=(1,))
    for reason in Skip:
        if report.skipped[reason]:
            lines.append(f"  {report.skipped[reason]}: {i18n.text('replay.skip_' + reason.value)}")

    if report.by_name:
        lines.append("")
        ranked = sorted(report.by_name.items(), key=lambda item: (-_not_consistent(item[1]), -sum(item[1].values()), item[0]))
        lines += table(_verdict_header("replay.column_name"), [[name, *(counts[v] for v in _VERDICTS)] for name, counts in ranked[:NAME_ROWS]], right=(1, 2, 3))
        if len(ranked) > NAME_ROWS:
            lines.append(i18n.text("replay.more_names", count=len(ranked) - NAME_ROWS))
    if report.by_owner:
        lines.append("")
        lines += table(_verdict_header("replay.column_gateway"), [[owner, *(counts[v] for v in _VERDICTS)] for owner, counts in report.by_owner.items()], right=(1, 2, 3))
        lines.append(i18n.text("replay.by_gateway_note"))

    for title, entries in (("replay.corrupt", report.corrupt), ("replay.notes", report.notes)):
        if entries:
            lines += ["", i18n.text(title)] + [f"  {entry}" for entry in entries]

    if report.findings:
        shown = report.findings if limit <= 0 else report.findings[:limit]
        lines.append("")
        if len(shown) < len(report.findings):
            lines.append(i18n.text("replay.findings", shown=len(shown), total=len(report.findings)))
        else:
            lines.append(i18n.text("replay.findings_all", total=len(report.findings)))
        for finding in shown:
            lines += _finding_text(finding)

    lines.append("")
    if report.exit_status == 0:
        lines.append(i18n.text("replay.result_ok"))
    else:
        lines.append(i18n.text("replay.result_bad", divergent=report.counts[Verdict.DIVERGENT], corrupt=len(report.corrupt)))
    return lines


def _shown(value: i18n.Message | str | None) -> str:
    """Format a report value for text output: a catalogue message in the reader's language, anything else as it is."""
    if isinstance(value, i18n.Message):
        return value.render()
    return "" if value is None else str(value)


def _english(value: i18n.Message | None) -> str | None:
    """Format a catalogue message for JSON output, which stays English."""
    return str(value) if value is not None else None


def _verdict_header(first: str) -> list[str]:
    return [i18n.text(first), *(verdict.value.upper() for verdict in _VERDICTS)]


def _not_consistent(counts) -> int:
    return counts[Verdict.STALE] + counts[Verdict.DIVERGENT]


def _finding_text(finding: Finding) -> list[str]:
    lines = [f"{show_time(finding.ts)}  {finding.verdict.value}  {finding.name or '-'}  {finding.request_id}  {finding.source}"]
    lines.append("  " + i18n.text("replay.recorded", answer=finding.recorded.describe()))
    if finding.verdict is Verdict.DIVERGENT or finding.change == "not-here":
        lines.append("  " + i18n.text("replay.replayed", answer=finding.replayed.describe()))
    if finding.change == "not-here":
        lines.append("  " + i18n.text("replay.not_here", peer=finding.recorded.owner))
    elif finding.expected is not None:
        lag = seconds_text(finding.lag) if finding.lag is not None else "?"
        lines.append("  " + i18n.text("replay.expected", answer=finding.expected.describe(), change=finding.change, lag=lag))
    for item in finding.evidence:
        reason = i18n.text("replay.reason", reason=item.reason) if item.reason else ""
        lines.append("  " + i18n.text(
            "replay.evidence", origin=item.origin, seq=item.seq, type=item.type, container=item.container_id[:12],
            ts=item.ts, lag=seconds_text(item.lag), reason=reason,
        ))
    return lines


def decisions_json(report: AuditReport) -> list[str]:
    lines = [json_line({"kind": "decision", **_finding_document(finding)}) for finding in report.findings]
    lines += [json_line({"kind": "corrupt", "message": entry}) for entry in report.corrupt]
    lines.append(json_line({
        "kind": "summary",
        "gateway": report.gateway,
        "dataDir": str(report.data_dir),
        "config": str(report.config) if report.config else None,
        "first": show_time(report.first_ts) if report.first_ts is not None else None,
        "last": show_time(report.last_ts) if report.last_ts is not None else None,
        "decisions": report.audited,
        **{verdict.value: report.counts[verdict] for verdict in _VERDICTS},
        "skipped": {reason.value: report.skipped[reason] for reason in Skip},
        "byName": {name: _counts(counts) for name, counts in report.by_name.items()},
        "byGateway": {owner: _counts(counts) for owner, counts in report.by_owner.items()},
        "notes": report.notes,
        "exitStatus": report.exit_status,
    }))
    return lines


def _counts(counts) -> dict[str, int]:
    return {verdict.value: counts[verdict] for verdict in _VERDICTS}


def _result(result: Result | None) -> dict[str, object] | None:
    if result is None:
        return None
    return {"decision": result.decision, "owner": result.owner, "containerId": result.container_id, "target": result.target, "status": result.status}


def _finding_document(finding: Finding) -> dict[str, object]:
    return {
        "verdict": finding.verdict.value,
        "time": show_time(finding.ts),
        "ts": finding.ts,
        "requestId": finding.request_id,
        "name": finding.name,
        "host": finding.host,
        "recorded": _result(finding.recorded),
        "replayed": _result(finding.replayed),
        "expected": _result(finding.expected),
        "change": finding.change,
        "lagSeconds": finding.lag,
        "evidence": [item.to_dict() for item in finding.evidence],
        "source": finding.source,
    }


# Verify


def verify_text(report: VerifyReport) -> list[str]:
    lines = [i18n.text("replay.verify_title", path=report.data_dir), ""]
    header = [i18n.text(f"replay.column_{key}") for key in ("origin", "segments", "seqs", "records", "compacted")]
    rows = [
        [origin.origin, origin.segments, f"{origin.first_seq}-{origin.head}" if origin.head >= origin.first_seq else "-", origin.records, origin.compacted_through]
        for origin in report.origins
    ]
    lines += table(header, rows, right=(0, 1, 3, 4))
    if report.snapshots:
        lines.append("")
        header = [i18n.text(f"replay.column_{key}") for key in ("snapshot", "vector", "checked")]
        rows = []
        for snapshot in report.snapshots:
            vector = " ".join(f"{origin}:{seq}" for origin, seq in snapshot.vector.items()) or "-"
            checked = ",".join(map(str, snapshot.checked)) or "-"
            rows.append([snapshot.path.rsplit("/", 1)[-1], vector, checked])
            if snapshot.unchecked:
                rows.append(["", "", i18n.text("replay.unchecked", origins=",".join(map(str, snapshot.unchecked)))])
        lines += table(header, rows)
    lines.append("")
    for problem in report.problems:
        lines.append(f"{problem.kind}: {problem.message}")
    for origin, count in sorted(report.unlisted.items()):
        lines.append(i18n.text("replay.unlisted", origin=origin, count=count))
    if report.problems:
        lines.append(i18n.text("replay.verify_bad", count=len(report.problems) + sum(report.unlisted.values())))
    else:
        lines.append(i18n.text("replay.verify_ok", records=report.records, snapshots=len(report.snapshots)))
    return lines


def verify_json(report: VerifyReport) -> list[str]:
    lines = [
        json_line({
            "kind": "problem", "problem": problem.kind, "message": problem.message, "path": problem.path,
            "origin": problem.origin, "seq": problem.seq, "offset": problem.offset,
        })
        for problem in report.problems
    ]
    lines += [
        json_line({
            "kind": "origin", "origin": origin.origin, "segments": origin.segments, "firstSeq": origin.first_seq,
            "head": origin.head, "records": origin.records, "compactedThrough": origin.compacted_through,
        })
        for origin in report.origins
    ]
    lines += [json_line({"kind": "snapshot", "path": s.path, "vector": s.vector, "checked": list(s.checked), "unchecked": list(s.unchecked)}) for s in report.snapshots]
    lines.append(json_line({
        "kind": "summary", "dataDir": str(report.data_dir), "records": report.records, "snapshots": len(report.snapshots),
        "problems": len(report.problems) + sum(report.unlisted.values()), "exitStatus": report.exit_status,
    }))
    return lines


# State


def state_text(report: StateReport) -> list[str]:
    lines = [i18n.text("replay.state_title", gateway=report.gateway, at=show_time(report.at), path=report.data_dir), ""]
    # A source names its kind (decision record or snapshot) itself.
    rows = [[point.origin, point.seq, point.source.render() if point.source else i18n.text(f"replay.basis_{point.basis}")] for point in report.points]
    lines += table([i18n.text("replay.column_origin"), i18n.text("replay.column_seq"), i18n.text("replay.column_basis")], rows, right=(0, 1))
    lines.append("")
    if report.expired is None:
        lines.append(i18n.text("replay.expired_unknown"))
    else:
        origins = ", ".join(map(str, report.expired)) or i18n.text("replay.none")
        lines.append(i18n.text("replay.expired_origins", origins=origins, source=_shown(report.expired_source)))
    lines.append("")
    expired = set(report.expired or ())
    if report.containers:
        header = [i18n.text(f"replay.column_{key}") for key in ("host", "name", "address", "ports", "container", "created", "seq", "state")]
        rows = [
            [f"h{c.host_id}", ",".join(c.names), c.ip, ",".join(map(str, c.ports)) or "-", c.id[:12], c.created_at, f"{c.origin}:{c.seq}",
             i18n.text("replay.state_expired" if c.origin in expired else "replay.state_live")]
            for c in report.containers
        ]
        lines += table(header, rows)
    else:
        lines.append(i18n.text("replay.no_containers"))
    if report.conflicts:
        lines += ["", i18n.text("replay.conflicts")]
        for name, holders in report.conflicts.items():
            lines.append(f"  {name}: " + ", ".join(f"h{c.host_id} {c.id[:12]} ({c.created_at})" for c in holders))
    return lines


def state_json(report: StateReport) -> list[str]:
    expired = set(report.expired or ())
    lines = [
        json_line({"kind": "container", "id": c.id, "ip": c.ip, "hostname": c.hostname, "aliases": list(c.aliases), "ports": list(c.ports), "hostId": c.host_id,
                   "createdAt": c.created_at, "origin": c.origin, "seq": c.seq, "expired": c.origin in expired})
        for c in report.containers
    ]
    lines.append(json_line({
        "kind": "view", "gateway": report.gateway, "dataDir": str(report.data_dir), "at": show_time(report.at),
        "vector": {point.origin: point.seq for point in report.points},
        "basis": {point.origin: {"basis": point.basis, "source": _english(point.source)} for point in report.points},
        "expired": list(report.expired) if report.expired is not None else None, "expiredSource": _english(report.expired_source),
        "conflicts": {name: [c.id for c in holders] for name, holders in report.conflicts.items()},
        "origin": report.origin_filter,
    }))
    return lines


# Timeline


def timeline_text(report: TimelineReport) -> list[str]:
    lines = [i18n.text("replay.timeline_title", name=report.name, path=report.data_dir), ""]
    if not report.rows:
        return lines + [i18n.text("replay.no_history", name=report.name)]
    header = [i18n.text(f"replay.column_{key}") for key in ("time", "host", "event", "container", "address", "detail")]
    rows = [[show_time(row.ts), f"h{row.host}", row.event, (row.container_id or "-")[:12], row.address or "-", _shown(row.detail)] for row in report.rows]
    return lines + table(header, rows)


def timeline_json(report: TimelineReport) -> list[str]:
    return [json_line({"kind": "event", "name": report.name, **row.to_dict()}) for row in report.rows]


# What-if


def whatif_text(report: WhatIfReport, limit: int) -> list[str]:
    settings = []
    if report.timers.ttl is not None:
        settings.append(i18n.text("replay.whatif_ttl", new=report.timers.ttl, old=report.recorded_ttl))
    if report.timers.resync is not None:
        settings.append(i18n.text("replay.whatif_resync", resync=report.timers.resync))
    lines = [i18n.text("replay.whatif_title", gateway=report.gateway, path=report.data_dir, settings=", ".join(settings))]
    lines.append(i18n.text("replay.whatif_summary", changed=len(report.differences), total=report.decisions))
    if report.skipped:
        lines.append(i18n.text("replay.skipped_records", count=report.skipped))
    if report.transitions:
        lines.append("")
        rows = [[before, after, count] for (before, after), count in sorted(report.transitions.items())]
        lines += table([i18n.text("replay.column_from"), i18n.text("replay.column_to"), i18n.text("replay.column_decisions")], rows, right=(2,))
    if report.differences:
        shown = report.differences if limit <= 0 else report.differences[:limit]
        lines += ["", i18n.text("replay.whatif_list", shown=len(shown), total=len(report.differences))]
        for difference in shown:
            lines.append(f"{show_time(difference.ts)}  {difference.name or '-'}  {difference.request_id}  {difference.source}")
            lines.append("  " + i18n.text("replay.recorded", answer=difference.recorded.describe()))
            lines.append("  " + i18n.text("replay.would_be", answer=difference.replayed.describe()))
            lines.append("  " + i18n.text("replay.because", reason=difference.reason.render()))
    return lines


def whatif_json(report: WhatIfReport) -> list[str]:
    lines = [
        json_line({
            "kind": "difference", "time": show_time(d.ts), "ts": d.ts, "requestId": d.request_id, "name": d.name, "source": d.source,
            "recorded": _result(d.recorded), "wouldBe": _result(d.replayed), "reason": str(d.reason),
        })
        for d in report.differences
    ]
    lines.append(json_line({
        "kind": "summary", "gateway": report.gateway, "dataDir": str(report.data_dir), "recordedTtl": report.recorded_ttl,
        "ttl": report.timers.ttl, "resync": report.timers.resync, "decisions": report.decisions, "changed": len(report.differences),
        "transitions": [{"from": before, "to": after, "count": count} for (before, after), count in sorted(report.transitions.items())],
        "skipped": report.skipped,
    }))
    return lines
