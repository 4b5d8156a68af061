import pytest
from hypothesis import given
from hypothesis import strategies as st

from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Event
from flatnet.registry import Container, Liveness, Outcome, Tombstone, View, ViewStateError

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


# Aliases


def test_alias_finds_container():
    view = fold([added(1, 1, "c1", hostname="web", aliases=["api", "www.site"])])

    assert [container.id for container in view.named("api")] == ["c1"]
    assert [container.id for container in view.named("WWW.Site")] == ["c1"]
    assert [container.id for container in view.named("web")] == ["c1"]


def test_aliases_are_lower_cased_without_hostname():
    view = fold([added(1, 1, "c1", hostname="Web", aliases=["API", "web", "api", "Db"])])

    assert view.containers["c1"].aliases == ("api", "db")
    assert view.containers["c1"].names == ("web", "api", "db")
    assert view.conflicts() == {}


def test_hostname_wins_over_newer_alias():
    # The alias holder is newer, and would win if both were hostnames.
    view = fold([added(1, 1, "named", hostname="api", created_at=EARLY), added(2, 1, "aliased", hostname="web", created_at=LATE, aliases=["api"])])

    assert [container.id for container in view.named("api")] == ["named", "aliased"]
    assert [container.id for container in view.conflicts()["api"]] == ["named", "aliased"]


def test_expired_hostname_holder_lets_alias_win():
    view = fold([added(1, 1, "named", hostname="api"), added(2, 1, "aliased", hostname="web", aliases=["api"])])

    assert [container.id for container in view.named("api", expired_origins=frozenset({1}))] == ["aliased"]


def test_newest_of_two_aliases_wins():
    view = fold([added(1, 1, "old", hostname="a", created_at=EARLY, aliases=["api"]), added(2, 1, "new", hostname="b", created_at=LATE, aliases=["api"])])

    assert [container.id for container in view.named("api")] == ["new", "old"]
    assert list(view.conflicts()) == ["api"]


def test_alias_winner_is_same_in_every_order():
    events = [
        added(1, 1, "alias-new", hostname="x", created_at=EVENING, aliases=["api"]),
        added(2, 1, "host-old", hostname="api", created_at=EARLY),
        added(2, 2, "alias-old", hostname="y", created_at=EARLY, aliases=["api"]),
        added(3, 1, "host-new", hostname="api", created_at=LATE),
    ]
    # Each origin's own events stay in seq order; the origins interleave differently.
    orders = [events, [events[3], events[1], events[0], events[2]], [events[1], events[2], events[3], events[0]]]

    for order in orders:
        winners = [container.id for container in fold(order).named("api")]
        assert winners == ["host-new", "host-old", "alias-new", "alias-old"]


def test_removal_frees_alias():
    view = fold([added(1, 1, "c1", aliases=["api"]), added(2, 1, "c2", hostname="db", aliases=["api"])])

    view.apply(removed(1, 2, "c1"))

    assert [container.id for container in view.named("api")] == ["c2"]
    assert view.conflicts() == {}
    view.apply(removed(2, 2, "c2"))
    assert view.named("api") == []


def test_replace_without_alias_frees_it():
    view = fold([added(1, 1, "c1", aliases=["api", "www"], created_at=EARLY)])

    view.apply(added(1, 2, "c1", aliases=["www"], created_at=LATE))

    assert view.named("api") == []
    assert [container.seq for container in view.named("www")] == [2]


def test_alias_equal_to_own_hostname_is_no_conflict():
    view = fold([added(1, 1, "c1", hostname="web", aliases=["WEB"])])

    assert view.containers["c1"].aliases == ()
    assert [container.id for container in view.named("web")] == ["c1"]
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


# Incarnations and tombstones

MIDDAY = "2026-12-04T12:00:00.000Z"
EVENING = "2026-12-04T18:00:00.000Z"


def removed_at(origin: int, seq: int, container_id: str, ts: str, **data) -> Event:
    payload = {"id": container_id, "reason": "deleted", **data}
    return Event(origin, seq, ts, "node", 1, f"event-{origin}-{seq}", CONTAINER_REMOVED, 1, payload)


def test_late_removal_of_older_instance_leaves_new_one():
    # podman keeps the id across a restart: the removal names the first
    # instance, and arrives after the second one was added.
    view = fold([added(1, 1, "c1", created_at=EARLY), added(1, 2, "c1", created_at=LATE)])

    outcome = view.apply(removed_at(1, 3, "c1", EVENING, createdAt=EARLY))

    assert outcome is Outcome.UNCHANGED
    assert view.containers["c1"].created_at == LATE
    assert view.vector == {1: 3}


def test_removal_naming_current_instance_removes_it():
    view = fold([added(1, 1, "c1", created_at=LATE)])

    outcome = view.apply(removed_at(1, 2, "c1", EVENING, createdAt=LATE))

    assert outcome is Outcome.REMOVED
    assert view.containers == {}


def test_removal_older_than_instance_is_ignored():
    view = fold([added(1, 1, "c1", created_at=LATE)])

    outcome = view.apply(removed_at(1, 2, "c1", EARLY))

    assert outcome is Outcome.UNCHANGED
    assert "c1" in view.containers


def test_add_of_older_instance_does_not_replace_newer():
    view = fold([added(1, 1, "c1", created_at=LATE, ip="10.100.1.20")])

    outcome = view.apply(added(1, 2, "c1", created_at=EARLY, ip="10.100.1.10"))

    assert outcome is Outcome.UNCHANGED
    assert view.containers["c1"].ip == "10.100.1.20"


def test_removed_instance_leaves_tombstone():
    view = fold([added(1, 1, "c1", created_at=EARLY), removed_at(1, 2, "c1", MIDDAY)])

    assert view.tombstone(1, "c1") == Tombstone("c1", 1, 2, EARLY, MIDDAY)
    assert view.tombstone_count() == 1


def test_tombstone_stops_late_add_of_removed_instance():
    view = fold([added(1, 1, "c1", created_at=EARLY), removed_at(1, 2, "c1", MIDDAY)])

    outcome = view.apply(added(1, 3, "c1", created_at=EARLY))

    assert outcome is Outcome.UNCHANGED
    assert view.containers == {}


def test_new_instance_after_tombstone_is_added():
    view = fold([added(1, 1, "c1", created_at=EARLY), removed_at(1, 2, "c1", MIDDAY)])

    outcome = view.apply(added(1, 3, "c1", created_at=LATE))

    assert outcome is Outcome.ADDED
    assert view.containers["c1"].created_at == LATE
    assert view.tombstone(1, "c1") is None


def test_prune_drops_old_tombstones_only():
    view = fold([
        added(1, 1, "a", created_at=EARLY), added(1, 2, "b", created_at=EARLY),
        removed_at(1, 3, "a", MIDDAY), removed_at(1, 4, "b", EVENING),
    ])

    dropped = view.prune_tombstones("2026-12-04T15:00:00.000Z")

    assert dropped == 1
    assert view.tombstone(1, "a") is None
    assert view.tombstone(1, "b") is not None


def test_removal_before_cutoff_leaves_no_tombstone():
    # So pruning before or after folding an old removal gives the same view.
    view = fold([added(1, 1, "a", created_at=EARLY)])
    view.prune_tombstones("2026-12-04T15:00:00.000Z")

    view.apply(removed_at(1, 2, "a", MIDDAY))

    assert view.tombstone(1, "a") is None
    assert view.containers == {}


def test_cutoff_never_moves_back():
    view = View()
    view.prune_tombstones(EVENING)

    assert view.prune_tombstones(MIDDAY) == 0
    assert view.tombstone_cutoff == EVENING


def test_times_in_other_iso_forms_compare_by_instant():
    view = fold([added(1, 1, "c1", created_at="2026-12-04T11:00:00+01:00")])

    outcome = view.apply(removed_at(1, 2, "c1", "2026-12-04T10:30:00.000Z"))

    assert outcome is Outcome.REMOVED


# Lookups


def test_lookup_by_address():
    view = fold([added(1, 1, "c1", ip="10.100.1.10"), added(2, 1, "c2", ip="10.100.2.10")])

    assert [container.id for container in view.at_address("10.100.2.10")] == ["c2"]
    assert view.at_address("10.100.9.9") == []


def test_lookup_by_id():
    view = fold([added(1, 1, "c1")])

    assert view.container("c1").origin == 1
    assert view.container("c9") is None


def test_lookup_by_name_ignores_case():
    view = fold([added(1, 1, "c1", hostname="Web")])

    assert [container.id for container in view.named("WEB")] == ["c1"]


def test_indexes_follow_replace_and_remove():
    view = fold([added(1, 1, "c1", hostname="web", ip="10.100.1.10")])

    view.apply(added(1, 2, "c1", hostname="api", ip="10.100.1.11"))
    assert view.named("web") == []
    assert view.at_address("10.100.1.10") == []
    assert [container.seq for container in view.named("api")] == [2]

    view.apply(removed(1, 3, "c1"))
    assert view.named("api") == []
    assert view.at_address("10.100.1.11") == []


def test_id_announced_by_two_origins_answers_with_newest():
    view = fold([added(1, 1, "same", created_at=EARLY), added(2, 1, "same", created_at=LATE)])

    assert view.container("same").origin == 2
    view.apply(removed(2, 2, "same"))
    assert view.container("same").origin == 1
    view.apply(removed(1, 2, "same"))
    assert view.container("same") is None


def test_origin_containers_lists_one_origin():
    view = fold([added(1, 1, "a"), added(2, 1, "b"), added(1, 2, "c")])

    assert sorted(container.id for container in view.origin_containers(1)) == ["a", "c"]
    assert view.origin_containers(7) == []


# State for snapshots


def test_state_round_trip_is_equal():
    view = fold([added(1, 1, "a"), added(2, 1, "b", hostname="db"), removed(1, 2, "a"), added(2, 2, "c")])

    rebuilt = View.from_state(view.export_state(), view.vector)

    assert rebuilt.export_state() == view.export_state()
    assert rebuilt.containers == view.containers
    assert rebuilt.named("db") == view.named("db")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"containers": "x"}, "'containers' must be a list"),
        ({"containers": [{"id": "a"}]}, r"container 0 must be an array of 10 fields \(id, ip, hostname, ports, host_id.*aliases\)"),
        ({"containers": [["a", "10.100.1.10", "web", [80], 1, "t", "eth0", 1, 1, ["Api"]]]}, "field 'aliases' must list distinct lower-case names"),
        ({"containers": [["a", "10.100.1.10", "web", [80], 1, "t", "eth0", 1, 1, ["web"]]]}, "other than the hostname"),
        ({"containers": [["a", "10.100.1.10", "web", [80], 1, "t", "eth0", 1, 1, ["api", "api"]]]}, "must list distinct"),
        ({"containers": [["a", "10.100.1.10", "web", [80], 1, "t", "eth0", 1, 1, [7]]]}, "field 'aliases' must list"),
        ({"containers": [["a", 10, "web", [80], 1, "t", "eth0", 1, 1]]}, "container 0 field 'ip' must be a str, got 10"),
        ({"containers": [["a", "10.100.1.10", "web", [0], 1, "t", "eth0", 1, 1]]}, "field 'ports' must list ports 1-65535"),
        ({"tombstones": [["a", 0, 1, "t", "t"]]}, "tombstone 0 has origin 0 and seq 1"),
        ({"tombstoneCutoff": "noon"}, "tombstoneCutoff 'noon' must be empty or a time"),
    ],
)
def test_invalid_state_names_the_entry(change, message):
    state = dict(fold([added(1, 1, "a")]).export_state(), **change)

    with pytest.raises(ViewStateError, match=message):
        View.from_state(state, {1: 1})


def test_state_round_trip_keeps_aliases():
    view = fold([added(1, 1, "a", aliases=["api"]), added(2, 1, "b", hostname="db", aliases=["cache", "api"])])

    state = view.export_state()
    rebuilt = View.from_state(state, view.vector)

    assert state["containers"][0][9] == ["api"]
    assert rebuilt.containers == view.containers
    assert rebuilt.named("api") == view.named("api")
    assert rebuilt.origins_without_aliases == set()


def test_state_without_aliases_field_loads_with_none():
    # Snapshots written before the view kept aliases have 9 fields per container.
    view = fold([added(1, 1, "a", aliases=["api"]), added(2, 1, "b", hostname="db")])
    state = view.export_state()
    state["containers"] = [entry[:9] if entry[7] == 1 else entry for entry in state["containers"]]

    rebuilt = View.from_state(state, view.vector)

    assert rebuilt.containers["a"].aliases == ()
    assert rebuilt.named("api") == []
    assert rebuilt.origins_without_aliases == {1}
    assert rebuilt.export_state()["containers"][0] == [*state["containers"][0], []]


def test_state_beyond_vector_is_rejected():
    view = fold([added(1, 1, "a"), added(1, 2, "b")])

    with pytest.raises(ViewStateError, match="beyond the vector's seq 1 for origin 1"):
        View.from_state(view.export_state(), {1: 1})


# Properties of the fold


@st.composite
def origin_histories(draw):
    """Draw per-origin event lists in seq order.

    Ids are mostly the origin's own; some are shared by every origin, to
    check that one origin's events never change what another one added. A
    re-add of an id is a new instance unless it is older than the current one.
    """
    histories = {}
    for origin in range(1, draw(st.integers(min_value=1, max_value=3)) + 1):
        operations = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["add", "add", "remove", "remove-instance"]),
                    st.sampled_from(["own", "own", "shared", "other"]),
                    st.integers(min_value=0, max_value=3),
                    st.sampled_from(["web", "db", "Web"]),
                    st.sampled_from([EARLY, LATE, EVENING]),
                    st.sampled_from([EARLY, MIDDAY, EVENING]),
                    st.sampled_from([[], [], ["db"], ["web", "api"], ["Api", "db"]]),
                ),
                max_size=14,
            )
        )
        events = []
        for seq, (kind, owner, number, hostname, created_at, ts, aliases) in enumerate(operations, start=1):
            container_id = {"own": f"{origin}-{number}", "shared": f"shared-{number}", "other": f"{origin % 3 + 1}-{number}"}[owner]
            if kind == "add":
                events.append(added(origin, seq, container_id, hostname=hostname, created_at=created_at, aliases=aliases))
            elif kind == "remove":
                events.append(removed_at(origin, seq, container_id, ts))
            else:
                events.append(removed_at(origin, seq, container_id, ts, createdAt=created_at))
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
    """Everything a view holds, indexes included, in comparable form."""
    names = {name for container in view.containers.values() for name in container.names}
    return (
        view.export_state(),
        dict(view.vector),
        dict(view.containers),
        {name: view.named(name) for name in sorted(names | {"web", "db", "api"})},
        view.conflicts(),
    )


def brute_force_named(view: View, name: str) -> list[Container]:
    everyone = [container for origin in view.vector for container in view.origin_containers(origin)]
    by_hostname = [container for container in everyone if container.hostname == name]
    by_alias = [container for container in everyone if name in container.aliases]
    newest_first = lambda c: (c.created_at, c.origin, c.id)  # noqa: E731
    return sorted(by_hostname, key=newest_first, reverse=True) + sorted(by_alias, key=newest_first, reverse=True)


@given(data=interleaved_events(), split=st.integers(min_value=0))
def test_split_fold_equals_one_pass(data, split):
    _, events = data
    split %= len(events) + 1

    view = View()
    view.apply_all(events[:split])
    view.apply_all(events[split:])

    assert state(view) == state(fold(events))


@given(data=interleaved_events(), split=st.integers(min_value=0))
def test_snapshot_plus_later_events_equals_full_fold(data, split):
    _, events = data
    split %= len(events) + 1
    before = fold(events[:split])

    restored = View.from_state(before.export_state(), before.vector)
    restored.apply_all(events[split:])

    assert state(restored) == state(fold(events))


@given(data=interleaved_events(), st_data=st.data())
def test_redelivered_events_change_nothing(data, st_data):
    # A follower that reconnects, or an outbox drained after a direct
    # delivery, may hand over again any event already applied, in any order.
    _, events = data
    view = fold(events)
    expected = state(view)

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


@given(data=interleaved_events())
def test_bulk_fold_equals_event_fold(data):
    _, events = data
    view = View()

    with view.deferred_indexes():
        view.fold_batches([[event.as_dict() for event in events]])

    assert state(view) == state(fold(events))


@given(data=interleaved_events(), cutoff=st.sampled_from(["", EARLY, MIDDAY, "2026-12-04T13:00:00+01:00"]))
def test_indexed_bulk_fold_equals_event_fold(data, cutoff):
    # Indexes kept per event, and removals before a tombstone cutoff
    # (canonical or another ISO form) leaving no tombstone.
    _, events = data
    bulk, expected = View(), View()
    if cutoff:
        bulk.prune_tombstones(cutoff)
        expected.prune_tombstones(cutoff)

    bulk.fold_batches([[event.as_dict() for event in events]])
    expected.apply_all(events)

    assert state(bulk) == state(expected)
    assert bulk.tombstone_count() == expected.tombstone_count()


@given(data=interleaved_events())
def test_name_index_matches_a_scan(data):
    _, events = data
    view = fold(events)

    for name in ("web", "db", "api"):
        assert view.named(name) == brute_force_named(view, name)
    expected_conflicts = {name for name in ("web", "db", "api") if len(brute_force_named(view, name)) > 1}
    assert set(view.conflicts()) == expected_conflicts
    for container in view.containers.values():
        assert container in view.at_address(container.ip)
