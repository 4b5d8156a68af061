"""`flatnet doctor <host-id>`: the reachability checklist from this host to one peer.

The checks run in the order a packet needs them and stop at the first broken link:

1. route: the kernel sends the peer's subnet into Nebula (mode ``dev``) or to the next hop (``via``);
2. tunnel: the peer's Nebula address replies to a ping;
3. certificates: this host's certificate carries its subnet (read from the Nebula config, when
   Nebula runs here), and a ping to the peer's bridge gets a reply or an ICMP error, which it
   cannot when Nebula drops it because the peer's certificate lacks its subnet;
4. bridge: the peer's bridge address replies to that ping, rather than the peer sending an ICMP error;
5. container: a container of the peer replies to a ping sent from this host's bridge address,
   the path container traffic takes.

Pings are ICMP echo requests on a raw socket, so doctor needs root (CAP_NET_RAW).
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import json
import os
import select
import socket
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

from flatnet import i18n, nebula
from flatnet.errors import FlatnetError
from flatnet.gateway.route_settings import RouteMode
from flatnet.gateway.settings import Settings
from flatnet.routes import RouteTable, container_subnet

i18n.define({
    "doctor.title": ("flatnet doctor: host {host} to host {peer}", "flatnet doctor: ホスト {host} からホスト {peer} へ"),
    "doctor.ok": ("ok", "正常"),
    "doctor.broken": ("BROKEN", "故障"),
    "doctor.skipped": ("skipped", "省略"),
    "doctor.not_checked": ("not checked", "未確認"),
    "doctor.first_broken": ("first broken link: {step}", "最初に壊れているリンク: {step}"),
    "doctor.all_ok": ("every link to host {peer} works", "ホスト {peer} へのすべてのリンクが正常です"),
    "doctor.step_route": ("kernel route", "カーネルの経路"),
    "doctor.step_tunnel": ("Nebula tunnel", "Nebula トンネル"),
    "doctor.step_certificates": ("certificates", "証明書"),
    "doctor.step_bridge": ("peer's bridge", "ピアのブリッジ"),
    "doctor.step_container": ("container", "コンテナ"),
    "doctor.not_a_peer": (
        "host {peer} is not a peer in {config}; use one of: {peers}",
        "ホスト {peer} は {config} のピアではありません。次のいずれかを指定してください: {peers}",
    ),
    "doctor.needs_root": (
        "flatnet doctor sends pings on a raw ICMP socket and needs root (CAP_NET_RAW); run it as root",
        "flatnet doctor は raw ICMP ソケットで ping を送るため root（CAP_NET_RAW）が必要です。root で実行してください",
    ),
    "doctor.route_none": (
        "the kernel has no route to {address}; run `flatnet routes apply` or check [routes]",
        "カーネルに {address} への経路がありません。`flatnet routes apply` を実行するか [routes] を確認してください",
    ),
    "doctor.route_elsewhere": (
        "the kernel sends {address} {actual}, not {expected}; see `flatnet routes show`",
        "カーネルは {address} を {expected} ではなく {actual} へ送ります。`flatnet routes show` を確認してください",
    ),
    "doctor.route_ok": ("{address} goes {actual}{flatnet}", "{address} は {actual} へ送られます{flatnet}"),
    "doctor.route_flatnet": (" (flatnet's route {route})", "（flatnet の経路 {route}）"),
    "doctor.route_not_flatnet": (" (not by a route of flatnet's)", "（flatnet の経路ではありません）"),
    "doctor.ping_reply": ("{address} replied in {ms} ms", "{address} が {ms} ms で応答しました"),
    "doctor.tunnel_down": (
        "{address}, host {peer}'s Nebula address, did not reply to {tries} pings, so the tunnel is down: check that"
        " Nebula runs on both hosts, their logs, the lighthouse and UDP port 4242",
        "ホスト {peer} の Nebula アドレス {address} が {tries} 回の ping に応答しません。トンネルが切れています。"
        "両ホストで Nebula が動いているか、ログ、ライトハウス、UDP 4242 番ポートを確認してください",
    ),
    "doctor.tunnel_error": (
        "{address}, host {peer}'s Nebula address, sent an ICMP error: {error}",
        "ホスト {peer} の Nebula アドレス {address} が ICMP エラーを返しました: {error}",
    ),
    "doctor.own_cert_ok": ("this host's certificate {path} carries {subnet}", "このホストの証明書 {path} は {subnet} を含みます"),
    "doctor.own_cert_skipped": (
        "this host's certificate not read (no Nebula config at {path})",
        "このホストの証明書は読んでいません（{path} に Nebula 設定がありません）",
    ),
    "doctor.peer_cert_dropped": (
        "{address}, host {peer}'s bridge, sent no reply and no ICMP error came back: Nebula dropped the packets, most likely"
        " because host {peer}'s certificate does not carry {subnet} (check it with `nebula-cert print` on host {peer})",
        "ホスト {peer} のブリッジ {address} から応答も ICMP エラーもありません。Nebula がパケットを破棄しています。"
        "ホスト {peer} の証明書が {subnet} を含んでいない可能性が高いです（ホスト {peer} で `nebula-cert print` で確認してください）",
    ),
    "doctor.peer_cert_ok": (
        "packets to {subnet} pass Nebula, so host {peer}'s certificate carries it",
        "{subnet} へのパケットが Nebula を通るので、ホスト {peer} の証明書はそれを含んでいます",
    ),
    "doctor.bridge_error": (
        "host {peer} sent an ICMP error ({error}) for its bridge {address}, so the bridge is missing or down;"
        " it appears with the first container started there",
        "ホスト {peer} はブリッジ {address} について ICMP エラー（{error}）を返しました。ブリッジがないか停止しています。"
        "ブリッジは最初のコンテナが起動したときに作られます",
    ),
    "doctor.container_none": (
        "no container of host {peer} in this host's gateway view ({reason}); pass --container ADDRESS",
        "このホストのゲートウェイのビューにホスト {peer} のコンテナがありません（{reason}）。--container ADDRESS を指定してください",
    ),
    "doctor.container_silent": (
        "container {name} ({address}) did not reply to {tries} pings sent from {source}",
        "コンテナ {name}（{address}）が {source} からの {tries} 回の ping に応答しません",
    ),
    "doctor.container_error": (
        "container {name} ({address}) is unreachable from {source}: {error}",
        "コンテナ {name}（{address}）に {source} から到達できません: {error}",
    ),
    "doctor.container_ok": (
        "container {name} ({address}) replied to {source} in {ms} ms",
        "コンテナ {name}（{address}）が {source} からの ping に {ms} ms で応答しました",
    ),
})

PING_TRIES = 3
PING_TIMEOUT_SECONDS = 1.0
_ICMP_ECHO_REPLY = 0
_ICMP_UNREACHABLE = 3
_ICMP_ECHO_REQUEST = 8
_ICMP_TIME_EXCEEDED = 11
_UNREACHABLE_CODES = {0: "network unreachable", 1: "host unreachable", 3: "port unreachable", 13: "administratively prohibited"}


class Step(enum.Enum):
    ROUTE = "route"
    TUNNEL = "tunnel"
    CERTIFICATES = "certificates"
    BRIDGE = "bridge"
    CONTAINER = "container"


class Outcome(enum.Enum):
    OK = "ok"
    BROKEN = "broken"
    SKIPPED = "skipped"


@dataclasses.dataclass(frozen=True)
class Check:
    step: Step
    outcome: Outcome
    details: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Report:
    host_id: int
    peer: int
    checks: tuple[Check, ...]

    @property
    def first_broken(self) -> Check | None:
        return next((check for check in self.checks if check.outcome is Outcome.BROKEN), None)


class Answer(enum.Enum):
    REPLY = "reply"
    ERROR = "error"  # an ICMP error about our echo request came back
    SILENT = "silent"


@dataclasses.dataclass(frozen=True)
class Ping:
    answer: Answer
    milliseconds: float = 0.0
    error: str = ""


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo_request(identifier: int, sequence: int) -> bytes:
    payload = b"flatnet-doctor"
    header = struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, 0, identifier, sequence)
    return struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, _checksum(header + payload), identifier, sequence) + payload


def _classify(packet: bytes, target: str, identifier: int) -> Ping | None:
    """Classify a received IPv4 packet as the reply to our echo request or an ICMP error about it; None otherwise."""
    header_length = (packet[0] & 0x0F) * 4
    source = socket.inet_ntoa(packet[12:16])
    icmp_type, code = packet[header_length], packet[header_length + 1]
    if icmp_type == _ICMP_ECHO_REPLY:
        (reply_id,) = struct.unpack("!H", packet[header_length + 4:header_length + 6])
        if reply_id == identifier and source == target:
            return Ping(Answer.REPLY)
        return None
    if icmp_type not in (_ICMP_UNREACHABLE, _ICMP_TIME_EXCEEDED):
        return None
    inner = packet[header_length + 8:]
    inner_length = (inner[0] & 0x0F) * 4
    if len(inner) < inner_length + 8 or socket.inet_ntoa(inner[16:20]) != target:
        return None
    (inner_id,) = struct.unpack("!H", inner[inner_length + 4:inner_length + 6])
    if inner[inner_length] != _ICMP_ECHO_REQUEST or inner_id != identifier:
        return None
    if icmp_type == _ICMP_TIME_EXCEEDED:
        return Ping(Answer.ERROR, error=f"time exceeded, from {source}")
    return Ping(Answer.ERROR, error=f"{_UNREACHABLE_CODES.get(code, f'unreachable code {code}')}, from {source}")


def ping(
    address: ipaddress.IPv4Address, *, source: ipaddress.IPv4Address | None = None,
    tries: int = PING_TRIES, timeout: float = PING_TIMEOUT_SECONDS,
) -> Ping:
    """Send up to ``tries`` ICMP echo requests to ``address``; return the first reply or ICMP error, else SILENT."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError:
        raise FlatnetError(i18n.text("doctor.needs_root")) from None
    identifier = os.getpid() & 0xFFFF ^ int.from_bytes(os.urandom(2), "big")
    with sock:
        if source is not None:
            sock.bind((str(source), 0))
        for sequence in range(1, tries + 1):
            started = time.monotonic()
            try:
                sock.sendto(_echo_request(identifier, sequence), (str(address), 0))
            except OSError as error:
                return Ping(Answer.ERROR, error=error.strerror or str(error))
            deadline = started + timeout
            while (remaining := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([sock], [], [], remaining)
                if not readable:
                    break
                result = _classify(sock.recv(65535), str(address), identifier)
                if result is not None:
                    return dataclasses.replace(result, milliseconds=round((time.monotonic() - started) * 1000, 1))
    return Ping(Answer.SILENT)


def _describe_lookup(device: str | None, gateway: ipaddress.IPv4Address | None) -> str:
    words = []
    if gateway is not None:
        words += ["via", str(gateway)]
    if device is not None:
        words += ["dev", device]
    return " ".join(words)


def check_route(settings: Settings, peer: int) -> Check:
    bridge = container_subnet(peer).network_address + 1
    routes = settings.routes
    if routes.mode is RouteMode.VIA:
        expected = f"via {routes.via}"
    else:
        expected = f"dev {routes.device}"
    with RouteTable() as table:
        found = table.lookup(bridge)
        flatnet_routes = [r for r in table.routes() if r.is_flatnet and r.prefix == container_subnet(peer)]
    if found is None:
        return Check(Step.ROUTE, Outcome.BROKEN, (i18n.text("doctor.route_none", address=bridge),))

    actual = _describe_lookup(found.device, found.gateway)
    if routes.mode is RouteMode.VIA:
        right = found.gateway == routes.via
    else:
        right = found.device == routes.device and found.gateway is None
    if not right:
        detail = i18n.text("doctor.route_elsewhere", address=bridge, actual=actual, expected=expected)
        return Check(Step.ROUTE, Outcome.BROKEN, (detail,))
    if flatnet_routes:
        note = i18n.text("doctor.route_flatnet", route=flatnet_routes[0].describe())
    else:
        note = i18n.text("doctor.route_not_flatnet")
    return Check(Step.ROUTE, Outcome.OK, (i18n.text("doctor.route_ok", address=bridge, actual=actual, flatnet=note),))


def check_tunnel(peer: int) -> Check:
    address = nebula.nebula_address(peer)
    result = ping(address)
    if result.answer is Answer.REPLY:
        return Check(Step.TUNNEL, Outcome.OK, (i18n.text("doctor.ping_reply", address=address, ms=result.milliseconds),))
    if result.answer is Answer.ERROR:
        detail = i18n.text("doctor.tunnel_error", address=address, peer=peer, error=result.error)
    else:
        detail = i18n.text("doctor.tunnel_down", address=address, peer=peer, tries=PING_TRIES)
    return Check(Step.TUNNEL, Outcome.BROKEN, (detail,))


def check_certificates_and_bridge(settings: Settings, peer: int, nebula_config: Path) -> list[Check]:
    """Check this host's certificate by reading it, then the peer's and its bridge with one ping."""
    details = []
    if nebula_config.exists():
        certificate = nebula.read_certificate(nebula.certificate_path(nebula_config))
        problems = certificate.problems(settings.host_id)
        if problems:
            return [Check(Step.CERTIFICATES, Outcome.BROKEN, tuple(problems))]
        details.append(i18n.text("doctor.own_cert_ok", path=certificate.path, subnet=container_subnet(settings.host_id)))
    else:
        details.append(i18n.text("doctor.own_cert_skipped", path=nebula_config))

    bridge = container_subnet(peer).network_address + 1
    result = ping(bridge)
    subnet = container_subnet(peer)
    if result.answer is Answer.SILENT:
        details.append(i18n.text("doctor.peer_cert_dropped", address=bridge, peer=peer, subnet=subnet))
        return [Check(Step.CERTIFICATES, Outcome.BROKEN, tuple(details))]
    details.append(i18n.text("doctor.peer_cert_ok", subnet=subnet, peer=peer))
    checks = [Check(Step.CERTIFICATES, Outcome.OK, tuple(details))]
    if result.answer is Answer.ERROR:
        detail = i18n.text("doctor.bridge_error", peer=peer, address=bridge, error=result.error)
        checks.append(Check(Step.BRIDGE, Outcome.BROKEN, (detail,)))
    else:
        detail = i18n.text("doctor.ping_reply", address=bridge, ms=result.milliseconds)
        checks.append(Check(Step.BRIDGE, Outcome.OK, (detail,)))
    return checks


def peer_container(settings: Settings, peer: int) -> tuple[str, ipaddress.IPv4Address] | str:
    """Return the name and address of a container of ``peer`` from this host's gateway, or why there is none."""
    url = f"http://{settings.api_listen}/api/containers"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            entries = json.loads(response.read())
    except (OSError, ValueError) as error:
        return f"{url}: {getattr(error, 'reason', None) or error}"
    for entry in sorted(entries, key=lambda item: item.get("createdAt", "")):
        if entry.get("hostId") == peer and entry.get("ttl", 1) > 0:
            return entry.get("hostname", "?"), ipaddress.IPv4Address(entry["ip"])
    return f"{len(entries)} containers listed, none on host {peer}"


def _own_bridge(host_id: int) -> ipaddress.IPv4Address | None:
    """Return this host's bridge address if it exists here (it appears with the first container)."""
    address = container_subnet(host_id).network_address + 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return None
    return address


def check_container(settings: Settings, peer: int, container: ipaddress.IPv4Address | None) -> Check:
    if container is None:
        found = peer_container(settings, peer)
        if isinstance(found, str):
            return Check(Step.CONTAINER, Outcome.SKIPPED, (i18n.text("doctor.container_none", peer=peer, reason=found),))
        name, container = found
    else:
        name = str(container)
    source = _own_bridge(settings.host_id)
    result = ping(container, source=source)
    shown_source = str(source) if source is not None else str(nebula.nebula_address(settings.host_id))
    values = {"name": name, "address": container, "source": shown_source}
    if result.answer is Answer.REPLY:
        return Check(Step.CONTAINER, Outcome.OK, (i18n.text("doctor.container_ok", ms=result.milliseconds, **values),))
    if result.answer is Answer.ERROR:
        return Check(Step.CONTAINER, Outcome.BROKEN, (i18n.text("doctor.container_error", error=result.error, **values),))
    return Check(Step.CONTAINER, Outcome.BROKEN, (i18n.text("doctor.container_silent", tries=PING_TRIES, **values),))


def run_doctor(
    settings: Settings, peer: int, *, config_path: Path, nebula_config: Path,
    container: ipaddress.IPv4Address | None = None,
) -> Report:
    """Run the checklist from this host to ``peer`` and stop at the first broken link."""
    peers = sorted(p.host_id for p in settings.peers)
    if peer not in peers:
        raise FlatnetError(i18n.text(
            "doctor.not_a_peer", peer=peer, config=config_path, peers=", ".join(map(str, peers)) or "-",
        ))

    checks: list[Check] = []
    stages = (
        lambda: [check_route(settings, peer)],
        lambda: [check_tunnel(peer)],
        lambda: check_certificates_and_bridge(settings, peer, nebula_config),
        lambda: [check_container(settings, peer, container)],
    )
    for stage in stages:
        checks += stage()
        if checks[-1].outcome is Outcome.BROKEN:
            break
    return Report(settings.host_id, peer, tuple(checks))


def render(report: Report) -> str:
    """Return the report as lines for a person: one per step, then the verdict."""
    lines = [i18n.text("doctor.title", host=report.host_id, peer=report.peer)]
    done = {check.step: check for check in report.checks}
    labels = {step: i18n.text(f"doctor.step_{step.value}") for step in Step}
    width = max(len(label) for label in labels.values())
    for step in Step:
        check = done.get(step)
        if check is None:
            lines.append(f"  {'-':8} {labels[step]:{width}}  {i18n.text('doctor.not_checked')}")
            continue
        outcome = i18n.text(f"doctor.{check.outcome.value}")
        lines.append(f"  {outcome:8} {labels[step]:{width}}  {check.details[0]}")
        lines += [f"  {'':8} {'':{width}}  {detail}" for detail in check.details[1:]]
    broken = report.first_broken
    if broken is None:
        lines.append(i18n.text("doctor.all_ok", peer=report.peer))
    else:
        lines.append(i18n.text("doctor.first_broken", step=labels[broken.step]))
    return "\n".join(lines)
