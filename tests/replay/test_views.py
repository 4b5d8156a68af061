"""replay state, timeline and what-if on generated histories with known answers."""

from __future__ import annotations

import pytest

from flatnet.errors import FlatnetError
from flatnet.replay.audit import AuditOptions
from flatnet.replay.datadir import DataDir
from flatnet.replay.settings import ReplaySettings
from flatnet.replay.state import view_at
from flatnet.replay.timeline import timeline
from flatnet.replay.whatif import Timers, what_if
from tests.replay.builder import START, Fleet


@pytest.fixture
def fleet(tmp_path):
    return Fleet(tmp_path / "data")


def _names(report) -> list[tuple[int, str]]:
    return [(container.host_id, container.hostname) for container in report.containers]


# state


def test_state_follows_the_decision_records(fleet):
    web = fleet.add(2, "web", at=START)
    fleet.add(1, "db", at=START + 1)
    fleet.deliver()
    fleet.request("web", at=START + 2)
    fleet.remove(2, web, at=START + 10)
    fleet.request("web", at=START + 12, not_here=False, status=502)
    fleet.deliver()
    fleet.request("web", at=START + 14)
    fleet.close()
    data_dir = DataDir(fleet.data_dir)

    before = view_at(data_dir, 1, START + 0.5)
    lagging = view_at(data_dir, 1, START + 12.5)
    after = view_at(data_dir, 1, START + 14)

    assert _names(before) == [(2, "web")]
    # The record at +12 shows the gateway had not received the removal yet.
    assert _names(lagging) == [(1, "db"), (2, "web")]
    assert {point.origin: point.basis for point in lagging.points}[2] == "decision"
    assert _names(after) == [(1, "db")]
    assert after.expired == ()


def test_state_origin_filter_and_conflicts(fleet):
    fleet.add(2, "web", at=START)
    fleet.add(3, "web", at=START + 1, number=20)
    fleet.deliver()
    fleet.close()

    report = view_at(DataDir(fleet.data_dir), 1, START + 5, origin=3)

    assert _names(report) == [(3, "web")]
    assert [holder.host_id for holder in report.conflicts["web"]] == [3, 2]


def test_state_before_retained_history_is_an_error(fleet):
    web = fleet.add(2, "web", at=START)
    fleet.remove(2, web, at=START + 1)
    fleet.add(2, "web", at=START + 2, number=11)
    fleet.snapshot(at=START + 3)
    fleet.close()
    log_dir = fleet.data_dir / "log" / "2"
    lines = (log_dir / f"{1:020d}.jsonl").read_bytes().splitlines(keepends=True)
    (log_dir / f"{1:020d}.jsonl").unlink()
    (log_dir / f"{3:020d}.jsonl").write_bytes(lines[2])
    (log_dir / "compacted").write_text("2\n")

    with pytest.raises(FlatnetError, match="retention deleted its events up to seq 3, and the oldest snapshot"):
        view_at(DataDir(fleet.data_dir), 1, START + 0.5)
    assert _names(view_at(DataDir(fleet.data_dir), 1, START + 4)) == [(2, "web")]


# timeline


def test_timeline_names_add_remove_move_conflict_and_expiry(fleet):
    first = fleet.add(2, "web", at=START)
    fleet.remove(2, first, at=START + 5)
    fleet.add(3, "web", at=START + 6, number=20)
    fleet.add(1, "web", at=START + 7)
    fleet.deliver()
    fleet.request("web", at=START + 8)
    fleet.request("api", at=START + 9, expired=(3,))
    fleet.request("api", at=START + 10)
    fleet.close()

    rows = timeline(DataDir(fleet.data_dir), "WEB").rows

    assert [(row.event, row.host) for row in rows] == [
        ("added", 2), ("removed", 2), ("moved", 3), ("conflict", 1), ("expired", 3), ("live", 3),
    ]
    assert str(rows[2].detail) == "from h2, 1.000 s after its removal there"
    assert str(rows[3].detail).endswith("h1 (" + rows[3].container_id[:12] + ") wins")


def test_timeline_of_an_unknown_name_is_empty(fleet):
    fleet.add(1, "db", at=START)
    fleet.close()

    assert timeline(DataDir(fleet.data_dir), "nobody").rows == []


# what-if


def _what_if(fleet: Fleet, **timers):
    return what_if(DataDir(fleet.data_dir), ReplaySettings(fleet.settings, None), Timers(**timers), AuditOptions())


def test_shorter_ttl_expires_a_silent_owner(fleet):
    fleet.add(2, "web", at=START)
    fleet.deliver()
    # Host 2 went silent at +0; the stale policy recorded its silence.
    fleet.request("web", at=START + 20, silent={2: 20.0})
    fleet.request("web", at=START + 40, silent={2: 40.0})
    fleet.request("web", at=START + 70, silent={2: 70.0})
    fleet.close()

    report = _what_if(fleet, ttl=60)

    assert report.decisions == 3
    assert [(difference.recorded.decision, difference.replayed.decision) for difference in report.differences] == [("peer", "expired")]
    assert report.differences[0].ts == START + 70
    assert "h2 silent 70.0 s, past the ttl of 60 s" in str(report.differences[0].reason)


def test_resync_would_have_avoided_a_stale_decision(fleet):
    web = fleet.add(2, "web", at=START)
    fleet.deliver()
    fleet.remove(2, web, at=START + 10)
    fleet.request("web", at=START + 40, not_here=False, status=502)
    fleet.request("web", at=START + 11, not_here=False, status=502)
    fleet.close()

    report = _what_if(fleet, resync=20)

    assert [difference.ts for difference in report.differences] == [START + 40]
    assert report.transitions == {("peer", "not-found"): 1}
    assert "a resync every 20 s would have brought origin 2 to seq 2" in str(report.differences[0].reason)


def test_same_timers_change_nothing(fleet):
    fleet.add(2, "web", at=START)
    fleet.deliver()
    fleet.request("web", at=START + 1)
    fleet.request("web", at=START + 2, expired=(2,))
    fleet.close()

    assert _what_if(fleet, ttl=300).differences == []
