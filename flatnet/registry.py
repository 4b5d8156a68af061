"""The registry view: a pure fold of events into the containers of the fleet.

``View.apply`` does no I/O and reads no clock, so replay can rebuild any past
view from the log alone. Liveness (which origins are silent past the TTL) is
kept apart in :class:`Liveness`, with the time passed in by the caller.

The view keeps each origin's containers apart and a removal only touches the
origin that wrote it, so the view depends only on each origin's own events in
their own order, never on how the origins' streams interleave. On top of that
it keeps indexes by id, name and address for O(1) lookups. A container's
names are its hostname and its aliases (podman's ``--network-alias``).

Incarnations: podman keeps a container's id across a stop and start, so one
id can name several instances over time, distinguished by ``createdAt``. An
event about an older instance never undoes a newer one. An add older than the
current instance is ignored. So is a removal that names another instance
(``createdAt`` in its data), and one that names none but happened before the
current instance was created. A removed instance leaves a tombstone so that a
late add of it (from a replayed outbox or a peer's late snapshot) cannot bring
it back. Tombstones are dropped by :meth:`View.prune_tombstones` once older
than the tombstone retention.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from flatnet.events.record import CONTAINER_ADDED, CONTAINER_REMOVED, Event


class Container(NamedTuple):
    """One container in the view.

    A NamedTuple rather than a dataclass: the fold builds one per add, and a
    tuple is the cheapest immutable object to build.
    """

    id: str
    ip: str
    hostname: str
    ports: tuple[int, ...]
    host_id: int
    created_at: str
    ifname: str
    origin: int
    seq: int
    # Lower-cased, without duplicates and without the hostname, in the event's order.
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The hostname, then the aliases: every name the view finds this container by."""
        return (self.hostname, *self.aliases)


class Tombstone(NamedTuple):
    """A removed instance: which one, by which event, and when (the event's ts)."""

    id: str
    origin: int
    seq: int
    created_at: str
    removed_at: str


class Outcome(enum.Enum):
    """The effect of applying one event on the view."""

    ADDED = "added"
    REPLACED = "replaced"
    REMOVED = "removed"
    UNCHANGED = "unchanged"


class ViewStateError(ValueError):
    """A view state (from a snapshot) that does not describe a valid view; the message names the entry."""


# The form every writer of flatnet uses: 2026-12-04T10:00:00.123Z. Two
# strings of this form compare like the instants they name.
_CANONICAL_TIME_LENGTH = 24


def canonical_time(text: str) -> str | None:
    """Return ``text`` as a UTC time in the canonical form, or None if it is not an ISO 8601 time."""
    if len(text) == _CANONICAL_TIME_LENGTH and text[-1] == "Z" and text[10] == "T" and text[19] == ".":
        return text
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_time(seconds: float) -> str:
    """Format a POSIX time in the canonical form."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _is_before(earlier: str, later: str) -> bool:
    """Tell whether time ``earlier`` is strictly before ``later``; False when either is unreadable."""
    if len(earlier) == len(later) == _CANONICAL_TIME_LENGTH and earlier[-1] == later[-1] == "Z":
        return earlier < later
    first, second = canonical_time(earlier), canonical_time(later)
    return first is not None and second is not None and first < second


class View:
    """Containers of every origin, their indexes, tombstones and the version vector."""

    def __init__(self) -> None:
        self.vector: dict[int, int] = {}
        # Tombstones removed before this time were pruned, and removals older
        # than it leave none: both paths to a state give the same state.
        self.tombstone_cutoff = ""
        self._origins: dict[int, dict[str, Container]] = {}
        self._tombstones: dict[int, dict[str, Tombstone]] = {}
        # By id, the container returned for it: there is one holder
        # unless two origins announce one id, and then the newest wins.
        self.containers: dict[str, Container] = {}
        self._shared_ids: set[str] = set()
        self._by_name: dict[str, list[Container]] = {}
        self._by_ip: dict[str, list[Container]] = {}
        self._shared_names: set[str] = set()
        # False inside deferred_indexes, which builds them once at the end.
        self._indexing = True
        # Origins whose containers came from a snapshot written before the
        # view kept aliases: those containers have none (see from_state).
        self.origins_without_aliases: set[int] = set()

    # Folding

    def apply(self, event: Event) -> Outcome:
        """Fold ``event`` into the view; an event already applied changes nothing."""
        if event.seq <= self.vector.get(event.origin, 0):
            return Outcome.UNCHANGED
        # The vector moves only after the change succeeded, so an event that
        # raises leaves the view exactly as it was.
        if event.type == CONTAINER_ADDED:
            outcome = self._add(event.origin, event.seq, event.ts, event.data)
        elif event.type == CONTAINER_REMOVED:
            outcome = self._remove(event.origin, event.seq, event.ts, event.data)
        else:
            raise ValueError(f"view cannot apply event type {event.type!r}")
        self.vector[event.origin] = event.seq
        return outcome

    def apply_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.apply(event)

    def fold_batches(self, batches: Iterable[list[dict[str, Any]]]) -> int:
        """Fold records of the log in bulk, as the log's ``read_batches`` yields them; return how many.

        The same rules as :meth:`apply`, on the records' fields instead of
        Events. Inside :meth:`deferred_indexes`, the indexes are built once at
        the end instead of per event.
        """
        # The rules of _add and _remove are written out in one loop, because this
        # runs once per record at start-up. The calls cost about a fifth of the
        # fold (1.44 against 1.18 CPU us per record with 2 aliases, measured on
        # bench/log.py's log). Canonical times compare as strings here, and any
        # other form goes through _is_before.
        vector = self.vector
        containers_by_origin = self._origins
        tombstones_by_origin = self._tombstones
        cutoff = self.tombstone_cutoff
        cutoff_is_canonical = len(cutoff) == _CANONICAL_TIME_LENGTH and cutoff[-1] == "Z"
        indexing = self._indexing
        make = tuple.__new__
        count = 0
        for batch in batches:
            for fields in batch:
                origin = fields["origin"]
                seq = fields["seq"]
                if seq <= vector.get(origin, 0):
                    continue
                event_type = fields["type"]
                if event_type == CONTAINER_ADDED:
                    ts = fields["ts"]
                    data = fields["data"]
                    container_id = data["id"]
                    created_at = data.get("createdAt") or ts
                    held = containers_by_origin.get(origin)
                    current = held.get(container_id) if held is not None else None
                    if current is not None:
                        held_since = current.created_at
                        if (
                            created_at < held_since
                            if len(created_at) == len(held_since) == _CANONICAL_TIME_LENGTH and created_at[-1] == held_since[-1] == "Z"
                            else _is_before(created_at, held_since)
                        ):
                            vector[origin] = seq
                            count += 1
                            continue
                    ports = data.get("ports")
                    hostname = data["hostname"].lower()
                    aliases = data.get("aliases")
                    container = make(Container, (
                        container_id,
                        data["ip"],
                        hostname,
                        tuple(ports) if ports else (),
                        data["hostId"],
                        created_at,
                        data.get("ifname") or "eth0",
                        origin,
                        seq,
                        _normal_aliases(aliases, hostname) if aliases else (),
                    ))
                    tombstones = tombstones_by_origin.get(origin)
                    if tombstones is not None:
                        tombstone = tombstones.get(container_id)
                        if tombstone is not None:
                            if not _is_before(tombstone.created_at, created_at):
                                # The instance this tombstone removed, or an older one, coming back late.
                                vector[origin] = seq
                                count += 1
                                continue
                            del tombstones[container_id]
                    if held is None:
                        held = containers_by_origin[origin] = {}
                    if current is not None:
                        del held[container_id]
                        if indexing:
                            self._unindex(current)
                    held[container_id] = container
                    if indexing:
                        self._index(container)
                elif event_type == CONTAINER_REMOVED:
                    ts = fields["ts"]
                    data = fields["data"]
                    container_id = data["id"]
                    held = containers_by_origin.get(origin)
                    # Only the origin that added a container can remove it.
                    current = held.get(container_id) if held is not None else None
                    if current is not None:
                        instance = data.get("createdAt")
                        held_since = current.created_at
                        if instance is not None:
                            removes = instance == held_since
                        elif len(ts) == len(held_since) == _CANONICAL_TIME_LENGTH and ts[-1] == held_since[-1] == "Z":
                            removes = ts >= held_since
                        else:
                            removes = not _is_before(ts, held_since)
                        if removes:
                            del held[container_id]
                            if indexing:
                                self._unindex(current)
                            if not cutoff or not (
                                ts < cutoff
                                if cutoff_is_canonical and len(ts) == _CANONICAL_TIME_LENGTH and ts[-1] == "Z"
                                else _is_before(ts, cutoff)
                            ):
                                tombstones = tombstones_by_origin.get(origin)
                                if tombstones is None:
                                    tombstones = tombstones_by_origin[origin] = {}
                                tombstones[container_id] = make(Tombstone, (container_id, origin, seq, held_since, ts))
                else:
                    raise ValueError(f"view cannot apply event type {event_type!r}")
                vector[origin] = seq
                count += 1
        return count

    @contextlib.contextmanager
    def deferred_indexes(self) -> Iterator[None]:
        """Skip index upkeep for the body, and build the indexes once when it ends."""
        self._indexing = False
        try:
            yield
        finally:
            self._indexing = True
            self._rebuild_indexes()

    def _add(self, origin: int, seq: int, ts: str, data: dict[str, Any]) -> Outcome:
        container_id = data["id"]
        created_at = data.get("createdAt") or ts
        held = self._origins.get(origin)
        current = held.get(container_id) if held is not None else None
        if current is not None and _is_before(created_at, current.created_at):
            return Outcome.UNCHANGED

        ports = data.get("ports")
        hostname = data["hostname"].lower()
        aliases = data.get("aliases")
        container = tuple.__new__(Container, (
            container_id,
            data["ip"],
            hostname,
            tuple(ports) if ports else (),
            data["hostId"],
            created_at,
            data.get("ifname") or "eth0",
            origin,
            seq,
            _normal_aliases(aliases, hostname) if aliases else (),
        ))
        tombstones = self._tombstones.get(origin)
        tombstone = tombstones.get(container_id) if tombstones is not None else None
        if tombstone is not None:
            if not _is_before(tombstone.created_at, created_at):
                # The instance this tombstone removed, or an older one, coming back late.
                return Outcome.UNCHANGED
            del tombstones[container_id]

        if held is None:
            held = self._origins[origin] = {}
        if current is None:
            held[container_id] = container
            if self._indexing:
                self._index(container)
            return Outcome.ADDED
        del held[container_id]
        if self._indexing:
            self._unindex(current)
        held[container_id] = container
        if self._indexing:
            self._index(container)
        return Outcome.REPLACED

    def _remove(self, origin: int, seq: int, ts: str, data: dict[str, Any]) -> Outcome:
        container_id = data["id"]
        held = self._origins.get(origin)
        # Only the origin that added a container can remove it.
        current = held.get(container_id) if held is not None else None
        if current is None:
            return Outcome.UNCHANGED
        instance = data.get("createdAt")
        if instance is not None:
            if instance != current.created_at:
                return Outcome.UNCHANGED
        elif _is_before(ts, current.created_at):
            return Outcome.UNCHANGED

        del held[container_id]
        if self._indexing:
            self._unindex(current)
        if not (self.tombstone_cutoff and _is_before(ts, self.tombstone_cutoff)):
            tombstones = self._tombstones.get(origin)
            if tombstones is None:
                tombstones = self._tombstones[origin] = {}
            tombstones[container_id] = tuple.__new__(Tombstone, (container_id, origin, seq, current.created_at, ts))
        return Outcome.REMOVED

    # Indexes

    def _rebuild_indexes(self) -> None:
        self.containers = {}
        self._shared_ids = set()
        self._by_name = {}
        self._by_ip = {}
        self._shared_names = set()
        for origin in sorted(self._origins):
            for container in self._origins[origin].values():
                self._index(container)

    def _index(self, container: Container) -> None:
        holder = self.containers.get(container.id)
        if holder is None:
            self.containers[container.id] = container
        else:
            if holder.origin != container.origin:
                self._shared_ids.add(container.id)
            if holder.origin == container.origin or _ranks_above(container, holder):
                self.containers[container.id] = container

        by_name = self._by_name
        named = by_name.get(container.hostname)
        if named is None:
            by_name[container.hostname] = [container]
        else:
            named.append(container)
            self._shared_names.add(container.hostname)
        for alias in container.aliases:
            named = by_name.get(alias)
            if named is None:
                by_name[alias] = [container]
            else:
                named.append(container)
                self._shared_names.add(alias)
        at_ip = self._by_ip.get(container.ip)
        if at_ip is None:
            self._by_ip[container.ip] = [container]
        else:
            at_ip.append(container)

    def _unindex(self, container: Container) -> None:
        if container.id in self._shared_ids:
            holders = [held[container.id] for held in self._origins.values() if container.id in held]
            if holders:
                self.containers[container.id] = max(holders, key=_rank)
            else:
                del self.containers[container.id]
            if len(holders) < 2:
                self._shared_ids.discard(container.id)
        else:
            del self.containers[container.id]

        for name in container.names:
            named = self._by_name[name]
            named.remove(container)
            if not named:
                del self._by_name[name]
            if len(named) < 2:
                self._shared_names.discard(name)
        at_ip = self._by_ip[container.ip]
        at_ip.remove(container)
        if not at_ip:
            del self._by_ip[container.ip]

    # Lookups

    def container(self, container_id: str) -> Container | None:
        return self.containers.get(container_id)

    def named(self, name: str, *, expired_origins: frozenset[int] = frozenset()) -> list[Container]:
        """Live containers called ``name`` (as hostname or alias), the one that wins first.

        A container whose hostname is ``name`` wins over one that has it as an
        alias. Among holders of the same kind, the most recently created wins,
        and origin and id break ties, so every gateway and replay pick the same
        one. Names are stored lower-cased; the caller strips a port, a trailing
        dot and the domain suffix from a Host first.
        """
        name = name.lower()
        holders = self._by_name.get(name)
        if not holders:
            return []
        matches = [container for container in holders if container.origin not in expired_origins]
        if len(matches) > 1:
            matches.sort(key=lambda container: (container.hostname == name, container.created_at, container.origin, container.id), reverse=True)
        return matches

    def at_address(self, ip: str, *, expired_origins: frozenset[int] = frozenset()) -> list[Container]:
        """Live containers holding address ``ip``, ranked like :meth:`named`."""
        holders = self._by_ip.get(ip)
        if not holders:
            return []
        matches = [container for container in holders if container.origin not in expired_origins]
        if len(matches) > 1:
            matches.sort(key=_rank, reverse=True)
        return matches

    def conflicts(self, *, expired_origins: frozenset[int] = frozenset()) -> dict[str, list[Container]]:
        """Names held by more than one live container, each with its winner first."""
        conflicts = {}
        for name in sorted(self._shared_names):
            holders = self.named(name, expired_origins=expired_origins)
            if len(holders) > 1:
                conflicts[name] = holders
        return conflicts

    def drop_origin(self, origin: int) -> int:
        """Forget every container, tombstone and seq of ``origin``; return how many containers went.

        For an origin whose gateway started a new log: its old seqs mean nothing any more.
        """
        held = self._origins.pop(origin, {})
        if self._indexing:
            for container in held.values():
                self._unindex(container)
        self._tombstones.pop(origin, None)
        self.vector.pop(origin, None)
        return len(held)

    def origin_state(self, origin: int) -> dict[str, Any]:
        """Export ``origin``'s live containers as :meth:`export_state` does, for a peer to adopt.

        Tombstones stay out: each gateway prunes its own on its own schedule,
        so they would make equal views look different.
        """
        held = self._origins.get(origin, {})
        containers = [state_entry(container) for _, container in sorted(held.items())]
        return {"containers": containers, "tombstones": [], "tombstoneCutoff": ""}

    def replace_origin(self, origin: int, state: Any, head: int) -> int:
        """Replace ``origin``'s part of the view with ``state`` at seq ``head`` and return how many containers it now has.

        Raises ViewStateError, changing nothing, when ``state`` is invalid or contains another origin's containers.
        """
        incoming = View.from_state(state, {origin: head})
        strangers = sorted(other for other in incoming._origins if other != origin)
        if strangers:
            raise ViewStateError(f"a snapshot of origin {origin} contains containers of origins {strangers}")
        self.drop_origin(origin)
        held = incoming._origins.get(origin, {})
        self._origins[origin] = dict(held)
        if self._indexing:
            for container in held.values():
                self._index(container)
        self.vector[origin] = head
        return len(held)

    def origin_containers(self, origin: int) -> list[Container]:
        """Return the live containers ``origin`` added, in no particular order."""
        return list(self._origins.get(origin, {}).values())

    def tombstone(self, origin: int, container_id: str) -> Tombstone | None:
        return self._tombstones.get(origin, {}).get(container_id)

    def tombstone_count(self) -> int:
        return sum(len(tombstones) for tombstones in self._tombstones.values())

    # Tombstones

    def prune_tombstones(self, cutoff: str) -> int:
        """Drop tombstones of removals before ``cutoff`` (a canonical time); return how many.

        The cutoff only moves forward, and later removals before it leave no
        tombstone, so pruning early or late gives the same view.
        """
        if self.tombstone_cutoff and not _is_before(self.tombstone_cutoff, cutoff):
            return 0
        self.tombstone_cutoff = cutoff
        dropped = 0
        for tombstones in self._tombstones.values():
            old = [key for key, tombstone in tombstones.items() if _is_before(tombstone.removed_at, cutoff)]
            for key in old:
                del tombstones[key]
            dropped += len(old)
        return dropped

    def give_origins(self, origins: Iterable[int]) -> dict[str, Any]:
        """Return the state of ``origins`` (containers, tombstones, seqs) for :meth:`take_origins` in another process."""
        origins = list(origins)
        return {
            "containers": {origin: self._origins[origin] for origin in origins if origin in self._origins},
            "tombstones": {origin: self._tombstones[origin] for origin in origins if origin in self._tombstones},
            "vector": {origin: self.vector[origin] for origin in origins if origin in self.vector},
        }

    def take_origins(self, state: dict[str, Any]) -> None:
        """Replace the state of the origins in ``state`` (from :meth:`give_origins`) and re-index."""
        for origin in state["vector"]:
            self._origins.pop(origin, None)
            self._tombstones.pop(origin, None)
        self._origins.update(state["containers"])
        self._tombstones.update(state["tombstones"])
        self.vector.update(state["vector"])
        if self._indexing:
            self._rebuild_indexes()

    # State, for snapshots

    def export_state(self) -> dict[str, Any]:
        """Export the view as plain JSON data in one canonical order, so equal views give equal bytes.

        ``containers`` contains one array per container, its fields in the order of
        :class:`Container` (``ports`` and ``aliases`` lists); ``tombstones`` one array per
        tombstone in the order of :class:`Tombstone`. Arrays rather than objects
        keep a snapshot of 60,000 containers small and quick to load.
        """
        containers = [
            state_entry(container)
            for origin in sorted(self._origins)
            for _, container in sorted(self._origins[origin].items())
        ]
        tombstones = [
            list(tombstone)
            for origin in sorted(self._tombstones)
            for _, tombstone in sorted(self._tombstones[origin].items())
        ]
        return {"containers": containers, "tombstones": tombstones, "tombstoneCutoff": self.tombstone_cutoff}

    @classmethod
    def from_state(cls, state: Any, vector: dict[int, int]) -> "View":
        """Rebuild a view from :meth:`export_state` data, validating every entry.

        An entry of 9 fields, written before the view kept aliases, loads with
        no aliases, and its origin is listed in ``origins_without_aliases``.
        """
        if not isinstance(state, dict):
            raise ViewStateError(f"view state is a JSON {type(state).__name__}, expected an object")
        view = cls()
        view.vector = dict(vector)
        cutoff = state.get("tombstoneCutoff", "")
        if not isinstance(cutoff, str) or (cutoff and canonical_time(cutoff) != cutoff):
            raise ViewStateError(f"view state tombstoneCutoff {cutoff!r} must be empty or a time like 2026-12-04T10:00:00.000Z")
        view.tombstone_cutoff = cutoff

        entries = state.get("containers")
        if not isinstance(entries, list):
            raise ViewStateError(f"view state 'containers' must be a list, got {type(entries).__name__}")
        for index, entry in enumerate(entries):
            container = _container_from_state(index, entry)
            if container.seq > vector.get(container.origin, 0):
                raise ViewStateError(
                    f"container {index} ({container.id}) has seq {container.seq}, "
                    f"beyond the vector's seq {vector.get(container.origin, 0)} for origin {container.origin}"
                )
            if len(entry) == len(_LEGACY_CONTAINER_KINDS):
                view.origins_without_aliases.add(container.origin)
            held = view._origins.setdefault(container.origin, {})
            if container.id in held:
                raise ViewStateError(f"container {index} ({container.id}) of origin {container.origin} is listed twice")
            held[container.id] = container

        entries = state.get("tombstones")
        if not isinstance(entries, list):
            raise ViewStateError(f"view state 'tombstones' must be a list, got {type(entries).__name__}")
        for index, entry in enumerate(entries):
            tombstone = _tombstone_from_state(index, entry)
            view._tombstones.setdefault(tombstone.origin, {})[tombstone.id] = tombstone
        view._rebuild_indexes()
        return view


def _rank(container: Container) -> tuple[str, int, str]:
    return (container.created_at, container.origin, container.id)


def _ranks_above(container: Container, other: Container) -> bool:
    return _rank(container) > _rank(other)


def _normal_aliases(aliases: list[str], hostname: str) -> tuple[str, ...]:
    lowered = [alias.lower() for alias in aliases]
    if hostname not in lowered and len(set(lowered)) == len(lowered):
        return tuple(lowered)
    # An alias equal to the hostname (the container's name, when the runtime
    # passes it as an alias) or a repeated one takes this way.
    unique = dict.fromkeys(lowered)
    unique.pop(hostname, None)
    return tuple(unique)


def state_entry(container: Container) -> list[Any]:
    """Return ``container`` as one array of :meth:`View.export_state`'s ``containers``."""
    return [*container[:3], list(container.ports), *container[4:9], list(container.aliases)]


_CONTAINER_KINDS = (str, str, str, list, int, str, str, int, int, list)
# The entries of snapshots written before the view kept aliases.
_LEGACY_CONTAINER_KINDS = _CONTAINER_KINDS[:9]
_TOMBSTONE_KINDS = (str, int, int, str, str)


def _check_entry(kind: str, index: int, entry: Any, fields: tuple[str, ...], kinds: tuple[type, ...]) -> None:
    # Comparing the tuple of types checks every field in one C-level step.
    if type(entry) is not list or tuple(map(type, entry)) != kinds:
        if not isinstance(entry, list) or len(entry) != len(kinds):
            raise ViewStateError(f"{kind} {index} must be an array of {len(kinds)} fields ({', '.join(fields)}), got {entry!r:.200}")
        for name, value, expected in zip(fields, entry, kinds):
            if not _is_of(value, expected):
                raise ViewStateError(f"{kind} {index} field {name!r} must be a {expected.__name__}, got {value!r:.100}")
    origin, seq = entry[fields.index("origin")], entry[fields.index("seq")]
    if not 1 <= origin <= 254 or seq < 1:
        raise ViewStateError(f"{kind} {index} has origin {origin} and seq {seq}; expected origin 1-254 and seq >= 1")


def _is_of(value: Any, kind: type) -> bool:
    return type(value) is kind


def _container_from_state(index: int, entry: Any) -> Container:
    if type(entry) is list and len(entry) == len(_LEGACY_CONTAINER_KINDS):
        _check_entry("container", index, entry, Container._fields[:9], _LEGACY_CONTAINER_KINDS)
        aliases: tuple[str, ...] = ()
    else:
        _check_entry("container", index, entry, Container._fields, _CONTAINER_KINDS)
        aliases = tuple(entry[9])
        if not all(type(alias) is str and alias and alias == alias.lower() and alias != entry[2] for alias in aliases) or len(set(aliases)) != len(aliases):
            raise ViewStateError(
                f"container {index} field 'aliases' must list distinct lower-case names other than the hostname, got {entry[9]!r:.100}"
            )
    ports = entry[3]
    if not all(type(port) is int and 0 < port < 65536 for port in ports):
        raise ViewStateError(f"container {index} field 'ports' must list ports 1-65535, got {ports!r:.100}")
    return tuple.__new__(Container, (*entry[:3], tuple(ports), *entry[4:9], aliases))


def _tombstone_from_state(index: int, entry: Any) -> Tombstone:
    _check_entry("tombstone", index, entry, Tombstone._fields, _TOMBSTONE_KINDS)
    return tuple.__new__(Tombstone, entry)


class Liveness:
    """When each origin was last heard from, on the receiver's monotonic clock."""

    def __init__(self, own_origin: int, ttl: float):
        self.own_origin = own_origin
        self.ttl = ttl
        self.last_heard: dict[int, float] = {}

    def heard(self, origin: int, now: float) -> bool:
        """Record a frame from ``origin``; return True if it had expired before."""
        was_expired = self.is_expired(origin, now)
        self.last_heard[origin] = now
        return was_expired

    def remaining(self, origin: int, now: float) -> float:
        """Seconds until ``origin`` expires; the own origin always has the full TTL."""
        if origin == self.own_origin:
            return self.ttl
        last = self.last_heard.get(origin)
        if last is None:
            return 0.0
        return max(0.0, self.ttl - (now - last))

    def is_expired(self, origin: int, now: float) -> bool:
        return origin != self.own_origin and self.remaining(origin, now) <= 0

    def expired(self, origins: Iterable[int], now: float) -> frozenset[int]:
        return frozenset(origin for origin in origins if self.is_expired(origin, now))
