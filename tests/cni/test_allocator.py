import inspect
import ipaddress
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flatnet.cni.allocator import allocate
from flatnet.cni.config import load_netconf
from flatnet.cni.spec import ADDRESS_UNAVAILABLE, ADDRESSES_EXHAUSTED, CniError
from flatnet.cni.store import DirectoryStore, Reservation, ReservationStore


class MemoryStore:
    """A ReservationStore kept in a dict, for allocator tests without a disk."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.reservations: dict[IPv4Address, Reservation] = {}
        self.last: IPv4Address | None = None
        self.release_times: dict[IPv4Address, float] = {}
        self.now = now

    def reserved(self) -> dict[IPv4Address, Reservation]:
        return dict(self.reservations)

    def reserve(self, reservation: Reservation) -> bool:
        if reservation.address in self.reservations:
            return False
        self.reservations[reservation.address] = reservation
        return True

    def release(self, container_id: str, ifname: str) -> list[Reservation]:
        released = [
            reservation
            for reservation in self.reservations.values()
            if reservation.container_id == container_id and reservation.ifname == ifname
        ]
        for reservation in released:
            del self.reservations[reservation.address]
            self.release_times[reservation.address] = self.now
        return released

    def cursor(self) -> IPv4Address | None:
        return self.last

    def set_cursor(self, address: IPv4Address) -> None:
        self.last = address

    def released(self) -> dict[IPv4Address, float]:
        return dict(self.release_times)


class RacingStore(MemoryStore):
    """A store where another plugin process took ``taken_address`` after reserved() was read."""

    def __init__(self, taken_address: IPv4Address) -> None:
        super().__init__()
        self.taken_address = taken_address

    def reserve(self, reservation: Reservation) -> bool:
        if reservation.address == self.taken_address:
            return False
        return super().reserve(reservation)


def netconf(**overrides):
    raw = {"cniVersion": "1.0.0", "name": "flatnet", "hostId": 1}
    raw.update(overrides)
    return load_netconf(raw)


def address(host: int) -> IPv4Address:
    return IPv4Address(f"10.100.1.{host}")


# The fake is a real ReservationStore


def protocol_methods() -> list[str]:
    return [name for name, member in vars(ReservationStore).items() if inspect.isfunction(member) and not name.startswith("_")]


def signature(cls: type, name: str) -> inspect.Signature:
    # store.py postpones annotations, so compare them evaluated on both sides.
    return inspect.signature(getattr(cls, name), eval_str=True)


def test_fake_store_matches_protocol():
    assert protocol_methods() == ["reserved", "reserve", "release", "cursor", "set_cursor", "released"]
    for name in protocol_methods():
        assert signature(MemoryStore, name) == signature(ReservationStore, name)


def test_directory_store_matches_protocol():
    for name in protocol_methods():
        assert signature(DirectoryStore, name) == signature(ReservationStore, name)


# Contract: every store behaves the same


@pytest.fixture(params=["memory", "directory"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore()
        return
    with DirectoryStore(tmp_path) as directory_store:
        yield directory_store


def test_store_starts_empty(store):
    assert store.reserved() == {}


def test_store_lists_reservation(store):
    reservation = Reservation(address(10), "c1", "eth0")

    assert store.reserve(reservation) is True
    assert store.reserved() == {address(10): reservation}


def test_store_rejects_taken_address(store):
    first = Reservation(address(10), "c1", "eth0")
    store.reserve(first)

    assert store.reserve(Reservation(address(10), "c2", "eth0")) is False
    assert store.reserved() == {address(10): first}


def test_store_release_returns_released(store):
    store.reserve(Reservation(address(10), "c1", "eth0"))
    store.reserve(Reservation(address(11), "c2", "eth0"))

    released = store.release("c1", "eth0")

    assert released == [Reservation(address(10), "c1", "eth0")]
    assert list(store.reserved()) == [address(11)]


def test_store_release_matches_ifname(store):
    store.reserve(Reservation(address(10), "c1", "eth0"))
    store.reserve(Reservation(address(11), "c1", "eth1"))

    store.release("c1", "eth1")

    assert list(store.reserved()) == [address(10)]


def test_store_release_of_unknown_is_empty(store):
    store.reserve(Reservation(address(10), "c1", "eth0"))

    assert store.release("c9", "eth0") == []
    assert list(store.reserved()) == [address(10)]


def test_store_release_twice_is_empty(store):
    store.reserve(Reservation(address(10), "c1", "eth0"))
    store.release("c1", "eth0")

    assert store.release("c1", "eth0") == []


def test_store_released_address_can_be_reserved(store):
    store.reserve(Reservation(address(10), "c1", "eth0"))
    store.release("c1", "eth0")

    assert store.reserve(Reservation(address(10), "c2", "eth0")) is True


def test_allocation_works_on_every_store(store):
    conf = netconf()

    first = allocate(store, conf, "c1", "eth0")
    second = allocate(store, conf, "c2", "eth0")

    assert first.address == address(10)
    assert second.address == address(11)
    assert set(store.reserved()) == {address(10), address(11)}


# Allocation


def test_first_address_is_range_start():
    reservation = allocate(MemoryStore(), netconf(), "c1", "eth0")

    assert reservation == Reservation(address(10), "c1", "eth0")


def test_allocations_are_consecutive():
    store = MemoryStore()
    conf = netconf()

    addresses = [allocate(store, conf, f"c{number}", "eth0").address for number in range(3)]

    assert addresses == [address(10), address(11), address(12)]


def test_reserved_address_is_skipped():
    store = MemoryStore()
    store.reserve(Reservation(address(10), "other", "eth0"))

    assert allocate(store, netconf(), "c1", "eth0").address == address(11)


def test_gateway_inside_range_is_skipped():
    conf = netconf(gateway="10.100.1.10")

    assert allocate(MemoryStore(), conf, "c1", "eth0").address == address(11)


def test_address_taken_after_listing_is_skipped():
    store = RacingStore(taken_address=address(10))

    assert allocate(store, netconf(), "c1", "eth0").address == address(11)


def test_range_override_is_honoured():
    conf = netconf(rangeStart="10.100.1.200", rangeEnd="10.100.1.201")

    assert allocate(MemoryStore(), conf, "c1", "eth0").address == address(200)


def test_repeated_allocation_returns_same_address():
    store = MemoryStore()
    conf = netconf()
    first = allocate(store, conf, "c1", "eth0")

    again = allocate(store, conf, "c1", "eth0")

    assert again == first
    assert list(store.reserved()) == [address(10)]


def test_second_interface_gets_own_address():
    store = MemoryStore()
    conf = netconf()
    allocate(store, conf, "c1", "eth0")

    assert allocate(store, conf, "c1", "eth1").address == address(11)


def test_allocation_continues_after_cursor():
    store = MemoryStore()
    conf = netconf()
    allocate(store, conf, "c1", "eth0")
    allocate(store, conf, "c2", "eth0")
    store.release("c1", "eth0")

    assert allocate(store, conf, "c3", "eth0", now=store.now + 10_000).address == address(12)


def test_allocation_wraps_around_to_range_start():
    store = MemoryStore()
    conf = netconf(rangeStart="10.100.1.10", rangeEnd="10.100.1.12")
    store.set_cursor(address(12))

    assert allocate(store, conf, "c1", "eth0").address == address(10)


def test_cursor_outside_range_starts_at_range_start():
    store = MemoryStore()
    store.set_cursor(address(200))

    assert allocate(store, netconf(rangeEnd="10.100.1.20"), "c1", "eth0").address == address(10)


def test_recently_released_address_waits_while_others_are_free():
    store = MemoryStore()
    conf = netconf(rangeStart="10.100.1.10", rangeEnd="10.100.1.12", reuseDelay=300)
    allocate(store, conf, "c1", "eth0")
    store.release("c1", "eth0")
    store.set_cursor(address(12))

    reservation = allocate(store, conf, "c2", "eth0", now=store.now + 299)

    assert reservation.address == address(11)


def test_released_address_is_free_after_reuse_delay():
    store = MemoryStore()
    conf = netconf(rangeStart="10.100.1.10", rangeEnd="10.100.1.12", reuseDelay=300)
    allocate(store, conf, "c1", "eth0")
    store.release("c1", "eth0")
    store.set_cursor(address(12))

    reservation = allocate(store, conf, "c2", "eth0", now=store.now + 301)

    assert reservation.address == address(10)


def test_only_cooling_addresses_left_gives_oldest_release():
    store = MemoryStore()
    conf = netconf(rangeStart="10.100.1.10", rangeEnd="10.100.1.12", reuseDelay=300)
    for number in range(3):
        allocate(store, conf, f"c{number}", "eth0")
    store.release("c1", "eth0")
    store.now += 5
    store.release("c0", "eth0")

    reservation = allocate(store, conf, "c9", "eth0", now=store.now + 1)

    assert reservation.address == address(11)


def test_requested_address_ignores_reuse_delay():
    store = MemoryStore()
    conf = netconf(reuseDelay=300)
    allocate(store, conf, "c1", "eth0")
    store.release("c1", "eth0")

    reservation = allocate(store, conf, "c1", "eth0", requested=address(10), now=store.now + 1)

    assert reservation.address == address(10)


def test_allocation_moves_cursor_but_request_does_not():
    store = MemoryStore()
    conf = netconf()
    allocate(store, conf, "c1", "eth0")
    allocate(store, conf, "c2", "eth0", requested=address(50))

    assert store.cursor() == address(10)


def test_recorded_netns_is_kept():
    store = MemoryStore()

    reservation = allocate(store, netconf(), "c1", "eth0", netns="/run/netns/c1")

    assert store.reserved()[reservation.address].netns == "/run/netns/c1"


def test_exhausted_range_names_the_range():
    store = MemoryStore()
    conf = netconf(rangeStart="10.100.1.10", rangeEnd="10.100.1.11")
    allocate(store, conf, "c1", "eth0")
    allocate(store, conf, "c2", "eth0")

    with pytest.raises(CniError) as raised:
        allocate(store, conf, "c3", "eth0")

    assert raised.value.code == ADDRESSES_EXHAUSTED
    assert "10.100.1.10-10.100.1.11" in raised.value.msg
    assert "10.100.1.0/24" in raised.value.msg
    assert len(store.reserved()) == 2


# Requested addresses (CNI_ARGS IP=)


def test_requested_free_address_is_reserved():
    store = MemoryStore()

    reservation = allocate(store, netconf(), "c1", "eth0", requested=address(50))

    assert reservation.address == address(50)
    assert list(store.reserved()) == [address(50)]


def test_requested_held_address_names_holder():
    store = MemoryStore()
    conf = netconf()
    allocate(store, conf, "holder", "eth0", requested=address(50))

    with pytest.raises(CniError) as raised:
        allocate(store, conf, "c2", "eth0", requested=address(50))

    assert raised.value.code == ADDRESS_UNAVAILABLE
    assert "10.100.1.50" in raised.value.msg
    assert "holder" in raised.value.msg


def test_requested_address_taken_after_listing_is_unavailable():
    with pytest.raises(CniError) as raised:
        allocate(RacingStore(taken_address=address(50)), netconf(), "c1", "eth0", requested=address(50))

    assert raised.value.code == ADDRESS_UNAVAILABLE


def test_requested_gateway_is_unavailable():
    with pytest.raises(CniError) as raised:
        allocate(MemoryStore(), netconf(), "c1", "eth0", requested=address(1))

    assert raised.value.code == ADDRESS_UNAVAILABLE
    assert "gateway" in raised.value.msg


@pytest.mark.parametrize("requested", ["10.100.1.0", "10.100.1.255", "10.100.2.10", "192.0.2.10", "10.100.1.5"])
def test_requested_address_outside_hosts_is_unavailable(requested):
    store = MemoryStore()

    with pytest.raises(CniError) as raised:
        allocate(store, netconf(), "c1", "eth0", requested=IPv4Address(requested))

    assert raised.value.code == ADDRESS_UNAVAILABLE
    assert requested in raised.value.msg
    assert store.reserved() == {}


def test_requested_address_below_range_names_range():
    with pytest.raises(CniError) as raised:
        allocate(MemoryStore(), netconf(), "c1", "eth0", requested=address(5))

    assert "10.100.1.10-10.100.1.254" in raised.value.msg


def test_requested_address_other_than_held_is_unavailable():
    store = MemoryStore()
    conf = netconf()
    allocate(store, conf, "c1", "eth0")

    with pytest.raises(CniError) as raised:
        allocate(store, conf, "c1", "eth0", requested=address(50))

    assert raised.value.code == ADDRESS_UNAVAILABLE
    assert "10.100.1.10" in raised.value.msg
    assert "10.100.1.50" in raised.value.msg


def test_requested_address_already_held_is_returned():
    store = MemoryStore()
    conf = netconf()
    first = allocate(store, conf, "c1", "eth0", requested=address(50))

    assert allocate(store, conf, "c1", "eth0", requested=address(50)) == first


# Property: no address is ever handed out twice


operations = st.lists(
    st.tuples(st.sampled_from(["allocate", "release"]), st.integers(min_value=0, max_value=12)),
    max_size=60,
)


@given(steps=operations)
def test_live_containers_never_share_an_address(steps):
    conf = netconf(rangeStart="10.100.1.10", rangeEnd="10.100.1.19", gateway="10.100.1.15")
    store = MemoryStore()
    holders: dict[str, IPv4Address] = {}

    for action, number in steps:
        container_id = f"c{number}"
        if action == "release":
            store.release(container_id, "eth0")
            holders.pop(container_id, None)
            continue
        try:
            reservation = allocate(store, conf, container_id, "eth0")
        except CniError as error:
            assert error.code == ADDRESSES_EXHAUSTED
            assert len(holders) == 9
            continue
        if container_id in holders:
            assert reservation.address == holders[container_id]
        holders[container_id] = reservation.address

        assert len(set(holders.values())) == len(holders)
        assert reservation.address != conf.gateway
        assert conf.range_start <= reservation.address <= conf.range_end
        assert reservation.address in ipaddress.IPv4Network("10.100.1.0/24")
