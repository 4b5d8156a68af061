"""How address reservations are kept on disk and locked.

One file per reserved address under ``<dataDir>/ipam/``, named by the address
and holding the owner as JSON. A reservation is created with O_EXCL and
fsynced, all under an exclusive flock on ``<dataDir>/ipam/lock`` held by every
plugin process of the host and by the gateway's fast path, so two containers
never get one address.

``<dataDir>/ipam/cursor`` holds the address reserved last, and
``<dataDir>/ipam/state.json`` when each address was released. Both only steer
which free address comes next, never whether an address is free, so neither is
fsynced. The cursor is overwritten in place, one write per ADD; a torn or
stale cursor reads as none or as an older address. state.json is replaced
atomically; after a power loss it may be older or missing.
"""

from __future__ import annotations

import dataclasses
import fcntl
import ipaddress
import json
import os
import time
from pathlib import Path
from typing import Protocol

STATE_FILE = "state.json"
CURSOR_FILE = "cursor"
# Wide enough for any IPv4 address, so an overwrite never leaves a longer one's tail.
CURSOR_WIDTH = 16
# How long a release time is kept: the longest reuseDelay a config may set.
RELEASE_MEMORY_SECONDS = 7 * 24 * 3600.0


@dataclasses.dataclass(frozen=True)
class Reservation:
    """An address held by one (container, interface).

    ``netns`` is the container's network namespace path as ADD got it, empty
    for reservations written before it was recorded. An unreadable
    reservation file has an empty ``container_id``: its address stays reserved.
    """

    address: ipaddress.IPv4Address
    container_id: str
    ifname: str
    netns: str = ""


class ReservationStore(Protocol):
    """What the allocator needs from storage; an in-memory fake satisfies it too."""

    def reserved(self) -> dict[ipaddress.IPv4Address, Reservation]: ...

    def reserve(self, reservation: Reservation) -> bool: ...

    def release(self, container_id: str, ifname: str) -> list[Reservation]: ...

    def cursor(self) -> ipaddress.IPv4Address | None: ...

    def set_cursor(self, address: ipaddress.IPv4Address) -> None: ...

    def released(self) -> dict[ipaddress.IPv4Address, float]: ...


class DirectoryStore:
    """Reservations as files in a directory; use it as a context manager to hold the lock."""

    def __init__(self, data_dir: Path):
        self.directory = Path(data_dir) / "ipam"
        self._lock_fd: int | None = None
        self._state: dict | None = None
        # The directory read once per lock hold; reserve and release keep it current.
        self._reserved: dict[ipaddress.IPv4Address, Reservation] | None = None

    def __enter__(self) -> "DirectoryStore":
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._state = None
        self._reserved = None
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
        if self._reserved is None:
            self._reserved = {}
            for path in self.directory.iterdir():
                try:
                    address = ipaddress.IPv4Address(path.name)
                except ValueError:
                    continue
                self._reserved[address] = self._read(path, address)
        return dict(self._reserved)

    def owned_by(self, container_id: str, ifname: str) -> Reservation | None:
        """Return the reservation of (container_id, ifname), or None if it has none."""
        for reservation in self.reserved().values():
            if reservation.container_id == container_id and reservation.ifname == ifname:
                return reservation
        return None

    def leaked(self) -> list[Reservation]:
        """Reservations whose container's network namespace no longer exists.

        After a reboot every namespace is gone and no runtime sends DEL for
        them. A reservation without a recorded namespace, or whose file is
        unreadable, is never reported: it may belong to a live container.
        """
        return [
            reservation
            for reservation in self.reserved().values()
            if reservation.container_id and reservation.netns and not os.path.exists(reservation.netns)
        ]

    def _read(self, path: Path, address: ipaddress.IPv4Address) -> Reservation:
        try:
            owner = json.loads(path.read_bytes())
            return Reservation(address, str(owner["containerId"]), str(owner["ifname"]), str(owner.get("netns", "")))
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            # An unreadable file still reserves its address: handing it out again
            # could give one address to two containers.
            return Reservation(address, "", "")

    def reserve(self, reservation: Reservation) -> bool:
        """Create the reservation; return False if the address is already taken."""
        self._require_lock()
        path = self.directory / str(reservation.address)
        body = json.dumps({
            "containerId": reservation.container_id,
            "ifname": reservation.ifname,
            "netns": reservation.netns,
            "reservedAt": time.time(),
        }).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, body)
            os.fsync(fd)
        except BaseException:
            # A half-written file would hold the address with no owner forever.
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        if self._reserved is not None:
            self._reserved[reservation.address] = reservation
        return True

    def release(self, container_id: str, ifname: str) -> list[Reservation]:
        """Remove every reservation of (container_id, ifname), note when, and return them."""
        released = [
            reservation
            for reservation in self.reserved().values()
            if reservation.container_id == container_id and reservation.ifname == ifname
        ]
        for reservation in released:
            (self.directory / str(reservation.address)).unlink(missing_ok=True)
            self._forget(reservation.address)
        if released:
            self._note_released(released)
        return released

    def release_address(self, address: ipaddress.IPv4Address) -> Reservation | None:
        """Remove the reservation of ``address``, whatever its owner, for reconcile and GC."""
        reservation = self.reserved().get(address)
        if reservation is None:
            return None
        (self.directory / str(address)).unlink(missing_ok=True)
        self._forget(address)
        self._note_released([reservation])
        return reservation

    def _forget(self, address: ipaddress.IPv4Address) -> None:
        if self._reserved is not None:
            self._reserved.pop(address, None)

    def cursor(self) -> ipaddress.IPv4Address | None:
        """Return the address reserved last by allocation; the next search starts after it."""
        self._require_lock()
        try:
            return ipaddress.IPv4Address((self.directory / CURSOR_FILE).read_text().strip())
        except (OSError, ValueError, UnicodeDecodeError):
            return None

    def set_cursor(self, address: ipaddress.IPv4Address) -> None:
        self._require_lock()
        fd = os.open(self.directory / CURSOR_FILE, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.pwrite(fd, str(address).ljust(CURSOR_WIDTH).encode(), 0)
        finally:
            os.close(fd)

    def released(self) -> dict[ipaddress.IPv4Address, float]:
        """When each address was released, in Unix seconds."""
        released = {}
        entries = self._load_state().get("released")
        for address, when in (entries.items() if isinstance(entries, dict) else ()):
            try:
                released[ipaddress.IPv4Address(address)] = float(when)
            except (ValueError, TypeError):
                continue
        return released

    def _note_released(self, reservations: list[Reservation]) -> None:
        state = self._load_state()
        entries = state.get("released")
        if not isinstance(entries, dict):
            entries = {}
        now = time.time()
        entries = {
            address: when for address, when in entries.items()
            if isinstance(when, (int, float)) and when > now - RELEASE_MEMORY_SECONDS
        }
        for reservation in reservations:
            entries[str(reservation.address)] = now
        state["released"] = entries
        self._save_state(state)

    def _load_state(self) -> dict:
        self._require_lock()
        if self._state is None:
            try:
                loaded = json.loads((self.directory / STATE_FILE).read_bytes())
            except (OSError, ValueError):
                loaded = {}
            self._state = loaded if isinstance(loaded, dict) else {}
        return self._state

    def _save_state(self, state: dict) -> None:
        self._require_lock()
        temporary = self.directory / f".{STATE_FILE}.tmp"
        temporary.write_bytes(json.dumps(state).encode())
        os.replace(temporary, self.directory / STATE_FILE)
        self._state = state
