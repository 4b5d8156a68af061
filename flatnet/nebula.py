"""The parts of a host's Nebula setup that depend on the fleet: its config and its certificate.

Nebula addresses follow the host id: host ``h`` is ``10.100.0.h`` in the network
``10.100.0.0/24``, and its containers use ``10.100.h.0/24``. A certificate's network must stay
a /24, because Nebula refuses to start when an unsafe route lies inside it ("entry N.route in
tun.unsafe_routes is contained within the network attached to the certificate"), and a /16
would contain every container subnet. Nebula 1.6.1 also drops a packet whose source is not in
the sender's certificate, so each certificate carries its host's container subnet.

Of a Nebula config, flatnet owns the ``tun.unsafe_routes`` entries to container subnets and the
firewall rules ``{port: any, proto: any, cidr: C}`` with ``C`` inside 10.100.0.0/16. Updating a
file replaces those and keeps everything else, though YAML comments are lost. Nebula 1.6.1 reads
``tun.unsafe_routes`` only at start (SIGHUP does not reload them), so a changed file needs a
restart.
"""

from __future__ import annotations

import ctypes
import dataclasses
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from flatnet import i18n
from flatnet.errors import FlatnetError
from flatnet.gateway.route_settings import CONTAINER_NETWORK, NEBULA_ROUTE_METRIC
from flatnet.logs import routes as logger

i18n.define({
    "nebula.tool_missing": (
        "{tool} not found on PATH; install the Debian package nebula (apt-get install -y nebula)",
        "{tool} が PATH にありません。Debian パッケージ nebula をインストールしてください（apt-get install -y nebula）",
    ),
    "nebula.cert_failed": (
        "nebula-cert {command} failed with exit status {status}: {output}",
        "nebula-cert {command} が終了ステータス {status} で失敗しました: {output}",
    ),
    "nebula.exists": (
        "{path} already exists and nebula-cert never overwrites; remove it or choose another --out-crt/--out-key",
        "{path} はすでに存在し、nebula-cert は上書きしません。削除するか別の --out-crt/--out-key を指定してください",
    ),
    "nebula.unreadable": ("cannot read Nebula config {path}: {error}", "Nebula 設定 {path} を読めません: {error}"),
    "nebula.not_yaml_at": (
        "Nebula config {path} is not valid YAML: line {line}, column {column}: {problem}",
        "Nebula 設定 {path} は正しい YAML ではありません: {line} 行 {column} 列: {problem}",
    ),
    "nebula.not_yaml": ("Nebula config {path} is not valid YAML: {problem}", "Nebula 設定 {path} は正しい YAML ではありません: {problem}"),
    "nebula.not_mapping": (
        "Nebula config {path} must be a YAML mapping with keys such as pki, tun and firewall, not {kind}",
        "Nebula 設定 {path} は pki、tun、firewall などのキーを持つ YAML のマッピングでなければなりません（{kind} でした）",
    ),
    "nebula.section_not_mapping": (
        "{section} in Nebula config {path} must be a mapping, not {kind}",
        "Nebula 設定 {path} の {section} はマッピングでなければなりません（{kind} でした）",
    ),
    "nebula.list_expected": (
        "{section} in Nebula config {path} must be a list, not {kind}",
        "Nebula 設定 {path} の {section} はリストでなければなりません（{kind} でした）",
    ),
    "nebula.cert_unreadable": (
        "cannot read Nebula certificate {path}: {output}",
        "Nebula 証明書 {path} を読めません: {output}",
    ),
    "nebula.invalid_target": (
        "--restart {target} is neither a systemd unit (e.g. nebula@node.service) nor the PID of a running process",
        "--restart {target} は systemd ユニット（例: nebula@node.service）でも、動いているプロセスの PID でもありません",
    ),
    "nebula.not_nebula": (
        "process {pid} runs {command}, not nebula; pass the PID of the Nebula process",
        "プロセス {pid} は nebula ではなく {command} を実行しています。Nebula プロセスの PID を指定してください",
    ),
    "nebula.no_systemctl": (
        "systemctl not found: this host does not run systemd; pass the PID of the running nebula instead",
        "systemctl がありません。このホストは systemd で動いていません。代わりに動いている nebula の PID を指定してください",
    ),
    "nebula.restart_failed": (
        "restarting {target} failed: {output}",
        "{target} の再起動に失敗しました: {output}",
    ),
    "nebula.survived": (
        "nebula process {pid} is still running {seconds} s after SIGKILL; stop it by hand (kill -KILL {pid})",
        "nebula プロセス {pid} が SIGKILL の {seconds} 秒後も動いています。手動で停止してください（kill -KILL {pid}）",
    ),
    "nebula.exited": (
        "the restarted nebula (pid {pid}) exited at once with status {status}; see its log",
        "再起動した nebula（pid {pid}）がすぐに終了しました（ステータス {status}）。ログを確認してください",
    ),
    "nebula.invalid_host_id": (
        "host id {value} is out of range: use 1 to 254, the third byte of the host's subnet 10.100.<id>.0/24",
        "ホスト ID {value} は範囲外です。ホストのサブネット 10.100.<id>.0/24 の第 3 オクテットとなる 1 から 254 を指定してください",
    ),
    "nebula.cert_wrong_ip": (
        "certificate {path} has the address {found}, not {wanted}",
        "証明書 {path} のアドレスは {wanted} ではなく {found} です",
    ),
    "nebula.cert_no_subnet": (
        "certificate {path} carries the subnets {found}, not {wanted}; re-sign it with"
        " `flatnet nebula sign --host-id {host}` and restart Nebula",
        "証明書 {path} のサブネットは {found} で、{wanted} を含みません。"
        "`flatnet nebula sign --host-id {host}` で署名し直し、Nebula を再起動してください",
    ),
    "nebula.no_cert_path": (
        "Nebula config {path} names no certificate file in pki.cert (an inline PEM cannot be checked)",
        "Nebula 設定 {path} の pki.cert に証明書ファイルがありません（インラインの PEM は確認できません）",
    ),
    "nebula.restarted_pid": ("restarted nebula: pid {old} is now pid {new}", "nebula を再起動しました: pid {old} → pid {new}"),
    "nebula.restarted_unit": ("restarted {unit}", "{unit} を再起動しました"),
})

NEBULA_NETWORK = ipaddress.IPv4Network("10.100.0.0/24")
STOP_SECONDS = 10.0
_CLONE_NEWNET = 0x40000000


def nebula_address(host_id: int) -> ipaddress.IPv4Address:
    return NEBULA_NETWORK.network_address + host_id


def container_subnet(host_id: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"10.100.{host_id}.0/24")


def _any_rule(cidr: ipaddress.IPv4Network) -> dict[str, str]:
    return {"port": "any", "proto": "any", "cidr": str(cidr)}


def fleet_config(host_id: int, peers: Iterable[int]) -> dict[str, Any]:
    """Return the fleet-dependent part of host ``host_id``'s Nebula config.

    One unsafe route per peer subnet, via that peer's Nebula address, at a metric above
    flatnet's own routes. Firewall rules in both directions admit each peer host (its gateway's
    event streams and proxied requests, pings) and its containers. Nebula 1.6.1 has no
    ``local_cidr``, so a rule admits traffic to this host and to everything behind it.
    """
    others = sorted(set(peers) - {host_id})
    routes = [
        {"route": str(container_subnet(peer)), "via": str(nebula_address(peer)), "metric": NEBULA_ROUTE_METRIC}
        for peer in others
    ]
    rules = []
    for peer in others:
        rules.append(_any_rule(ipaddress.IPv4Network(f"{nebula_address(peer)}/32")))
        rules.append(_any_rule(container_subnet(peer)))
    return {
        "tun": {"unsafe_routes": routes},
        "firewall": {"outbound": [dict(rule) for rule in rules], "inbound": [dict(rule) for rule in rules]},
    }


def render_fleet_config(host_id: int, peers: Iterable[int]) -> str:
    """Return :func:`fleet_config` as YAML, with a comment saying what it is."""
    peers = sorted(set(peers) - {host_id})
    header = (
        f"# The fleet-dependent part of host {host_id}'s Nebula config (peers: {', '.join(map(str, peers)) or 'none'}).\n"
        "# `flatnet nebula config --write FILE` merges it into FILE.\n"
    )
    return header + dump_yaml(fleet_config(host_id, peers))


def dump_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=120)


def _is_flatnet_route(entry: object) -> bool:
    try:
        network = ipaddress.IPv4Network(str(entry["route"]))  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return False
    return network.prefixlen == 24 and network.subnet_of(CONTAINER_NETWORK) and network != NEBULA_NETWORK


def _is_flatnet_rule(rule: object) -> bool:
    if not isinstance(rule, dict) or set(rule) != {"port", "proto", "cidr"}:
        return False
    if str(rule["port"]) != "any" or str(rule["proto"]) != "any":
        return False
    try:
        return ipaddress.IPv4Network(str(rule["cidr"])).subnet_of(CONTAINER_NETWORK)
    except ValueError:
        return False


def _kind(value: object) -> str:
    return type(value).__name__


def _section(parent: dict, key: str, path: Path, name: str) -> dict:
    value = parent.setdefault(key, {})
    if value is None:
        value = parent[key] = {}
    if not isinstance(value, dict):
        raise FlatnetError(i18n.text("nebula.section_not_mapping", section=name, path=path, kind=_kind(value)))
    return value


def _list(parent: dict, key: str, path: Path, name: str) -> list:
    value = parent.get(key) or []
    if not isinstance(value, list):
        raise FlatnetError(i18n.text("nebula.list_expected", section=name, path=path, kind=_kind(value)))
    return value


def merge_fleet_config(config: dict[str, Any], host_id: int, peers: Iterable[int], *, path: Path) -> dict[str, Any]:
    """Return ``config`` with flatnet's unsafe routes and firewall rules replaced by the fleet's."""
    merged = json.loads(json.dumps(config, default=str))
    fleet = fleet_config(host_id, peers)

    tun = _section(merged, "tun", path, "tun")
    kept = [entry for entry in _list(tun, "unsafe_routes", path, "tun.unsafe_routes") if not _is_flatnet_route(entry)]
    tun["unsafe_routes"] = kept + fleet["tun"]["unsafe_routes"]

    firewall = _section(merged, "firewall", path, "firewall")
    for direction in ("outbound", "inbound"):
        rules = _list(firewall, direction, path, f"firewall.{direction}")
        firewall[direction] = [rule for rule in rules if not _is_flatnet_rule(rule)] + fleet["firewall"][direction]
    return merged


@dataclasses.dataclass(frozen=True)
class ConfigUpdate:
    """The result of :func:`update_config_file`: whether the file changed, and its routes before and after."""

    path: Path
    changed: bool
    routes_before: tuple[str, ...]
    routes_after: tuple[str, ...]


def _route_list(config: dict[str, Any]) -> tuple[str, ...]:
    entries = (config.get("tun") or {}).get("unsafe_routes") or []
    return tuple(f"{entry.get('route')} via {entry.get('via')}" for entry in entries if isinstance(entry, dict))


def read_config(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise FlatnetError(i18n.text("nebula.unreadable", path=path, error=error.strerror)) from None
    except UnicodeDecodeError as error:
        raise FlatnetError(i18n.text("nebula.unreadable", path=path, error=error)) from None
    except yaml.YAMLError as error:
        raise FlatnetError(_yaml_error_text(path, error)) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise FlatnetError(i18n.text("nebula.not_mapping", path=path, kind=_kind(document)))
    return document


def _yaml_error_text(path: Path, error: yaml.YAMLError) -> str:
    """Describe a YAML error in one line: the file, PyYAML's line and column (from 1), and its short problem text."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or not problem:
        return i18n.text("nebula.not_yaml", path=path, problem=str(error).splitlines()[0])
    return i18n.text("nebula.not_yaml_at", path=path, line=mark.line + 1, column=mark.column + 1, problem=problem)


def update_config_file(path: Path, host_id: int, peers: Iterable[int]) -> ConfigUpdate:
    """Merge the fleet's part into the Nebula config at ``path``; rewrite it only if that changes it.

    The new file replaces the old one atomically, with the old one's permissions.
    """
    path = Path(path)
    current = read_config(path)
    merged = merge_fleet_config(current, host_id, peers, path=path)
    before, after = _route_list(current), _route_list(merged)
    if merged == current:
        return ConfigUpdate(path, False, before, after)

    mode = path.stat().st_mode & 0o7777
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as output:
            output.write(dump_yaml(merged))
            output.flush()
            os.fsync(output.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logger.info("updated Nebula config %s: unsafe routes %s", path, ", ".join(after) or "none")
    return ConfigUpdate(path, True, before, after)


def _nebula_cert(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which("nebula-cert") is None:
        raise FlatnetError(i18n.text("nebula.tool_missing", tool="nebula-cert"))
    result = subprocess.run(["nebula-cert", *arguments], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        raise FlatnetError(i18n.text(
            "nebula.cert_failed", command=arguments[0], status=result.returncode, output=output[-1] if output else "",
        ))
    return result


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise FlatnetError(i18n.text("nebula.exists", path=path))


def create_ca(name: str, out_crt: Path, out_key: Path) -> None:
    """Create a Nebula CA with nebula-cert."""
    _refuse_existing(out_crt, out_key)
    _nebula_cert(["ca", "-name", name, "-out-crt", str(out_crt), "-out-key", str(out_key)])


def sign(
    host_id: int, *, ca_crt: Path, ca_key: Path, out_crt: Path, out_key: Path,
    name: str | None = None, duration: str | None = None,
) -> None:
    """Sign host ``host_id``'s certificate: address 10.100.0.h/24, carrying subnet 10.100.h.0/24."""
    if not 1 <= host_id <= 254:
        raise FlatnetError(i18n.text("nebula.invalid_host_id", value=host_id))
    _refuse_existing(out_crt, out_key)
    arguments = [
        "sign", "-ca-crt", str(ca_crt), "-ca-key", str(ca_key), "-name", name or f"h{host_id}",
        "-ip", f"{nebula_address(host_id)}/{NEBULA_NETWORK.prefixlen}", "-subnets", str(container_subnet(host_id)),
        "-out-crt", str(out_crt), "-out-key", str(out_key),
    ]
    if duration:
        arguments += ["-duration", duration]
    _nebula_cert(arguments)


@dataclasses.dataclass(frozen=True)
class Certificate:
    """The public part of a Nebula certificate that flatnet checks."""

    path: Path
    name: str
    networks: tuple[ipaddress.IPv4Interface, ...]
    subnets: tuple[ipaddress.IPv4Network, ...]

    def problems(self, host_id: int) -> list[str]:
        """Return what is wrong with this certificate for host ``host_id``, in the locale's language."""
        problems = []
        wanted = ipaddress.IPv4Interface(f"{nebula_address(host_id)}/{NEBULA_NETWORK.prefixlen}")
        if wanted not in self.networks:
            found = ", ".join(map(str, self.networks)) or "-"
            problems.append(i18n.text("nebula.cert_wrong_ip", path=self.path, found=found, wanted=wanted))
        if container_subnet(host_id) not in self.subnets:
            found = ", ".join(map(str, self.subnets)) or "-"
            problems.append(i18n.text(
                "nebula.cert_no_subnet", path=self.path, found=found, wanted=container_subnet(host_id), host=host_id,
            ))
        return problems


def read_certificate(path: Path) -> Certificate:
    """Read a certificate's name, addresses and subnets with ``nebula-cert print -json``."""
    if shutil.which("nebula-cert") is None:
        raise FlatnetError(i18n.text("nebula.tool_missing", tool="nebula-cert"))
    result = subprocess.run(
        ["nebula-cert", "print", "-json", "-path", str(path)], capture_output=True, text=True, timeout=30, check=False,
    )
    if result.returncode != 0:
        raise FlatnetError(i18n.text("nebula.cert_unreadable", path=path, output=(result.stderr or result.stdout).strip()))
    details = json.loads(result.stdout.splitlines()[0])["details"]
    return Certificate(
        path=Path(path),
        name=details.get("name", ""),
        networks=tuple(ipaddress.IPv4Interface(value) for value in details.get("ips") or []),
        subnets=tuple(ipaddress.IPv4Network(value) for value in details.get("subnets") or []),
    )


def certificate_path(config_path: Path) -> Path:
    """Return the certificate file named by ``pki.cert`` in a Nebula config, relative to the config's directory."""
    config = read_config(config_path)
    pki = config.get("pki") or {}
    cert = pki.get("cert") if isinstance(pki, dict) else None
    if not isinstance(cert, str) or not cert or "BEGIN NEBULA CERTIFICATE" in cert:
        raise FlatnetError(i18n.text("nebula.no_cert_path", path=config_path))
    return (config_path.parent / cert) if not os.path.isabs(cert) else Path(cert)


def restart(target: str) -> str:
    """Restart Nebula: a systemd unit with ``systemctl restart``, or a running process by its PID.

    Return a line saying what was restarted.
    """
    if target.isdigit():
        new_pid = restart_process(int(target))
        return i18n.text("nebula.restarted_pid", old=target, new=new_pid)
    if not target or "/" in target or target.startswith("-"):
        raise FlatnetError(i18n.text("nebula.invalid_target", target=target))
    if shutil.which("systemctl") is None:
        raise FlatnetError(i18n.text("nebula.no_systemctl"))
    result = subprocess.run(["systemctl", "restart", target], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise FlatnetError(i18n.text("nebula.restart_failed", target=target, output=(result.stderr or result.stdout).strip()))
    logger.info("restarted Nebula unit %s", target)
    return i18n.text("nebula.restarted_unit", unit=target)


def _process_has_ended(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    # A killed orphan may stay a zombie until PID 1 reaps it; it has ended all the same.
    return stat.rpartition(")")[2].split()[0] == "Z"


def _output_target(pid: int, descriptor: int) -> str:
    """Return the file a process's stdout or stderr writes to, or /dev/null for a pipe or socket."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
    except OSError:
        return os.devnull
    return target if target.startswith("/") and not target.endswith(" (deleted)") else os.devnull


def restart_process(pid: int) -> int:
    """Stop the nebula process ``pid`` and start its command line again; return the new PID.

    The new process runs in the old one's network namespace, working directory and
    environment, appends to the files its output went to, and leads a session of its own.
    """
    try:
        argv = [part.decode() for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if part]
    except (FileNotFoundError, ProcessLookupError):
        raise FlatnetError(i18n.text("nebula.invalid_target", target=pid)) from None
    if not argv or os.path.basename(argv[0]) != "nebula" or _process_has_ended(pid):
        raise FlatnetError(i18n.text("nebula.not_nebula", pid=pid, command=" ".join(argv) or "?"))
    cwd = os.readlink(f"/proc/{pid}/cwd")
    environ = dict(
        entry.decode(errors="replace").split("=", 1)
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in entry
    )
    stdout, stderr = _output_target(pid, 1), _output_target(pid, 2)
    # The namespace outlives the process only while something holds it open.
    netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        _stop(pid)
        return _start_in(netns, argv, cwd, environ, stdout, stderr)
    finally:
        os.close(netns)


def _stop(pid: int) -> None:
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline:
            if _process_has_ended(pid):
                return
            time.sleep(0.02)
    raise FlatnetError(i18n.text("nebula.survived", pid=pid, seconds=STOP_SECONDS))


def _start_in(netns: int, argv: list[str], cwd: str, environ: dict[str, str], stdout: str, stderr: str) -> int:
    libc = ctypes.CDLL(None, use_errno=True)

    def enter_namespace() -> None:
        # Runs in the child between fork and exec, where only this thread exists.
        if libc.setns(netns, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")

    out = open(stdout, "ab")
    err = out if stderr == stdout else open(stderr, "ab")
    try:
        process = subprocess.Popen(
            argv, cwd=cwd, env=environ, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True, pass_fds=(netns,), preexec_fn=enter_namespace,
        )
    finally:
        out.close()
        if err is not out:
            err.close()
    time.sleep(0.2)
    status = process.poll()
    if status is not None:
        raise FlatnetError(i18n.text("nebula.exited", pid=process.pid, status=status))
    logger.info("restarted nebula %s as pid %d", " ".join(argv), process.pid)
    return process.pid
