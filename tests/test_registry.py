import pytest
from hypothesis import given
from hypothesis import strategies as st

from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Event
from flatnet.registry import Container, Liveness, Outcome, View

EARLY = "2026-12-04T10:00:00.000Z"
LATE = "2026-12-04T11:00:00.000Z"


def added(origin: int, seq: int, container_id: str, hostname: str = "web", created_at: str = EARLY, **data) -> Event:
    payload = {
        "id": container_id,
        "ip": f"10.100.{origin}.{10 + seq}",
        "hostname": hostname,
        "ports": [80],
        "hostId": origin,
        "createdAt": created_at,
        "ifname": "eth0",
    }
    payload.update(data)
    return Event(origin, seq, "2026-12-04T12:00:00.000Z", "node", 1, f"event-{origin}-{seq}", CONTAINER_ADDED, 1, payload)


def removed(origin: int, seq: int, container_id: str) -> Event:
    data = {"id": container_id, "reason": "deleted"}
    return Event(origin, seq, "2026-12-04T12:00:00.000Z", "node", 1, f"event-{origin}-{seq}", CONTAINER_REMOVED, 1, data)


def fold(events) -> View:
    view = View()
    view.apply_all(events)
    return view


# Fold


def test_added_inserts_container():
    view = View()

    outcome = view.apply(added(2, 1, "c1", hostname="Web-B1", ports=[8080, 80]))

    assert outcome is Outcome.ADDED
    assert view.containers["c1"] == Container(
        id="c1",
        ip="10.100.2.11",
        hostname="web-b1",
        ports=(8080, 80),
        host_id=2,
        created_at=EARLY,
        ifname="eth0",
        origin=2,
        seq=1,
    )


def test_added_without_optional_fields_uses_defaults():
    event = Event(1, 1, LATE, "node", 1, "event-1", CONTAINER_ADDED, 1, {"id": "c1", "ip": "10.100.1.10", "hostname": "web", "hostId": 1})

    view = fold([event])

    assert view.containers["c1"].ports == ()
    assert view.containers["c1"].ifname == "eth0"
    assert view.containers["c1"].created_at == LATE


def test_added_same_id_replaces():
    view = fold([added(1, 1, "c1", ip="10.100.1.10")])

    outcome = view.apply(added(1, 2, "c1", ip="10.100.1.20"))

    assert outcome is Outcome.REPLACED
    assert view.containers["c1"].ip == "10.100.1.20"
    assert view.containers["c1"].seq == 2
    assert len(view.containers) == 1


def test_removed_deletes_container():
    view = fold([added(1, 1, "c1"), added(1, 2, "c2")])

    outcome = view.apply(removed(1, 3, "c1"))

    assert outcome is Outcome.REMOVED
    assert list(view.containers) == ["c2"]


def test_removed_unknown_container_is_unchanged():
    view = fold([added(1, 1, "c1")])

    outcome = view.apply(removed(1, 2, "c9"))

    assert outcome is Outcome.UNCHANGED
    assert list(view.containers) == ["c1"]
    assert view.vector == {1: 2}


def test_event_applied_twice_changes_nothing():
    view = View()
    event = added(1, 1, "c1")
    view.apply(event)
    containers = dict(view.containers)
    vector = dict(view.vector)

    outcome = view.apply(event)

    assert outcome is Outcome.UNCHANGED
    assert view.containers == containers
    assert view.vector == vector


def test_removed_applied_twice_changes_nothing():
    view = fold([added(1, 1, "c1"), removed(1, 2, "c1")])

    outcome = view.apply(removed(1, 2, "c1"))

    assert outcome is Outcome.UNCHANGED
    assert view.containers == {}


def test_older_seq_is_not_applied_again():
    # An add redelivered after its remove must not bring the container back.
    view = fold([added(1, 1, "c1"), removed(1, 2, "c1")])

    outcome = view.apply(added(1, 1, "c1"))

    assert outcome is Outcome.UNCHANGED
    assert view.containers == {}


def test_only_adding_origin_can_remove():
    view = fold([added(1, 1, "c1")])

    outcome = view.apply(removed(2, 1, "c1"))

    assert outcome is Outcome.UNCHANGED
    assert "c1" in view.containers
    assert view.vector == {1: 1, 2: 1}


def test_vector_tracks_each_origin():
    view = fold([added(1, 1, "a"), added(2, 1, "b"), added(1, 2, "c"), removed(2, 2, "b")])

    assert view.vector == {1: 2, 2: 2}


def test_unknown_type_leaves_view_unchanged():
    view = fold([added(1, 1, "c1")])
    unknown = Event(1, 2, EARLY, "node", 1, "event-1-2", "container.moved", 1, {"id": "c1"})

    with pytest.raises(ValueError, match="'container.moved'"):
        view.apply(unknown)

    assert view.vector == {1: 1}
    assert list(view.containers) == ["c1"]


def test_added_without_ip_leaves_view_unchanged():
    view = fold([added(1, 1, "c1")])
    malformed = Event(1, 2, EARLY, "node", 1, "event-1-2", CONTAINER_ADDED, 1, {"id": "c2", "hostname": "web", "hostId": 1})

    with pytest.raises(KeyError):
        view.apply(malformed)

    assert view.vector == {1: 1}
    assert list(view.containers) == ["c1"]


# Names


def test_hostname_is_stored_lower_case():
    view = fold([added(1, 1, "c1", hostname="Web-B1")])

    assert [container.id for container in view.named("web-b1")] == ["c1"]


def test_unknown_name_finds_nothing():
    view = fold([added(1, 1, "c1", hostname="web")])

    assert view.named("db") == []


def test_most_recently_created_wins():
    view = fold([added(1, 1, "new", created_at=LATE), added(2, 1, "old", created_at=EARLY)])

    assert [container.id for container in view.named("web")] == ["new", "old"]


def test_creation_time_tie_is_deterministic():
    first, second, third = added(1, 1, "b"), added(2, 1, "a"), added(2, 2, "c")

    for order in ([first, second, third], [second, first, third], [second, third, first]):
        winners = [container.id for container in fold(order).named("web")]
        assert winners == ["c", "a", "b"]


def test_expired_origin_is_excluded_from_names():
    view = fold([added(1, 1, "live", created_at=EARLY), added(2, 1, "stale", created_at=LATE)])

    matches = view.named("web", expired_origins=frozenset({2}))

    assert [container.id for container in matches] == ["live"]


def test_name_of_only_expired_containers_finds_nothing():
    view = fold([added(2, 1, "stale")])

    assert view.named("web", expired_origins=frozenset({2})) == []


# Conflicts


def test_shared_name_is_a_conflict_winner_first():
    view = fold([added(1, 1, "old", created_at=EARLY), added(2, 1, "new", created_at=LATE), added(1, 2, "db1", hostname="db")])

    conflicts = view.conflicts()

    assert list(conflicts) == ["web"]
    assert [container.id for container in conflicts["web"]] == ["new", "old"]


def test_expired_holder_is_no_conflict():
    view = fold([added(1, 1, "live"), added(2, 1, "stale")])

    assert view.conflicts(expired_origins=frozenset({2})) == {}


def test_conflict_ends_when_holder_is_removed():
    view = fold([added(1, 1, "a"), added(2, 1, "b"), removed(2, 2, "b")])

    assert view.conflicts() == {}


# Liveness


def test_own_origin_never_expires():
    liveness = Liveness(own_origin=1, ttl=300)

    assert not liveness.is_expired(1, now=1e9)
    assert liveness.remaining(1, now=1e9) == 300
    assert liveness.expired([1, 2], now=1e9) == frozenset({2})


def test_remaining_ttl_counts_down_from_last_heard():
    liveness = Liveness(own_origin=1, ttl=300)
    liveness.heard(2, now=100.0)

    assert liveness.remaining(2, now=130.0) == 270.0
    assert not liveness.is_expired(2, now=399.0)


def test_silent_origin_expires_after_ttl():
    liveness = Liveness(own_origin=1, ttl=300)
    liveness.heard(2, now=100.0)

    assert liveness.is_expired(2, now=401.0)
    assert liveness.remaining(2, now=401.0) == 0.0
    assert liveness.expired([2, 3], now=401.0) == frozenset({2, 3})


def test_never_heard_origin_is_expired():
    liveness = Liveness(own_origin=1, ttl=300)

    assert liveness.is_expired(4, now=0.0)
    assert liveness.remaining(4, now=0.0) == 0.0


def test_heard_again_reports_earlier_expiry():
    liveness = Liveness(own_origin=1, ttl=300)

    first = liveness.heard(2, now=0.0)
    while_live = liveness.heard(2, now=200.0)
    after_silence = liveness.heard(2, now=600.0)

    assert first is True
    assert while_live is False
    assert after_silence is True
    assert liveness.remaining(2, now=600.0) == 300.0


# Properties of the fold


@st.composite
def origin_histories(draw):
    """Draw per-origin event lists in seq order, where each origin adds only its own container ids."""
    histories = {}
    for origin in range(1, draw(st.integers(min_value=1, max_value=3)) + 1):
        operations = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["add", "remove"]),
                    st.integers(min_value=1, max_value=3),
                    st.integers(min_value=0, max_value=4),
                    st.sampled_from(["web", "db", "Web"]),
                    st.sampled_from([EARLY, LATE]),
                ),
                max_size=12,
            )
        )
        events = []
        for seq, (kind, target_origin, number, hostname, created_at) in enumerate(operations, start=1):
            if kind == "add":
                events.append(added(origin, seq, f"{origin}-{number}", hostname=hostname, created_at=created_at))
            else:
                # Removes may name another origin's container, which the fold must ignore.
                events.append(removed(origin, seq, f"{target_origin}-{number}"))
        histories[origin] = events
    return histories


def interleave(histories, order):
    cursors = {origin: iter(events) for origin, events in histories.items()}
    return [next(cursors[origin]) for origin in order]


@st.composite
def interleaved_events(draw):
    histories = draw(origin_histories())
    labels = [origin for origin, events in histories.items() for _ in events]
    order = draw(st.permutations(labels))
    return histories, interleave(histories, order)


def state(view: View):
    return view.containers, view.vector


@given(data=interleaved_events(), split=st.integers(min_value=0))
def test_split_fold_equals_one_pass(data, split):
    _, events = data
    split %= len(events) + 1

    view = View()
    view.apply_all(events[:split])
    view.apply_all(events[split:])

    assert state(view) == state(fold(events))


@given(data=interleaved_events(), st_data=st.data())
def test_redelivered_events_change_nothing(data, st_data):
    # A follower that reconnects, or an outbox drained after a direct
    # delivery, may hand over again any event already applied, in any order.
    _, events = data
    view = fold(events)
    expected = (dict(view.containers), dict(view.vector))

    again = st_data.draw(st.lists(st.sampled_from(events), max_size=20) if events else st.just([]))
    outcomes = [view.apply(event) for event in again]

    assert state(view) == expected
    assert all(outcome is Outcome.UNCHANGED for outcome in outcomes)


@given(data=interleaved_events(), order=st.randoms(use_true_random=False))
def test_interleaving_of_origins_changes_nothing(data, order):
    histories, events = data
    labels = [origin for origin, history in histories.items() for _ in history]
    order.shuffle(labels)

    assert state(fold(interleave(histories, labels))) == state(fold(events))
