import json
import multiprocessing
import stat
import threading
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
    assert json.loads(path.read_bytes()) == {"containerId": "c1", "ifname": "eth0"}
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
