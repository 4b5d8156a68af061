"""How address reservations are kept on disk and locked.

One file per reserved address under ``<dataDir>/ipam/``, named by the address
and holding the owner as JSON. A reservation is created with O_EXCL and
fsynced, all under an exclusive flock on ``<dataDir>/ipam/lock`` held by every
plugin process of the host, so two containers never get one address.
"""

from __future__ import annotations

import dataclasses
import fcntl
import ipaddress
import json
import os
from pathlib import Path
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class Reservation:
    address: ipaddress.IPv4Address
    container_id: str
    ifname: str


class ReservationStore(Protocol):
    """What the allocator needs from storage; an in-memory fake satisfies it too."""

    def reserved(self) -> dict[ipaddress.IPv4Address, Reservation]: ...

    def reserve(self, reservation: Reservation) -> bool: ...

    def release(self, container_id: str, ifname: str) -> list[Reservation]: ...


class DirectoryStore:
    """Reservations as files in a directory; use it as a context manager to hold the lock."""

    def __init__(self, data_dir: Path):
        self.directory = Path(data_dir) / "ipam"
        self._lock_fd: int | None = None

    def __enter__(self) -> "DirectoryStore":
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._lock_fd is not None
        os.close(self._lock_fd)
        self._lock_fd = None

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"reservation store {self.directory} used without holding its lock")

    def reserved(self) -> dict[ipaddress.IPv4Address, Reservation]:
        self._require_lock()
        reservations = {}
        for path in self.directory.iterdir():
            try:
                address = ipaddress.IPv4Address(path.name)
            except ValueError:
                continue
            reservations[address] = self._read(path, address)
        return reservations

    def _read(self, path: Path, address: ipaddress.IPv4Address) -> Reservation:
        try:
            owner = json.loads(path.read_bytes())
            return Reservation(address, str(owner["containerId"]), str(owner["ifname"]))
        except (ValueError, KeyError, TypeError, OSError):
            # An unreadable file still holds its address: handing it out again
            # could give one address to two containers.
            return Reservation(address, "", "")

    def reserve(self, reservation: Reservation) -> bool:
        """Create the reservation; return False if the address is already taken."""
        self._require_lock()
        path = self.directory / str(reservation.address)
        body = json.dumps({"containerId": reservation.container_id, "ifname": reservation.ifname}).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def release(self, container_id: str, ifname: str) -> list[Reservation]:
        """Remove every reservation of (container_id, ifname) and return them."""
        released = []
        for reservation in self.reserved().values():
            if reservation.container_id == container_id and reservation.ifname == ifname:
                (self.directory / str(reservation.address)).unlink(missing_ok=True)
                released.append(reservation)
        return released
