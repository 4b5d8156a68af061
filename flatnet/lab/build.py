"""`lab up`: build the namespaces, certificates, configuration and processes of a new lab.

The order matters. Gateways start before Nebula because they bind their API address with
IP_FREEBIND, and their Python start-up then overlaps Nebula's. The lighthouse's Nebula comes
up before the other hosts', because a first handshake packet sent to a lighthouse that does
not listen yet is lost and retried only after about 300 ms. A gateway is checked for health
last, since its API address exists only once its host's Nebula is up.
"""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from flatnet import i18n
from flatnet.cni import launcher
from flatnet.errors import FlatnetError
from flatnet.lab import config, layout, namespaces, pki, state
from flatnet.lab.config import LabSettings
from flatnet.lab.image import IMAGE, IMAGE_SHORT_NAME, ensure_image
from flatnet.lab.lab import Lab, wait_ready
from flatnet.lab.layout import LabPaths
from flatnet.lab.processes import TOOL_PACKAGES, require_tool
from flatnet.lab.progress import Progress, StepTimer, ignore_progress
from flatnet.lab.services import Service, Startup, start_service
from flatnet.lab.state import LabState, ProcessRecord
from flatnet.lab.teardown import down
from flatnet.logs import lab as log

i18n.define({
    "lab.invalid_hosts": (
        "--hosts {value} is out of range: a lab has 1 to {maximum} hosts (at most {maximum} because the"
        " LAN client uses 198.18.0.100)",
        "--hosts {value} は範囲外です。ホスト数は 1 から {maximum} です（LAN クライアントが 198.18.0.100 を使うため、"
        "上限は {maximum} です）",
    ),
    "lab.invalid_ttl": (
        "--ttl {value} is invalid: give the registry TTL as a whole number of seconds, at least 1",
        "--ttl {value} は無効です。レジストリーの TTL は 1 以上の整数（秒）で指定してください",
    ),
    "lab.invalid_mtu": (
        "--mtu {value} is out of range: use {minimum} to {maximum}, because Nebula adds {overhead} bytes"
        " to each packet on the LAN's {lan} byte MTU",
        "--mtu {value} は範囲外です。Nebula は LAN の MTU {lan} バイトに対してパケットごとに {overhead} バイトを"
        "加えるため、{minimum} から {maximum} を指定してください",
    ),
    "lab.invalid_member": (
        "{option} {value} names no host of this lab: use a host id from 1 to {hosts}",
        "{option} {value} はこのラボのホストではありません。1 から {hosts} のホスト ID を指定してください",
    ),
    "lab.lighthouse_later": (
        "--join-later {host}: host {host} is the Nebula lighthouse and must be in the fleet from the start",
        "--join-later {host}: ホスト {host} は Nebula のライトハウスなので、最初からフリートに入っている必要があります",
    ),
    "lab.exists": (
        "a lab already exists ({evidence}); run `{command}` first",
        "ラボがすでに存在します（{evidence}）。先に `{command}` を実行してください",
    ),
    "lab.running_elsewhere": (
        "a lab built in {owner} is running ({evidence}), and only one lab runs at a time;"
        " take it down first with `{command}`",
        "{owner} で構築したラボが稼働中です（{evidence}）。同時に動かせるラボは 1 つだけです。"
        "先に `{command}` で削除してください",
    ),
    "lab.owner_missing": (
        "lab namespaces exist ({evidence}), but no lab directory is recorded as their owner;"
        " remove them first with `flatnet lab down --force`",
        "ラボの名前空間が存在します（{evidence}）が、所有するラボのディレクトリが記録されていません。"
        "先に `flatnet lab down --force` で削除してください",
    ),
    "lab.dir_foreign": (
        "{path} is not empty and was not made by `flatnet lab up`; choose another directory"
        " with FLATNET_LAB_DIR or empty this one",
        "{path} は空ではなく、`flatnet lab up` が作ったものでもありません。FLATNET_LAB_DIR で別のディレクトリを"
        "指定するか、このディレクトリを空にしてください",
    ),
    "lab.plugin_missing": (
        "the CNI plugin {path} is missing; install flatnet into this environment (pip install -e .)",
        "CNI プラグイン {path} がありません。この環境に flatnet をインストールしてください（pip install -e .）",
    ),
    "lab.step_namespaces": ("namespaces and LAN ({hosts} host(s) + client)", "名前空間と LAN（ホスト {hosts} 台 + クライアント）"),
    "lab.step_pki": ("Nebula certificates", "Nebula 証明書"),
    "lab.step_config": ("configuration files", "設定ファイル"),
    "lab.step_gateways_started": ("gateways started", "ゲートウェイを起動"),
    "lab.step_image_imported": ("image {image} imported", "イメージ {image} をインポート"),
    "lab.step_image_present": ("image {image} present", "イメージ {image} は導入済み"),
    "lab.step_lighthouse": ("Nebula lighthouse h1 up", "Nebula ライトハウス h1 起動完了"),
    "lab.step_nebula": ("Nebula up on every host", "全ホストの Nebula 起動完了"),
    "lab.step_gateways_healthy": ("gateways healthy", "ゲートウェイのヘルスチェック完了"),
    "lab.step_up_total": ("lab up in {path}", "ラボ起動 {path}"),
    "lab.up_failed": (
        "lab up failed; removing what it made",
        "lab up が失敗しました。作成したものを削除します",
    ),
})

DEFAULT_HOSTS = 2
DEFAULT_TTL = 300
DEFAULT_MTU = 1300
LAN_MTU = 1500
NEBULA_OVERHEAD = 60
MIN_MTU = 576
MAX_MTU = LAN_MTU - NEBULA_OVERHEAD

def validate_settings(
    hosts: int, ttl: int, mtu: int, *, wsl: Sequence[int] = (), joined_later: Sequence[int] = (),
) -> LabSettings:
    if not 1 <= hosts <= layout.MAX_HOSTS:
        raise FlatnetError(i18n.text("lab.invalid_hosts", value=hosts, maximum=layout.MAX_HOSTS))
    if ttl < 1:
        raise FlatnetError(i18n.text("lab.invalid_ttl", value=ttl))
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise FlatnetError(i18n.text(
            "lab.invalid_mtu", value=mtu, minimum=MIN_MTU, maximum=MAX_MTU,
            overhead=NEBULA_OVERHEAD, lan=LAN_MTU,
        ))
    for option, values in (("--wsl", wsl), ("--join-later", joined_later)):
        for value in values:
            if not 1 <= value <= hosts:
                raise FlatnetError(i18n.text("lab.invalid_member", option=option, value=value, hosts=hosts))
    if config.LIGHTHOUSE_ID in joined_later:
        raise FlatnetError(i18n.text("lab.lighthouse_later", host=config.LIGHTHOUSE_ID))
    return LabSettings(
        hosts=hosts, ttl=ttl, mtu=mtu, wsl=tuple(sorted(set(wsl))), joined_later=tuple(sorted(set(joined_later))),
    )


def cni_plugin_path() -> Path:
    """Return flatnet's CNI plugin: the console script next to this Python interpreter."""
    return Path(sys.executable).parent / "flatnet-cni"


def _reject_existing_lab(paths: LabPaths) -> None:
    """Raise unless no lab namespace exists and the lab directory is missing or empty."""
    leftovers = namespaces.lab_namespaces()
    if leftovers:
        evidence = ", ".join(f"/run/netns/{name}" for name in leftovers)
        owner = namespaces.recorded_owner()
        if owner is None and paths.state_file.exists():
            # A lab built before flatnet recorded owners: its lab.json is the only evidence.
            owner = paths.root
        if owner is None:
            raise FlatnetError(i18n.text("lab.owner_missing", evidence=evidence))
        command = f"{layout.lab_dir_assignment(owner)}flatnet lab down"
        key = "lab.exists" if owner == paths.root else "lab.running_elsewhere"
        raise FlatnetError(i18n.text(key, owner=owner, evidence=evidence, command=command))
    if not paths.root.is_dir() or not any(paths.root.iterdir()):
        return
    if paths.state_file.exists() or paths.marker.exists():
        evidence = paths.state_file if paths.state_file.exists() else paths.root
        command = f"{layout.lab_dir_assignment(paths.root)}flatnet lab down"
        raise FlatnetError(i18n.text("lab.exists", evidence=evidence, command=command))
    raise FlatnetError(i18n.text("lab.dir_foreign", path=paths.root))


def up(
    *, hosts: int = DEFAULT_HOSTS, ttl: int = DEFAULT_TTL, mtu: int = DEFAULT_MTU,
    lab_dir: Path | str | None = None, progress: Progress = ignore_progress,
    wsl: Sequence[int] = (), joined_later: Sequence[int] = (),
) -> Lab:
    """Build a lab of ``hosts`` hosts and a LAN client, and return it once every gateway is healthy.

    Hosts in ``wsl`` run as WSL2 behind a namespace that plays Windows; hosts in
    ``joined_later`` are built but not started until `Lab.join`. Raise FlatnetError if a lab
    exists already. If a step fails, remove what was made (as `lab down` does) and raise the
    step's error.
    """
    settings = validate_settings(hosts, ttl, mtu, wsl=wsl, joined_later=joined_later)
    namespaces.require_root("up")
    paths = LabPaths(Path(lab_dir).absolute() if lab_dir else layout.default_lab_dir())
    for tool in TOOL_PACKAGES:
        require_tool(tool)
    if settings.wsl:
        require_tool("iptables")
    plugin = cni_plugin_path()
    if not plugin.exists():
        raise FlatnetError(i18n.text("lab.plugin_missing", path=plugin))
    _reject_existing_lab(paths)

    paths.root.mkdir(parents=True, exist_ok=True)
    paths.marker.touch()
    lab_state = state.new_state(paths, settings, IMAGE)
    state.write_state(paths, lab_state)
    namespaces.record_owner(paths.root)
    try:
        _build(paths, lab_state, progress)
    except BaseException:
        progress(i18n.text("lab.up_failed"))
        _tear_down_after_failure(paths, progress)
        raise
    return Lab(paths, lab_state)


def _tear_down_after_failure(paths: LabPaths, progress: Progress) -> None:
    try:
        down(lab_dir=paths.root, progress=progress)
    except FlatnetError as error:
        # The original error is what the caller needs; the leftovers are logged for the person.
        log.error("removing the half-built lab left something behind: %s", error)


def _build(paths: LabPaths, lab_state: LabState, progress: Progress) -> None:
    settings = lab_state.settings
    steps = StepTimer(progress)

    _create_namespaces(settings)
    steps.done("lab.step_namespaces", hosts=settings.hosts)

    pki.create_pki(paths, settings.host_ids)
    steps.done("lab.step_pki")

    write_host_files(paths, settings)
    steps.done("lab.step_config")

    fleet = settings.initial_fleet
    gateways = [_start(paths, lab_state, Service.GATEWAY, host_id) for host_id in fleet]
    steps.done("lab.step_gateways_started")

    # The image is imported while the gateways import their Python modules.
    imported = ensure_image(paths, layout.host_name(1))
    steps.done("lab.step_image_imported" if imported else "lab.step_image_present", image=IMAGE_SHORT_NAME)

    lighthouse = _start(paths, lab_state, Service.NEBULA, config.LIGHTHOUSE_ID)
    wait_ready(lighthouse)
    steps.done("lab.step_lighthouse")
    others = [
        _start(paths, lab_state, Service.NEBULA, host_id)
        for host_id in fleet if host_id != config.LIGHTHOUSE_ID
    ]
    for startup in others:
        wait_ready(startup)
    steps.done("lab.step_nebula")

    for startup in gateways:
        wait_ready(startup)
    steps.done("lab.step_gateways_healthy")
    steps.total("lab.step_up_total", path=paths.root)


def _create_namespaces(settings: LabSettings) -> None:
    namespaces.create_lan()
    for host_id in settings.host_ids:
        netns = layout.netns_name(layout.host_name(host_id))
        if settings.is_wsl(host_id):
            namespaces.create_wsl_host(host_id)
        else:
            namespaces.join_lan(netns, str(layout.lan_address(host_id)))
        namespaces.enable_ip_forward(netns)
    namespaces.join_lan(layout.netns_name(layout.CLIENT), str(layout.CLIENT_LAN_ADDRESS))


def write_host_files(paths: LabPaths, settings: LabSettings) -> None:
    """Write every host's configuration files and the CNI plugin into the lab's plugin dir.

    The plugin is a launcher started with ``python -SI``, which skips ``site``:
    VERSION takes about 9 ms where pip's console script ``flatnet-cni`` takes
    about 21 (bench/cni.py measures both).
    """
    paths.cni_bin_dir.mkdir()
    launcher_path = paths.cni_bin_dir / "flatnet"
    launcher_path.write_text(launcher.render_script(
        sys.executable, sysconfig.get_paths()["purelib"], str(Path(launcher.__file__).parent)
    ))
    launcher_path.chmod(0o755)
    plugin_dirs = [paths.cni_bin_dir, Path("/usr/lib/cni")]

    for host_id in settings.host_ids:
        name = layout.host_name(host_id)
        paths.host_dir(name).mkdir()
        paths.data_dir(name).mkdir()
        paths.cni_config_dir(name).mkdir()
        paths.nebula_config(name).write_text(config.render_nebula_config(paths, host_id, settings))
        paths.gateway_config(name).write_text(config.render_gateway_config(paths, host_id, settings))
        paths.containers_conf(name).write_text(config.render_containers_conf(paths, host_id, plugin_dirs))
        paths.conflist(name).write_text(config.render_conflist(paths, host_id, settings))


def _start(paths: LabPaths, lab_state: LabState, service: Service, host_id: int) -> Startup:
    """Start a process and record its PID in lab.json at once, so a failed up can still stop it."""
    startup = start_service(service, paths, host_id, lab_state.settings)
    with state.locked(paths):
        lab_state.members[startup.host].processes[service.value] = ProcessRecord(startup.pid, state.now_iso())
        state.write_state(paths, lab_state)
    return startup
