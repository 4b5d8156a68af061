"""Run the lab's tools and its long-running processes (Nebula, gateways) inside namespaces.

Long-running processes are started with ``start_new_session=True`` and stopped by their
recorded PID: SIGTERM to the process group, which also reaches anything they forked. A PID
is signalled only while /proc/PID/cmdline still mentions the lab directory, because a
recorded PID may have been reused by an unrelated process.
"""

from __future__ import annotations

import enum
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from flatnet import i18n
from flatnet.errors import FlatnetError
from flatnet.logs import lab as log

i18n.define({
    "lab.tool_missing": (
        "{tool} not found on PATH; install the Debian package {package} (apt-get install -y {package})",
        "{tool} が PATH にありません。Debian パッケージ {package} をインストールしてください"
        "（apt-get install -y {package}）",
    ),
    "lab.command_failed": (
        "command failed with exit status {status}: {command}\n{output}",
        "コマンドが終了ステータス {status} で失敗しました: {command}\n{output}",
    ),
    "lab.command_timeout": (
        "command timed out after {seconds} s: {command}",
        "コマンドが {seconds} 秒でタイムアウトしました: {command}",
    ),
    "lab.process_survived": (
        "process {pid} ({command}) is still running after SIGKILL; stop it by hand (kill -KILL {pid})",
        "プロセス {pid}（{command}）が SIGKILL 後も動いています。手動で停止してください（kill -KILL {pid}）",
    ),
})

# Debian package of each external tool the lab runs.
TOOL_PACKAGES = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "nebula": "nebula",
    "nebula-cert": "nebula",
    "podman": "podman",
    "runc": "runc",
    "busybox": "busybox-static",
}
# Needed only by a lab with WSL2 hosts, whose Windows namespace forwards and NATs.
OPTIONAL_TOOL_PACKAGES = {"iptables": "iptables"}
STOP_GRACE_SECONDS = 5.0
_POLL_SECONDS = 0.01

# Popen objects of the processes this Python process started, kept so that stopping one
# reaps it (no zombie) and so that a still-running one is not garbage-collected with a warning.
_children: dict[int, subprocess.Popen] = {}


class ProcessState(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"


def require_tool(tool: str) -> str:
    """Return the path of ``tool`` on PATH, or raise naming the package that provides it."""
    path = shutil.which(tool)
    if path is None:
        package = TOOL_PACKAGES.get(tool) or OPTIONAL_TOOL_PACKAGES.get(tool, tool)
        raise FlatnetError(i18n.text("lab.tool_missing", tool=tool, package=package))
    return path


def netns_path(netns: str) -> str:
    return f"/run/netns/{netns}"


def nsenter_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """Return ``argv`` prefixed to run in ``netns``.

    nsenter is used and not ``ip netns exec``, because the latter remounts /sys, which hides
    the cgroup mounts that podman needs.
    """
    return ["nsenter", f"--net={netns_path(netns)}", *argv]


def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run a short-lived command, capturing its output, and raise FlatnetError if it fails."""
    command = shlex.join(argv)
    try:
        result = subprocess.run(
            list(argv), env=None if env is None else dict(env), input=input_text,
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    except FileNotFoundError:
        require_tool(argv[0])
        raise
    except subprocess.TimeoutExpired:
        raise FlatnetError(i18n.text("lab.command_timeout", seconds=timeout, command=command)) from None
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise FlatnetError(
            i18n.text("lab.command_failed", status=result.returncode, command=command, output=output)
        )
    return result


def start_process(
    netns: str, argv: Sequence[str], *, log_path: Path, cwd: Path, env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` in ``netns`` in a new session, appending its stdout and stderr to ``log_path``.

    nsenter enters only the network namespace and then execs the command, so the returned PID
    is the command's own and leads its process group.
    """
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            nsenter_argv(netns, argv), stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, cwd=cwd, env=None if env is None else dict(env),
            start_new_session=True,
        )
    _children[process.pid] = process
    log.debug("started %s in %s as pid %d", shlex.join(argv), netns, process.pid)
    return process.pid


def _stat_state(pid: int) -> str | None:
    """Return the one-letter state of ``pid`` from /proc/PID/stat, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name in brackets may contain spaces and ')', so split after the last ')'.
    return stat.rpartition(")")[2].split()[0]


def command_line(pid: int) -> str:
    """Return the command line of ``pid`` with spaces between arguments, or "" if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def has_ended(pid: int) -> bool:
    """Tell whether ``pid`` is gone or a zombie, reaping it if this process started it.

    PID 1 on some machines reaps orphans only now and then, so a killed orphan can stay a
    zombie for a second or more. ``kill -0`` still succeeds on a zombie, but /proc/PID/stat
    shows its state as ``Z``.
    """
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return True
    state = _stat_state(pid)
    return state is None or state == "Z"


def process_state(pid: int | None, owner_mark: str) -> ProcessState:
    """Return whether ``pid`` is a live process whose command line mentions ``owner_mark``."""
    if pid is None or has_ended(pid):
        return ProcessState.STOPPED
    if owner_mark not in command_line(pid):
        return ProcessState.STOPPED
    return ProcessState.RUNNING


def _signal_group(pid: int, signum: signal.Signals) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        # The process does not lead a group of its own (any more): signal the PID alone.
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _wait_until_ended(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if has_ended(pid):
            return True
        time.sleep(_POLL_SECONDS)
    return has_ended(pid)


def stop_process(pid: int, owner_mark: str, *, grace: float = STOP_GRACE_SECONDS) -> bool:
    """Stop ``pid`` and its process group: SIGTERM, then SIGKILL after ``grace`` seconds.

    Return False without signalling when the process is not running or its command line does
    not mention ``owner_mark``. Raise FlatnetError if it survives SIGKILL.
    """
    if process_state(pid, owner_mark) is ProcessState.STOPPED:
        return False
    command = command_line(pid)
    _signal_group(pid, signal.SIGTERM)
    if _wait_until_ended(pid, grace):
        log.debug("stopped pid %d (%s) with SIGTERM", pid, command)
        return True

    log.warning("pid %d (%s) ignored SIGTERM for %.0f s, sending SIGKILL", pid, command, grace)
    _signal_group(pid, signal.SIGKILL)
    if not _wait_until_ended(pid, grace):
        raise FlatnetError(i18n.text("lab.process_survived", pid=pid, command=command))
    return True


def log_tail(path: Path, *, start: int = 0, lines: int = 20) -> str:
    """Return the last ``lines`` lines of ``path`` written after byte offset ``start``."""
    try:
        with open(path, "rb") as log_file:
            log_file.seek(start)
            text = log_file.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
