"""The lab's state file, lab.json: its hosts, their addresses and the PIDs of their processes.

`lab up` writes it before it creates anything and again after each process starts, so a
`lab down` after a failed or interrupted `lab up` still finds what to stop. Changes go through
:func:`locked`, which Lab.stop and Lab.start hold, so that two `flatnet lab` commands do
not overwrite each other's change.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from flatnet import i18n
from flatnet.errors import FlatnetError
from flatnet.lab import layout
from flatnet.lab.config import LabSettings
from flatnet.lab.layout import LabPaths

i18n.define({
    "lab.state_unreadable": (
        "the lab state file {path} is unreadable ({error}); run `flatnet lab down` to remove the lab",
        "ラボの状態ファイル {path} を読めません（{error}）。`flatnet lab down` でラボを削除してください",
    ),
    "lab.state_version": (
        "the lab state file {path} has version {found}, this flatnet reads version {expected};"
        " run `flatnet lab down` and `flatnet lab up` again",
        "ラボの状態ファイル {path} のバージョンは {found} ですが、この flatnet が読めるのは {expected} です。"
        "`flatnet lab down` のあと `flatnet lab up` をやり直してください",
    ),
})

STATE_VERSION = 1


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class ProcessRecord:
    """A lab process: its PID while the lab believes it runs, None once stopped."""

    pid: int | None = None
    started_at: str | None = None


@dataclass
class MemberRecord:
    """A namespace on the lab's LAN: a simulated host (with a host id) or the client (without)."""

    name: str
    netns: str
    lan_address: str
    host_id: int | None = None
    nebula_address: str | None = None
    subnet: str | None = None
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    # For a WSL2 host: the namespace that plays Windows and runs its Nebula.
    windows_netns: str | None = None

    @property
    def is_host(self) -> bool:
        return self.host_id is not None


@dataclass
class LabState:
    lab_dir: str
    settings: LabSettings
    image: str
    created_at: str
    members: dict[str, MemberRecord]
    version: int = STATE_VERSION
    # Host ids in the fleet now: each lists the others as peers and routes to their subnets.
    fleet: list[int] = field(default_factory=list)

    @property
    def hosts(self) -> list[MemberRecord]:
        return [member for member in self.members.values() if member.is_host]

    def to_json(self) -> str:
        document = asdict(self)
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabState:
        document = json.loads(text)
        members = {}
        for name, raw in document["members"].items():
            processes = {key: ProcessRecord(**value) for key, value in raw.pop("processes").items()}
            members[name] = MemberRecord(**raw, processes=processes)
        return cls(
            lab_dir=document["lab_dir"],
            settings=LabSettings(**document["settings"]),
            image=document["image"],
            created_at=document["created_at"],
            members=members,
            version=document["version"],
            fleet=document.get("fleet") or [member.host_id for member in members.values() if member.is_host],
        )


def new_state(paths: LabPaths, settings: LabSettings, image: str) -> LabState:
    """Return the state of a lab about to be built: every member with its addresses, nothing started."""
    members: dict[str, MemberRecord] = {}
    for host_id in settings.host_ids:
        name = layout.host_name(host_id)
        members[name] = MemberRecord(
            name=name,
            netns=layout.netns_name(name),
            lan_address=str(layout.lan_address(host_id)),
            host_id=host_id,
            nebula_address=str(layout.nebula_address(host_id)),
            subnet=str(layout.container_subnet(host_id)),
            processes={"nebula": ProcessRecord(), "gateway": ProcessRecord()},
        )
        if settings.is_wsl(host_id):
            members[name].lan_address = str(layout.wsl_link_address(host_id))
            members[name].windows_netns = layout.netns_name(layout.windows_name(host_id))
    members[layout.CLIENT] = MemberRecord(
        name=layout.CLIENT,
        netns=layout.netns_name(layout.CLIENT),
        lan_address=str(layout.CLIENT_LAN_ADDRESS),
    )
    return LabState(
        lab_dir=str(paths.root), settings=settings, image=image, created_at=now_iso(), members=members,
        fleet=list(settings.initial_fleet),
    )


def read_state(paths: LabPaths) -> LabState | None:
    """Return the lab's state, or None when there is no state file."""
    try:
        text = paths.state_file.read_text()
    except FileNotFoundError:
        return None
    try:
        state = LabState.from_json(text)
    except (ValueError, KeyError, TypeError) as error:
        raise FlatnetError(i18n.text("lab.state_unreadable", path=paths.state_file, error=error)) from error
    if state.version != STATE_VERSION:
        raise FlatnetError(i18n.text(
            "lab.state_version", path=paths.state_file, found=state.version, expected=STATE_VERSION,
        ))
    return state


def write_state(paths: LabPaths, state: LabState) -> None:
    """Replace lab.json atomically, so a reader never sees half a file."""
    temporary = paths.state_file.with_suffix(".json.tmp")
    temporary.write_text(state.to_json())
    os.replace(temporary, paths.state_file)


@contextlib.contextmanager
def locked(paths: LabPaths) -> Iterator[None]:
    """Hold the lab's lock file while reading, changing and writing lab.json."""
    with open(paths.state_lock, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
