"""A running lab as tests and the CLI use it: run commands on its hosts, stop and start their
Nebula and gateway, read their logs, and report their status.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flatnet import i18n, nebula
from flatnet.errors import FlatnetError
from flatnet.lab import config, layout, namespaces, podman, services
from flatnet.lab.image import IMAGE
from flatnet.lab.layout import LabPaths
from flatnet.lab.namespaces import HttpResponse
from flatnet.lab.processes import ProcessState, nsenter_argv, process_state, stop_process
from flatnet.lab.services import Health, Service, Startup
from flatnet.lab.state import LabState, MemberRecord, ProcessRecord, locked, now_iso, read_state, write_state

i18n.define({
    "lab.not_found": (
        "no lab in {path}; start one with `flatnet lab up`",
        "{path} にラボがありません。`flatnet lab up` で起動してください",
    ),
    "lab.unknown_member": (
        "the lab has no host named {name}; use one of {names}",
        "ラボに {name} というホストはありません。次のいずれかを指定してください: {names}",
    ),
    "lab.not_a_host": (
        "{name} is the LAN client and runs no {service}; use one of {names}",
        "{name} は LAN クライアントなので {service} は動いていません。次のいずれかを指定してください: {names}",
    ),
    "lab.already_running": (
        "{service} of {host} is already running as pid {pid}; stop it first with `flatnet lab stop {host} {service}`",
        "{host} の {service} はすでに pid {pid} で動いています。先に `flatnet lab stop {host} {service}` で停止してください",
    ),
    "lab.already_joined": (
        "{host} is in the fleet already; take it out first with `flatnet lab leave {host}`",
        "{host} はすでにフリートに入っています。先に `flatnet lab leave {host}` で外してください",
    ),
    "lab.not_joined": (
        "{host} is not in the fleet; add it with `flatnet lab join {host}`",
        "{host} はフリートに入っていません。`flatnet lab join {host}` で追加してください",
    ),
    "lab.nebula_needed": (
        "the gateway of {host} listens on its Nebula address, but Nebula of {host} is stopped;"
        " start it first with `flatnet lab start {host} nebula`",
        "{host} のゲートウェイは Nebula のアドレスで待ち受けますが、{host} の Nebula が停止しています。"
        "先に `flatnet lab start {host} nebula` で起動してください",
    ),
})


class CommandFailed(FlatnetError):
    """A command run with ``check=True`` on a lab host exited with a non-zero status."""

    def __init__(self, name: str, argv: Sequence[str], result: subprocess.CompletedProcess) -> None:
        output = result.stderr or result.stdout or ""
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        super().__init__(i18n.text(
            "lab.command_failed", status=result.returncode,
            command=f"{name}: {shlex.join(argv)}", output=output.strip(),
        ))
        self.result = result


@dataclass(frozen=True)
class ProcessStatus:
    service: str
    pid: int | None
    state: ProcessState


@dataclass(frozen=True)
class MemberStatus:
    member: MemberRecord
    processes: list[ProcessStatus]
    health: Health | None

    def to_dict(self) -> dict[str, object]:
        record = self.member
        health = None
        if self.health is not None:
            health = {"ok": self.health.ok, "status": self.health.status, "error": self.health.error,
                      "body": self.health.body}
        return {
            "name": record.name,
            "host_id": record.host_id,
            "netns": record.netns,
            "lan_address": record.lan_address,
            "nebula_address": record.nebula_address,
            "subnet": record.subnet,
            "processes": {p.service: {"pid": p.pid, "state": p.state.value} for p in self.processes},
            "health": health,
        }


class Lab:
    """A lab built by `lab up`, described by its lab.json."""

    def __init__(self, paths: LabPaths, state: LabState) -> None:
        self.paths = paths
        self.state = state

    @classmethod
    def load(cls, lab_dir: Path | str | None = None) -> Lab:
        """Return the lab in ``lab_dir`` (default: $FLATNET_LAB_DIR or /var/lib/flatnet-lab)."""
        paths = LabPaths(Path(lab_dir).absolute() if lab_dir else layout.default_lab_dir())
        state = read_state(paths)
        if state is None:
            raise FlatnetError(i18n.text("lab.not_found", path=paths.root))
        return cls(paths, state)

    def reload(self) -> None:
        state = read_state(self.paths)
        if state is None:
            raise FlatnetError(i18n.text("lab.not_found", path=self.paths.root))
        self.state = state

    @property
    def hosts(self) -> list[str]:
        """Return the names of the simulated hosts, ``h1`` first."""
        return [member.name for member in self.state.hosts]

    def member(self, name: str) -> MemberRecord:
        """Return the host or client called ``name``, or raise listing the valid names."""
        try:
            return self.state.members[name]
        except KeyError:
            names = ", ".join(self.state.members)
            raise FlatnetError(i18n.text("lab.unknown_member", name=name, names=names)) from None

    def host(self, name: str, service: Service | str = "podman") -> MemberRecord:
        """Return the simulated host ``name``; the client is rejected because it runs ``service``."""
        member = self.member(name)
        if not member.is_host:
            label = service.value if isinstance(service, Service) else service
            raise FlatnetError(i18n.text(
                "lab.not_a_host", name=name, service=label, names=", ".join(self.hosts),
            ))
        return member

    def command_env(self, name: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return the environment for a command on ``name``: with its CONTAINERS_CONF on a host."""
        env = dict(os.environ if base is None else base)
        if self.member(name).is_host:
            env["CONTAINERS_CONF"] = str(self.paths.containers_conf(name))
        return env

    def exec_argv(self, name: str, argv: Sequence[str]) -> list[str]:
        return nsenter_argv(self.member(name).netns, argv)

    def exec(
        self, name: str, argv: Sequence[str], *, check: bool = False, capture: bool = True,
        text: bool = True, timeout: float | None = 60.0, input: str | bytes | None = None,
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` in the namespace of host or client ``name`` and return the finished process.

        With ``check``, a non-zero exit status raises CommandFailed, whose message has the output.
        """
        result = subprocess.run(
            self.exec_argv(name, argv), env=self.command_env(name), capture_output=capture,
            text=text, timeout=timeout, check=False, input=input,
        )
        if check and result.returncode != 0:
            raise CommandFailed(name, argv, result)
        return result

    def podman(
        self, host: str, *args: str, check: bool = True, timeout: float | None = 120.0,
    ) -> subprocess.CompletedProcess:
        """Run ``podman args…`` on ``host`` with its containers.conf; output is captured as text."""
        self.host(host)
        return self.exec(host, ["podman", *args], check=check, timeout=timeout)

    def run_web(self, host: str, container: str, *extra: str) -> str:
        """Start the web image as ``container`` on ``host`` and return the container's address."""
        self.podman(host, "run", "-d", "--name", container, *extra, IMAGE)
        return self.container_address(host, container)

    def container_address(self, host: str, container: str) -> str:
        template = "{{.NetworkSettings.Networks.%s.IPAddress}}" % layout.NETWORK_NAME
        return self.podman(host, "inspect", "--format", template, container).stdout.strip()

    def http_get(
        self, name: str, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 2.0,
    ) -> HttpResponse:
        """Send ``GET url`` from the namespace of ``name``; raises OSError if it cannot connect."""
        return namespaces.http_get(self.member(name).netns, url, headers=headers, timeout=timeout)

    def gateway_log(self, host: str) -> str:
        return _read_text(self.paths.gateway_log(self.host(host).name))

    def nebula_log(self, host: str) -> str:
        return _read_text(self.paths.nebula_log(self.host(host).name))

    def access_log(self, host: str) -> str:
        return _read_text(self.paths.access_log(self.host(host).name))

    def health(self, host: str, *, timeout: float = 1.0) -> Health:
        member = self.host(host, Service.GATEWAY)
        url = services.health_url(member.host_id, self.state.settings)
        return services.gateway_health(member.host_id, timeout=timeout, url=url)

    def process_state(self, host: str, service: Service | str) -> ProcessState:
        service = Service(service)
        record = self.host(host, service).processes[service.value]
        return process_state(record.pid, self.paths.process_mark)

    def stop(self, host: str, service: Service | str) -> bool:
        """Stop ``service`` of ``host`` by its recorded PID; return False if it was not running."""
        service = Service(service)
        self.host(host, service)
        with locked(self.paths):
            self.reload()
            record = self.state.members[host].processes[service.value]
            stopped = record.pid is not None and stop_process(record.pid, self.paths.process_mark)
            self.state.members[host].processes[service.value] = ProcessRecord()
            write_state(self.paths, self.state)
        return stopped

    def start(self, host: str, service: Service | str) -> int:
        """Start ``service`` of ``host``, wait until it is ready, and return its PID.

        Nebula is ready when its tun device has the host's Nebula address. The gateway is ready
        when GET /api/health returns 200, which needs Nebula running on that host.
        """
        service = Service(service)
        member = self.host(host, service)
        with locked(self.paths):
            self.reload()
            record = self.state.members[host].processes[service.value]
            if process_state(record.pid, self.paths.process_mark) is ProcessState.RUNNING:
                raise FlatnetError(i18n.text(
                    "lab.already_running", service=service.value, host=host, pid=record.pid,
                ))
            if service is Service.GATEWAY and self.process_state(host, Service.NEBULA) is ProcessState.STOPPED:
                raise FlatnetError(i18n.text("lab.nebula_needed", host=host))
            startup = services.start_service(service, self.paths, member.host_id, self.state.settings)
            self.state.members[host].processes[service.value] = ProcessRecord(startup.pid, now_iso())
            write_state(self.paths, self.state)
        try:
            wait_ready(startup)
        except FlatnetError:
            # A process that never became ready is stopped, so the lab does not keep a half-started one.
            self.stop(host, service)
            raise
        return startup.pid

    def restart(self, host: str, service: Service | str) -> int:
        """Stop ``service`` of ``host`` if it runs, start it again, and return its new PID."""
        self.stop(host, service)
        return self.start(host, service)

    def join(self, host: str) -> None:
        """Add ``host`` to the fleet, as an operator adds a host: config files first, then restarts.

        Every member's gateway config lists the new peer, and `flatnet nebula config --write`'s
        merge gives every nebula.yml the new unsafe route and firewall rules. Nebula 1.6.1 reads
        unsafe routes only at start, so each changed Nebula restarts, which takes the routes on
        its tun with it. The gateways read their new peers on SIGHUP and put the routes back
        within one reconcile interval.
        """
        member = self.host(host)
        self.reload()
        if member.host_id in self.state.fleet:
            raise FlatnetError(i18n.text("lab.already_joined", host=host))
        self._change_fleet(sorted({*self.state.fleet, member.host_id}))

    def leave(self, host: str) -> None:
        """Take ``host`` out of the fleet: stop its processes, then reconfigure the others as `join` does."""
        member = self.host(host)
        self.reload()
        if member.host_id not in self.state.fleet:
            raise FlatnetError(i18n.text("lab.not_joined", host=host))
        self.stop(host, Service.GATEWAY)
        self.stop(host, Service.NEBULA)
        self._change_fleet(sorted(set(self.state.fleet) - {member.host_id}))

    def _change_fleet(self, fleet: list[int]) -> None:
        settings = self.state.settings
        changed = []
        for host_id in fleet:
            name = layout.host_name(host_id)
            self.paths.gateway_config(name).write_text(config.render_gateway_config(self.paths, host_id, settings, fleet))
            if nebula.update_config_file(self.paths.nebula_config(name), host_id, fleet).changed:
                changed.append(host_id)
        with locked(self.paths):
            self.reload()
            self.state.fleet = fleet
            write_state(self.paths, self.state)

        # Nebula first, the lighthouse (host 1) before the others, then every gateway.
        for host_id in fleet:
            name = layout.host_name(host_id)
            if self.process_state(name, Service.NEBULA) is ProcessState.STOPPED:
                self.start(name, Service.NEBULA)
            elif host_id in changed:
                self.restart(name, Service.NEBULA)
        for host_id in fleet:
            name = layout.host_name(host_id)
            if self.process_state(name, Service.GATEWAY) is ProcessState.STOPPED:
                self.start(name, Service.GATEWAY)
            else:
                self.reload_peers(name)

    def reload_peers(self, host: str) -> None:
        """Send SIGHUP to the gateway of ``host``, which reads the peers of its config file again."""
        record = self.host(host, Service.GATEWAY).processes[Service.GATEWAY.value]
        if process_state(record.pid, self.paths.process_mark) is ProcessState.RUNNING:
            os.kill(record.pid, signal.SIGHUP)

    def status(self, *, check_health: bool = True) -> list[MemberStatus]:
        """Return every member with its processes' states and, for hosts, the gateway's health."""
        self.reload()
        statuses = []
        for member in self.state.members.values():
            processes = [
                ProcessStatus(service, record.pid, process_state(record.pid, self.paths.process_mark))
                for service, record in member.processes.items()
            ]
            health = None
            if member.is_host and check_health:
                url = services.health_url(member.host_id, self.state.settings)
                health = services.gateway_health(member.host_id, url=url)
            statuses.append(MemberStatus(member, processes, health))
        return statuses


def wait_ready(startup: Startup) -> None:
    if startup.service is Service.NEBULA:
        services.wait_nebula_ready(startup)
    else:
        services.wait_gateway_ready(startup)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
