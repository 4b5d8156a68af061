"""replay decisions: generated histories with known answers, each classification and its evidence."""

from __future__ import annotations

import json

import pytest

from flatnet.errors import FlatnetError
from flatnet.events import snapshot as snapshots
from flatnet.replay.audit import AuditOptions, Skip, Verdict, audit
from flatnet.replay.datadir import DataDir
from tests.replay.builder import START, Fleet


def _audit(fleet: Fleet, *, config=None, processes: int = 1, **options):
    return audit(DataDir(fleet.data_dir), config, AuditOptions(**options), processes=processes)


def _decision_lines(fleet: Fleet) -> list[dict]:
    path = fleet.data_dir / "decisions" / "decisions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _rewrite(fleet: Fleet, change) -> None:
    path = fleet.data_dir / "decisions" / "decisions.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    change(records)
    path.write_text("".join(json.dumps(record, separators=(",", ":")) + "\n" for record in records))


@pytest.fixture
def fleet(tmp_path):
    return Fleet(tmp_path / "data")


def test_removed_container_routed_two_seconds_later_is_stale(fleet):
    web = fleet.add(2, "web", at=START)
    fleet.deliver()
    fleet.request("web", at=START + 1)
    fleet.remove(2, web, at=START + 10)
    # The removal has not reached gateway 1 yet: it still routes to host 2.
    fleet.request("web", at=START + 12, not_here=False, status=502)
    fleet.close()

    report = _audit(fleet)

    assert report.counts == {Verdict.CONSISTENT: 1, Verdict.STALE: 1}
    [finding] = report.findings
    assert finding.verdict is Verdict.STALE
    assert finding.change == "removed"
    assert finding.lag == 2.0
    assert (finding.recorded.decision, finding.recorded.owner, finding.recorded.container_id) == ("peer", 2, web)
    assert finding.expected.decision == "not-found"
    [evidence] = finding.evidence
    assert (evidence.origin, evidence.seq, evidence.type, evidence.container_id, evidence.lag) == (2, 2, "container.removed", web, 2.0)
    assert finding.request_id == _decision_lines(fleet)[1]["request_id"]
    assert finding.source == "decisions.jsonl:2"
    assert report.exit_status == 0


def test_moved_container_is_stale_with_both_events(fleet):
    old = fleet.add(2, "web", at=START)
    fleet.deliver()
    fleet.remove(2, old, at=START + 10)
    new = fleet.add(3, "web", at=START + 10.5, number=20)
    fleet.request("web", at=START + 11, not_here=False, status=502)
    fleet.close()

    report = _audit(fleet)

    [finding] = report.findings
    assert finding.verdict is Verdict.STALE
    assert finding.change == "moved"
    assert (finding.expected.decision, finding.expected.owner, finding.expected.container_id) == ("peer", 3, new)
    assert [(item.origin, item.type) for item in finding.evidence] == [(2, "container.removed"), (3, "container.added")]
    # The lag is counted from the owner's own change, the removal on host 2.
    assert finding.lag == 1.0


def test_container_added_before_a_not_found_is_stale(fleet):
    fleet.add(2, "api", at=START + 5)
    fleet.request("api", at=START + 5.25)
    fleet.close()

    [finding] = _audit(fleet).findings

    assert finding.change == "added"
    assert finding.recorded.decision == "not-found"
    assert finding.expected.owner == 2
    assert finding.lag == 0.25


def test_not_here_retry_is_stale(fleet):
    web = fleet.add(2, "web", at=START)
    fleet.deliver()
    fleet.remove(2, web, at=START + 3)
    # Host 2 responds "not here"; the Router pulls its log and decides again.
    record = fleet.request("web", at=START + 4)
    fleet.close()

    [finding] = _audit(fleet).findings

    assert record.retried_from == 2
    assert finding.verdict is Verdict.STALE
    assert finding.change == "not-here"
    assert finding.replayed.decision == record.decision.value
    assert [(item.origin, item.seq, item.lag) for item in finding.evidence] == [(2, 2, 1.0)]


def test_corrupted_owner_is_divergent(fleet):
    fleet.add(2, "web", at=START)
    fleet.deliver()
    fleet.request("web", at=START + 1)
    fleet.request("web", at=START + 2)
    fleet.close()

    def corrupt(records):
        records[1]["owner"] = 3
        records[1]["target"] = "http://10.100.0.3:8080"

    _rewrite(fleet, corrupt)
    report = _audit(fleet, config=fleet.config())

    assert report.counts == {Verdict.CONSISTENT: 1, Verdict.DIVERGENT: 1}
    [finding] = report.findings
    assert finding.verdict is Verdict.DIVERGENT
    assert (finding.recorded.owner, finding.replayed.owner) == (3, 2)
    assert report.exit_status == 1


def test_corrupted_decision_is_divergent(fleet):
    fleet.add(1, "local-web", at=START)
    fleet.request("local-web", at=START + 1)
    fleet.close()

    _rewrite(fleet, lambda records: records[0].update(decision="not-found"))
    report = _audit(fleet)

    [finding] = report.findings
    assert finding.verdict is Verdict.DIVERGENT
    assert (finding.recorded.decision, finding.replayed.decision) == ("not-found", "local")


def test_unchanged_history_is_consistent(fleet):
    web = fleet.add(2, "web", at=START)
    fleet.add(1, "db", at=START, ports=(5432,))
    fleet.deliver()
    for second in range(1, 6):
        fleet.request("web", at=START + second)
        fleet.request("db", at=START + second + 0.5)
    fleet.remove(2, web, at=START + 7)
    fleet.deliver()
    fleet.request("web", at=START + 8)
    fleet.close()

    report = _audit(fleet)

    assert report.counts == {Verdict.CONSISTENT: 11}
    assert report.findings == []
    assert report.by_name["db"][Verdict.CONSISTENT] == 5
    assert report.by_owner["h2"][Verdict.CONSISTENT] == 5


def test_alias_decisions_replay_consistent(fleet):
    aliased = fleet.add(2, "web", at=START, aliases=("api",))
    fleet.add(1, "db", at=START, number=11, aliases=("cache",))
    fleet.deliver()
    first = fleet.request("api", at=START + 1)
    fleet.request("cache", at=START + 1.5)
    # A hostname wins over an alias, even when the alias holder is older.
    named = fleet.add(3, "api", at=START + 2, number=12)
    fleet.deliver()
    second = fleet.request("api", at=START + 3)
    fleet.remove(3, named, at=START + 4)
    fleet.deliver()
    third = fleet.request("api", at=START + 5)
    fleet.close()

    report = _audit(fleet)

    assert [(record.owner, record.container_id) for record in (first, second, third)] == [(2, aliased), (3, named), (2, aliased)]
    assert report.counts == {Verdict.CONSISTENT: 4}
    assert report.findings == []
    assert report.by_name["api"][Verdict.CONSISTENT] == 3
    assert report.by_name["cache"][Verdict.CONSISTENT] == 1


def test_removed_alias_routed_later_is_stale(fleet):
    aliased = fleet.add(2, "web", at=START, aliases=("api",))
    fleet.deliver()
    fleet.add(2, "web", at=START + 5, container_id=aliased)
    # The re-add without the alias has not reached gateway 1: it still routes "api" to host 2.
    fleet.request("api", at=START + 7, not_here=False, status=502)
    fleet.close()

    report = _audit(fleet)

    [finding] = report.findings
    assert finding.verdict is Verdict.STALE
    assert finding.change == "removed"
    assert finding.lag == 2.0
    assert (finding.recorded.decision, finding.recorded.container_id) == ("peer", aliased)
    assert finding.expected.decision == "not-found"
    [evidence] = finding.evidence
    assert (evidence.origin, evidence.seq, evidence.type) == (2, 2, "container.added")


def test_expired_owner_and_stale_policy_replay_the_same(tmp_path):
    fleet = Fleet(tmp_path / "data", stale_policy="reject")
    fleet.add(2, "web", at=START)
    fleet.add(3, "api", at=START)
    fleet.deliver()
    expired = fleet.request("api", at=START + 1, expired=(3,))
    rejected = fleet.request("web", at=START + 2, silent={2: 40.04})
    fleet.close()

    report = _audit(fleet)

    assert (expired.decision.value, rejected.decision.value, rejected.status) == ("expired", "peer", 503)
    assert report.counts == {Verdict.CONSISTENT: 2}


def test_forwarded_requests_replay_the_same(fleet):
    fleet.add(1, "web", at=START)
    fleet.add(2, "api", at=START)
    fleet.deliver()
    local = fleet.request("web", at=START + 1, hop=2)
    elsewhere = fleet.request("api", at=START + 2, hop=2)
    fleet.close()

    report = _audit(fleet, config=fleet.config())

    assert (local.decision.value, elsewhere.decision.value) == ("local", "not-found")
    assert report.counts == {Verdict.CONSISTENT: 2}


def test_bad_request_without_cause_is_skipped(fleet):
    fleet.add(1, "web", at=START)
    fleet.request("web", at=START + 1)
    fleet.close()

    def make_bad(records):
        invalid = dict(records[0], host="web.example", name=None, decision="bad-request", target=None, owner=None,
                       container_id=None, status=400, request_id="r-invalid")
        # A repeated Host header leaves a valid first Host in the record.
        repeated = dict(records[0], decision="bad-request", target=None, owner=None, container_id=None, status=400,
                        request_id="r-repeated")
        records += [invalid, repeated]

    _rewrite(fleet, make_bad)
    report = _audit(fleet)

    assert report.counts == {Verdict.CONSISTENT: 2}
    assert report.skipped[Skip.UNREPLAYABLE] == 1


def test_unreadable_record_is_corrupt(fleet):
    fleet.add(1, "web", at=START)
    fleet.request("web", at=START + 1)
    fleet.close()
    path = fleet.data_dir / "decisions" / "decisions.jsonl"
    path.write_text(path.read_text() + "{not json\n" + json.dumps({"ts": 1.0, "host": 5}) + "\n")

    report = _audit(fleet)

    assert report.counts == {Verdict.CONSISTENT: 1}
    assert len(report.corrupt) == 2
    assert report.corrupt[0].startswith("decisions.jsonl:2: unreadable decision record: not valid JSON")
    assert "field 'host' must be str, got 5" in report.corrupt[1]
    assert report.exit_status == 1


def test_incomplete_last_line_is_skipped(fleet):
    fleet.add(1, "web", at=START)
    fleet.request("web", at=START + 1)
    fleet.close()
    path = fleet.data_dir / "decisions" / "decisions.jsonl"
    path.write_bytes(path.read_bytes() + b'{"ts":1800000005.0,"request_id":"half')

    report = _audit(fleet)

    assert report.counts == {Verdict.CONSISTENT: 1}
    assert report.skipped[Skip.INCOMPLETE] == 1
    assert report.exit_status == 0


def test_vector_beyond_the_log_is_corrupt(fleet):
    fleet.add(2, "web", at=START)
    fleet.deliver()
    fleet.request("web", at=START + 1)
    fleet.close()

    _rewrite(fleet, lambda records: records[0].update(vector={"2": 5}))
    report = _audit(fleet)

    assert report.audited == 0
    assert report.corrupt == [
        "decisions saw events of origin 2 up to seq 5, but its log here ends at seq 1:"
        " the log lost events, or the data directory was copied before the log"
    ]


def test_view_before_retained_history_is_skipped(fleet):
    web = fleet.add(2, "web", at=START)
    fleet.deliver()
    fleet.request("web", at=START + 1)
    fleet.remove(2, web, at=START + 2)
    fleet.add(2, "web", at=START + 3, number=11)
    fleet.deliver()
    fleet.snapshot(at=START + 4)
    fleet.request("web", at=START + 5)
    fleet.close()
    # Retention deleted seqs 1 and 2 of origin 2; the snapshot covers 1 to 3.
    log_dir = fleet.data_dir / "log" / "2"
    lines = (log_dir / f"{1:020d}.jsonl").read_bytes().splitlines(keepends=True)
    (log_dir / f"{1:020d}.jsonl").unlink()
    (log_dir / f"{3:020d}.jsonl").write_bytes(lines[2])
    (log_dir / "compacted").write_text("2\n")

    report = _audit(fleet)

    assert report.skipped[Skip.BEFORE_HISTORY] == 1
    assert report.counts == {Verdict.CONSISTENT: 1}


def test_inferred_settings_give_the_configs_answers(fleet):
    fleet.add(2, "web", at=START)
    fleet.add(1, "db", at=START)
    fleet.deliver()
    for second in range(4):
        fleet.request("web", at=START + 1 + second)
        fleet.request("db", at=START + 1.5 + second)
    fleet.close()

    inferred, configured = _audit(fleet), _audit(fleet, config=fleet.config())

    assert inferred.counts == configured.counts == {Verdict.CONSISTENT: 8}
    assert (inferred.config, configured.config) == (None, fleet.config())


def test_config_of_another_host_is_rejected(fleet):
    fleet.add(1, "db", at=START)
    fleet.request("db", at=START + 1)
    fleet.snapshot(at=START + 2)
    fleet.close()
    config = fleet.config()
    config.write_text(config.read_text().replace("host_id = 1", "host_id = 4"))

    with pytest.raises(FlatnetError, match="is for host 4, but .* was written by host 1"):
        _audit(fleet, config=config)


def test_filters_pick_time_name_and_request(fleet):
    fleet.add(2, "web", at=START)
    fleet.add(2, "api", at=START, number=11)
    fleet.deliver()
    records = [fleet.request(name, at=START + second) for second, name in enumerate(["web", "api", "web", "api"], 1)]
    fleet.close()

    assert _audit(fleet, since=START + 2, until=START + 3).audited == 2
    assert _audit(fleet, name="WEB").audited == 2
    assert _audit(fleet, request_id=records[3].request_id).audited == 1


def test_request_id_filter_reads_only_that_field(fleet):
    fleet.add(2, "web", at=START)
    fleet.deliver()
    for second in range(1, 5):
        fleet.request("web", at=START + second)
    fleet.close()

    def reuse_the_name(records):
        # X-Request-Id is the client's free text, so it can equal a container name.
        records[1]["request_id"] = "web"
        # A record laid out otherwise (request_id last) is compared after parsing.
        del records[3]["request_id"]
        records[3]["request_id"] = "web"

    _rewrite(fleet, reuse_the_name)
    report = _audit(fleet, request_id="web")

    assert report.audited == 2
    assert report.first_ts == START + 2
    assert report.last_ts == START + 4
    assert _audit(fleet, request_id="nosuch").audited == 0


def test_several_processes_give_the_same_report(fleet):
    web = fleet.add(2, "web", at=START)
    fleet.deliver()
    for second in range(20):
        fleet.request("web", at=START + 1 + second)
    fleet.remove(2, web, at=START + 30)
    for second in range(5):
        fleet.request("web", at=START + 31 + second, not_here=False, status=502)
    fleet.close()
    # Three files, as a gateway's decision log rolls over.
    directory = fleet.data_dir / "decisions"
    lines = (directory / "decisions.jsonl").read_text().splitlines(keepends=True)
    (directory / "decisions.jsonl.2").write_text("".join(lines[:8]))
    (directory / "decisions.jsonl.1").write_text("".join(lines[8:16]))
    (directory / "decisions.jsonl").write_text("".join(lines[16:]))

    one, two = _audit(fleet), _audit(fleet, processes=2)

    assert one.counts == two.counts == {Verdict.CONSISTENT: 20, Verdict.STALE: 5}
    assert one.findings == two.findings
    assert one.by_name == two.by_name


def test_audit_changes_nothing_in_the_data_directory(fleet):
    web = fleet.add(2, "web", at=START)
    fleet.deliver()
    fleet.request("web", at=START + 1)
    fleet.remove(2, web, at=START + 2)
    fleet.snapshot(at=START + 2.5)
    fleet.close()
    # A torn tail that the gateway would cut off at start.
    with open(fleet.data_dir / "log" / "2" / f"{1:020d}.jsonl", "ab") as segment:
        segment.write(b'{"crc":1,"da')
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in fleet.data_dir.rglob("*") if path.is_file()}

    _audit(fleet)

    after = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in fleet.data_dir.rglob("*") if path.is_file()}
    assert after == before


def test_snapshot_list_is_read_not_pruned(fleet):
    fleet.add(1, "db", at=START)
    for second in range(4):
        fleet.snapshot(at=START + second)
    fleet.close()

    _audit(fleet)

    assert len(snapshots.list_snapshots(fleet.data_dir / "snapshots")) == 4
