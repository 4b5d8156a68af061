import json
import multiprocessing
import stat
import threading
import time
from collections import Counter
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from flatnet.cni.allocator import allocate
from flatnet.cni.config import load_netconf
from flatnet.cni.store import DirectoryStore, Reservation

WORKERS = 8
ALLOCATIONS_PER_WORKER = 25
# Generous, so a slow CI machine passes but a deadlock still fails the test.
WORKER_TIMEOUT_SECONDS = 120


def netconf(data_dir: Path):
    return load_netconf({"cniVersion": "1.0.0", "name": "flatnet", "hostId": 1, "dataDir": str(data_dir)})


def test_use_without_lock_names_directory(tmp_path):
    store = DirectoryStore(tmp_path)

    with pytest.raises(RuntimeError) as raised:
        store.reserved()

    assert str(tmp_path / "ipam") in str(raised.value)


def test_reserve_without_lock_is_rejected(tmp_path):
    store = DirectoryStore(tmp_path)

    with pytest.raises(RuntimeError):
        store.reserve(Reservation(IPv4Address("10.100.1.10"), "c1", "eth0"))

    assert not (tmp_path / "ipam" / "10.100.1.10").exists()


def test_reservation_file_names_owner(tmp_path):
    with DirectoryStore(tmp_path) as store:
        store.reserve(Reservation(IPv4Address("10.100.1.10"), "c1", "eth0"))

    path = tmp_path / "ipam" / "10.100.1.10"
    owner = json.loads(path.read_bytes())
    assert {key: owner[key] for key in ("containerId", "ifname", "netns")} == {"containerId": "c1", "ifname": "eth0", "netns": ""}
    assert abs(owner["reservedAt"] - time.time()) < 60
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reservations_survive_reopen(tmp_path):
    reservation = Reservation(IPv4Address("10.100.1.10"), "c1", "eth0")
    with DirectoryStore(tmp_path) as store:
        store.reserve(reservation)

    with DirectoryStore(tmp_path) as store:
        assert store.reserved() == {reservation.address: reservation}


def test_unreadable_reservation_still_holds_address(tmp_path):
    # A plugin killed between create and write leaves an empty file behind.
    ipam = tmp_path / "ipam"
    ipam.mkdir()
    (ipam / "10.100.1.10").write_bytes(b"")
    (ipam / "10.100.1.11").write_bytes(b'{"containerId": 5}')

    with DirectoryStore(tmp_path) as store:
        reserved = store.reserved()
        reservation = allocate(store, netconf(tmp_path), "c1", "eth0")

    assert reserved[IPv4Address("10.100.1.10")] == Reservation(IPv4Address("10.100.1.10"), "", "")
    assert reserved[IPv4Address("10.100.1.11")] == Reservation(IPv4Address("10.100.1.11"), "", "")
    assert reservation.address == IPv4Address("10.100.1.12")


def test_other_files_are_ignored(tmp_path):
    ipam = tmp_path / "ipam"
    ipam.mkdir()
    (ipam / "last_reserved_ip.0").write_text("10.100.1.10")
    (ipam / "notes.txt").write_text("hello")

    with DirectoryStore(tmp_path) as store:
        assert store.reserved() == {}


def test_lock_excludes_second_holder(tmp_path):
    entered = threading.Event()

    def enter_second():
        with DirectoryStore(tmp_path):
            entered.set()

    with DirectoryStore(tmp_path):
        second = threading.Thread(target=enter_second, daemon=True)
        second.start()
        entered_while_held = entered.wait(timeout=0.3)

    entered_after_release = entered.wait(timeout=10)
    second.join(timeout=10)

    assert not entered_while_held
    assert entered_after_release


def allocate_many(data_dir: str, worker: int, start: multiprocessing.Event, results: multiprocessing.Queue) -> None:
    conf = netconf(Path(data_dir))
    start.wait(timeout=WORKER_TIMEOUT_SECONDS)
    for number in range(ALLOCATIONS_PER_WORKER):
        container_id = f"w{worker}-c{number}"
        with DirectoryStore(conf.data_dir) as store:
            reservation = allocate(store, conf, container_id, "eth0")
        results.put((container_id, str(reservation.address)))


def test_parallel_processes_never_share_an_address(tmp_path):
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    workers = [
        context.Process(target=allocate_many, args=(str(tmp_path), worker, start, results))
        for worker in range(WORKERS)
    ]
    for process in workers:
        process.start()

    try:
        start.set()
        allocations = [results.get(timeout=WORKER_TIMEOUT_SECONDS) for _ in range(WORKERS * ALLOCATIONS_PER_WORKER)]
        for process in workers:
            process.join(timeout=WORKER_TIMEOUT_SECONDS)
    finally:
        for process in workers:
            if process.is_alive():
                process.kill()
                process.join()

    assert [process.exitcode for process in workers] == [0] * WORKERS
    addresses = Counter(address for _, address in allocations)
    duplicates = {address: count for address, count in addresses.items() if count > 1}
    assert duplicates == {}
    assert len(addresses) == WORKERS * ALLOCATIONS_PER_WORKER
    expected = {f"10.100.1.{host}" for host in range(10, 10 + WORKERS * ALLOCATIONS_PER_WORKER)}
    assert set(addresses) == expected

    with DirectoryStore(tmp_path) as store:
        on_disk = {str(address): reservation.container_id for address, reservation in store.reserved().items()}
    assert on_disk == {address: container_id for container_id, address in allocations}


# What ADD records, and what reconcile and GC read


def test_reservation_records_netns(tmp_path):
    reservation = Reservation(IPv4Address("10.100.1.10"), "c1", "eth0", "/run/netns/c1")
    with DirectoryStore(tmp_path) as store:
        store.reserve(reservation)

    with DirectoryStore(tmp_path) as store:
        assert store.reserved()[reservation.address].netns == "/run/netns/c1"


def test_reservation_without_netns_reads_as_empty(tmp_path):
    ipam = tmp_path / "ipam"
    ipam.mkdir()
    (ipam / "10.100.1.10").write_text('{"containerId": "c1", "ifname": "eth0"}')

    with DirectoryStore(tmp_path) as store:
        assert store.reserved()[IPv4Address("10.100.1.10")] == Reservation(IPv4Address("10.100.1.10"), "c1", "eth0", "")


def test_owned_by_finds_container_interface(tmp_path):
    with DirectoryStore(tmp_path) as store:
        store.reserve(Reservation(IPv4Address("10.100.1.10"), "c1", "eth0"))
        store.reserve(Reservation(IPv4Address("10.100.1.11"), "c1", "eth1"))

        assert store.owned_by("c1", "eth1").address == IPv4Address("10.100.1.11")
        assert store.owned_by("c2", "eth0") is None


def test_leaked_lists_reservations_whose_netns_is_gone(tmp_path):
    live = tmp_path / "netns-live"
    live.touch()
    with DirectoryStore(tmp_path) as store:
        store.reserve(Reservation(IPv4Address("10.100.1.10"), "alive", "eth0", str(live)))
        store.reserve(Reservation(IPv4Address("10.100.1.11"), "gone", "eth0", str(tmp_path / "netns-gone")))
        store.reserve(Reservation(IPv4Address("10.100.1.12"), "unknown", "eth0", ""))

        leaked = store.leaked()

    assert [reservation.container_id for reservation in leaked] == ["gone"]


def test_release_address_frees_unreadable_reservation(tmp_path):
    ipam = tmp_path / "ipam"
    ipam.mkdir()
    (ipam / "10.100.1.10").write_bytes(b"")

    with DirectoryStore(tmp_path) as store:
        released = store.release_address(IPv4Address("10.100.1.10"))
        remaining = store.reserved()

    assert released == Reservation(IPv4Address("10.100.1.10"), "", "")
    assert remaining == {}


# Cursor and release times


def test_cursor_survives_reopen(tmp_path):
    with DirectoryStore(tmp_path) as store:
        assert store.cursor() is None
        store.set_cursor(IPv4Address("10.100.1.42"))

    with DirectoryStore(tmp_path) as store:
        assert store.cursor() == IPv4Address("10.100.1.42")


def test_release_time_survives_reopen(tmp_path):
    with DirectoryStore(tmp_path) as store:
        store.reserve(Reservation(IPv4Address("10.100.1.10"), "c1", "eth0"))
        store.release("c1", "eth0")

    with DirectoryStore(tmp_path) as store:
        released = store.released()

    assert list(released) == [IPv4Address("10.100.1.10")]
    assert abs(released[IPv4Address("10.100.1.10")] - time.time()) < 60


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"released": {"x": "y", "10.100.1.10": "z"}}'])
def test_damaged_state_file_reads_as_fresh(tmp_path, content):
    ipam = tmp_path / "ipam"
    ipam.mkdir()
    (ipam / "state.json").write_bytes(content)

    with DirectoryStore(tmp_path) as store:
        assert store.released() == {}
        store.reserve(Reservation(IPv4Address("10.100.1.11"), "c1", "eth0"))
        store.release("c1", "eth0")

    with DirectoryStore(tmp_path) as store:
        assert list(store.released()) == [IPv4Address("10.100.1.11")]


@pytest.mark.parametrize("content", [b"", b"10.100", b"\xff\xfe", b"nonsense        "])
def test_damaged_cursor_reads_as_none(tmp_path, content):
    ipam = tmp_path / "ipam"
    ipam.mkdir()
    (ipam / "cursor").write_bytes(content)

    with DirectoryStore(tmp_path) as store:
        assert store.cursor() is None


def test_shorter_cursor_overwrites_longer(tmp_path):
    with DirectoryStore(tmp_path) as store:
        store.set_cursor(IPv4Address("10.100.100.254"))
        store.set_cursor(IPv4Address("10.100.1.1"))

    with DirectoryStore(tmp_path) as store:
        assert store.cursor() == IPv4Address("10.100.1.1")


def test_cursor_is_shared_by_processes(tmp_path):
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=allocate_one, args=(str(tmp_path), "other"))
    process.start()
    process.join(timeout=WORKER_TIMEOUT_SECONDS)

    with DirectoryStore(tmp_path) as store:
        reservation = allocate(store, netconf(tmp_path), "mine", "eth0")

    assert process.exitcode == 0
    assert reservation.address == IPv4Address("10.100.1.11")


def allocate_one(data_dir: str, container_id: str) -> None:
    conf = netconf(Path(data_dir))
    with DirectoryStore(conf.data_dir) as store:
        allocate(store, conf, container_id, "eth0")
