"""`lab down`: remove every container, process, namespace and file a lab made.

The order follows from how the kernel and podman behave. ``ip netns del`` only drops the name:
a namespace lives on, invisible, while a process still runs in it, and every container's
conmon runs in its host's namespace. So containers go first (their CNI DEL may still use the
gateway), then the recorded processes, then the namespaces, then the lab directory. Each step
runs even when an earlier one failed, and running it on a lab that is gone does nothing.

The namespace names are fixed, so one lab runs at a time, and /run/flatnet-lab-owner names the
lab directory that built it. `lab down` of any other directory leaves the running lab alone,
unless ``force`` is set.
"""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flatnet import i18n
from flatnet.errors import FlatnetError
from flatnet.lab import layout, namespaces, podman
from flatnet.lab.layout import LabPaths
from flatnet.lab.processes import command_line, stop_process
from flatnet.lab.services import Service
from flatnet.lab.progress import Progress, StepTimer, ignore_progress
from flatnet.lab.state import LabState, read_state

i18n.define({
    "lab.step_containers": ("containers removed ({count})", "コンテナーを削除（{count} 個）"),
    "lab.step_processes": ("processes stopped ({count})", "プロセスを停止（{count} 個）"),
    "lab.step_namespaces_deleted": ("namespaces deleted ({count})", "名前空間を削除（{count} 個）"),
    "lab.step_files": ("lab directory removed", "ラボのディレクトリを削除"),
    "lab.step_down_total": ("lab down in {path}", "ラボ削除 {path}"),
    "lab.straggler": (
        "process {pid} ({command}) still runs in namespace {netns}, which lives on until it exits;"
        " stop it with kill {pid}",
        "プロセス {pid}（{command}）が名前空間 {netns} でまだ動いており、終了するまで名前空間が残ります。"
        "kill {pid} で停止してください",
    ),
    "lab.dir_kept": (
        "{path} was kept because it lacks the marker file {marker} that `flatnet lab up` writes",
        "{path} には `flatnet lab up` が書くマーカーファイル {marker} がないため、削除しませんでした",
    ),
    "lab.owned_elsewhere": (
        "the running lab was built in {owner}, not in {path}, so it was left as it is;"
        " take it down with `{command}`",
        "稼働中のラボは {path} ではなく {owner} で構築されたため、そのままにしました。"
        "`{command}` で削除してください",
    ),
    "lab.owner_unknown": (
        "the lab namespaces {namespaces} exist, but no lab directory is recorded as their owner"
        " and {path} has no lab.json, so they were left as they are; remove them with"
        " `flatnet lab down --force`, which stops every process in them",
        "ラボの名前空間 {namespaces} が存在しますが、所有するラボのディレクトリが記録されておらず、"
        "{path} にも lab.json がないため、そのままにしました。`flatnet lab down --force` で削除してください"
        "（名前空間内のプロセスはすべて停止します）",
    ),
    "lab.down_incomplete": (
        "lab down left something behind:\n{problems}",
        "lab down で削除しきれなかったものがあります:\n{problems}",
    ),
})

def down(
    *, lab_dir: Path | str | None = None, force: bool = False, progress: Progress = ignore_progress,
) -> None:
    """Remove the lab in ``lab_dir`` (default: $FLATNET_LAB_DIR or /var/lib/flatnet-lab).

    Works also when the lab directory was deleted while its lab still runs. When the running
    lab belongs to another lab directory, or no owner is recorded, raise FlatnetError before
    removing anything. With ``force``, remove the running lab all the same and stop every
    process in its namespaces. Never removes the web image. Raise FlatnetError listing whatever could not be removed,
    after every step has run.
    """
    namespaces.require_root("down")
    paths = LabPaths(Path(lab_dir).absolute() if lab_dir else layout.default_lab_dir())
    running = namespaces.lab_namespaces()
    owner = namespaces.recorded_owner()
    if running and not force:
        _reject_foreign_lab(paths, running, owner)
    steps = StepTimer(progress)
    problems: list[str] = []
    lab_state = _read_state_for_teardown(paths, problems)
    dir_existed = paths.root.exists()

    if shutil.which("podman") is not None:
        removed = 0
        try:
            removed, failures = _remove_containers(paths, lab_state, running)
            problems += failures
        except FlatnetError as error:
            problems.append(str(error))
        steps.done("lab.step_containers", count=removed)

    stopped = _stop_processes(paths, lab_state, problems)
    # An empty mark matches every command line, so --force stops every process in the namespaces.
    stopped += _stop_unrecorded_processes("" if force else paths.process_mark, problems)
    steps.done("lab.step_processes", count=stopped)

    deleted = _delete_namespaces(problems)
    if not namespaces.lab_namespaces() and (force or owner in (None, paths.root)):
        namespaces.forget_owner()
    steps.done("lab.step_namespaces_deleted", count=deleted)

    if paths.root.exists():
        if paths.marker.exists() or (not dir_existed and _holds_only_gateway_data(paths)):
            shutil.rmtree(paths.root)
            steps.done("lab.step_files")
        else:
            problems.append(i18n.text("lab.dir_kept", path=paths.root, marker=paths.marker.name))
    steps.total("lab.step_down_total", path=paths.root)

    if problems:
        raise FlatnetError(i18n.text("lab.down_incomplete", problems="\n".join(f"- {p}" for p in problems)))


def _reject_foreign_lab(paths: LabPaths, running: list[str], owner: Path | None) -> None:
    """Raise FlatnetError unless the running lab belongs to the lab in ``paths``.

    Without an owner record, a lab.json in ``paths`` claims the lab: a lab built before
    flatnet recorded owners has none.
    """
    if owner == paths.root or (owner is None and paths.state_file.exists()):
        return
    if owner is not None:
        command = f"{layout.lab_dir_assignment(owner)}flatnet lab down"
        raise FlatnetError(i18n.text("lab.owned_elsewhere", owner=owner, path=paths.root, command=command))
    raise FlatnetError(i18n.text("lab.owner_unknown", namespaces=", ".join(running), path=paths.root))


def _remove_containers(
    paths: LabPaths, lab_state: LabState | None, running: list[str],
) -> tuple[int, list[str]]:
    """Remove the lab's containers; return how many, and a message for each failure.

    When the hosts' containers.conf files are gone but the lab still runs, the lab
    directory was deleted under it, and podman gets stand-in configuration files.
    """
    hosts = _configured_hosts(paths, lab_state)
    if any(paths.containers_conf(layout.host_name(host_id)).exists() for host_id in hosts) or not running:
        return podman.remove_lab_containers(paths, hosts)
    found = (re.fullmatch(r"flatnet-h([0-9]+)", netns) for netns in running)
    return podman.remove_containers_without_lab_dir(sorted(int(match.group(1)) for match in found if match))


def _holds_only_gateway_data(paths: LabPaths) -> bool:
    """Tell whether every file under the lab directory is in a host's data directory.

    A gateway writes a snapshot into its data directory when it stops, and creates the
    directories on the way, so stopping the gateways of a lab whose directory was deleted
    makes the directory again.
    """
    files = [path for path in paths.root.rglob("*") if not path.is_dir()]
    return all(re.fullmatch(r"h[0-9]+/data/.+", str(path.relative_to(paths.root))) for path in files)


def _read_state_for_teardown(paths: LabPaths, problems: list[str]) -> LabState | None:
    """Return lab.json, or None if it is missing or unreadable; teardown goes on without it."""
    try:
        return read_state(paths)
    except FlatnetError as error:
        problems.append(str(error))
        return None


def _configured_hosts(paths: LabPaths, lab_state: LabState | None) -> list[int]:
    """Return the host ids that have a directory in the lab, from lab.json or else from the tree."""
    if lab_state is not None:
        return [member.host_id for member in lab_state.hosts if member.host_id is not None]
    if not paths.root.is_dir():
        return []
    found = (re.fullmatch(r"h([0-9]+)", entry.name) for entry in paths.root.iterdir())
    return sorted(int(match.group(1)) for match in found if match)


def _stop_processes(paths: LabPaths, lab_state: LabState | None, problems: list[str]) -> int:
    """Stop every recorded process whose command line names the lab directory; return how many.

    All gateways stop first, in parallel, while Nebula still carries their peer streams, so
    they can close them cleanly; then every Nebula.
    """
    if lab_state is None:
        return 0
    stopped = 0
    for service in (Service.GATEWAY, Service.NEBULA):
        pids = []
        for member in lab_state.members.values():
            record = member.processes.get(service.value)
            if record is not None and record.pid is not None:
                pids.append(record.pid)
        with ThreadPoolExecutor(max_workers=max(1, len(pids))) as pool:
            futures = [pool.submit(stop_process, pid, paths.process_mark) for pid in pids]
        for future in futures:
            try:
                stopped += future.result()
            except FlatnetError as error:
                problems.append(str(error))
    return stopped


def _stop_unrecorded_processes(mark: str, problems: list[str]) -> int:
    """Stop each process in the lab's namespaces whose command line contains ``mark``; return how many.

    These are lab processes that lab.json does not list, because the file is gone or a
    command was interrupted before it recorded them. Gateways stop before Nebula, as in
    _stop_processes.
    """
    pids = [pid for netns in namespaces.lab_namespaces() for pid in namespaces.processes_inside(netns)]
    pids.sort(key=lambda pid: command_line(pid).startswith("nebula"))
    stopped = 0
    for pid in pids:
        try:
            stopped += stop_process(pid, mark)
        except FlatnetError as error:
            problems.append(str(error))
    return stopped


def _delete_namespaces(problems: list[str]) -> int:
    # The LAN namespace goes last because it contains the other ends of every member's veth.
    ordered = sorted(namespaces.lab_namespaces(), key=lambda name: (name == layout.LAN_NETNS, name))
    for netns in ordered:
        for pid in namespaces.processes_inside(netns):
            problems.append(i18n.text("lab.straggler", pid=pid, command=command_line(pid), netns=netns))
        try:
            namespaces.delete(netns)
        except FlatnetError as error:
            problems.append(str(error))
    return len(ordered)
