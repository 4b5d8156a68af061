"""`flatnet install` and `flatnet uninstall`: put flatnet on a real host, or take it off.

Install writes the plugin launcher, the CNI network config, a gateway config
and a systemd unit, each from the templates in ``config/``. An existing file
with other content is never overwritten without ``--force``. ``--root`` installs
under another directory (as a package build's DESTDIR does), which is how the
tests check that uninstall leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sysconfig
import sys
from pathlib import Path

from flatnet import i18n
from flatnet.errors import FlatnetError

PLUGIN_PATH = Path("/opt/cni/bin/flatnet")
CONFLIST_PATH = Path("/etc/cni/net.d/flatnet.conflist")
GATEWAY_CONFIG_PATH = Path("/etc/flatnet/gateway.toml")
UNIT_PATH = Path("/etc/systemd/system/flatnet-gateway.service")
DATA_DIR = Path("/var/lib/flatnet")
LOG_DIR = Path("/var/log/flatnet")
# Every file install writes carries this marker, so uninstall removes only flatnet's own files.
MARKER = "flatnet-installed"
# Directories install created, so that uninstall can remove them again once empty.
MANIFEST_PATH = Path("/etc/flatnet/installed-directories.json")

i18n.define({
    "install.wrote": ("wrote      {path}", "書き込み   {path}"),
    "install.would_write": ("would write {path}", "書き込み予定 {path}"),
    "install.unchanged": ("unchanged  {path}", "変更なし   {path}"),
    "install.made_dir": ("created    {path}/", "作成       {path}/"),
    "install.would_make_dir": ("would create {path}/", "作成予定   {path}/"),
    "install.removed": ("removed    {path}", "削除       {path}"),
    "install.would_remove": ("would remove {path}", "削除予定   {path}"),
    "install.kept": ("kept       {path} ({reason})", "保持       {path} ({reason})"),
    "install.kept_data": ("holds the event log; remove it with --purge", "イベントログを含むため。--purge で削除します"),
    "install.kept_foreign": ("not written by flatnet install", "flatnet install が書いたファイルではないため"),
    "install.exists": (
        "{path} already exists with other content; rerun with --force to overwrite it",
        "{path} は別の内容ですでに存在します。上書きするには --force を付けて再実行してください",
    ),
    "install.needs_root": (
        "flatnet install writes under /opt, /etc and /var: run it as root, or add --dry-run or --root DIR",
        "flatnet install は /opt、/etc、/var に書き込みます。root で実行するか、--dry-run または --root DIR を付けてください",
    ),
    "install.no_templates": (
        "templates not found in {path}; run flatnet install from a flatnet checkout (pip install -e)",
        "テンプレートが {path} に見つかりません。flatnet のチェックアウト (pip install -e) から実行してください",
    ),
    "install.next": (
        "\nNext steps:\n"
        "  1. Add one [[peers]] table per other host to {config}\n"
        "  2. Give this host a Nebula certificate carrying 10.100.{host_id}.0/24 and routes to the peers' subnets\n"
        "  3. systemctl daemon-reload && systemctl enable --now flatnet-gateway\n"
        "  4. podman run --network flatnet ...",
        "\n次の手順:\n"
        "  1. {config} に他のホストごとの [[peers]] テーブルを追加する\n"
        "  2. このホストに 10.100.{host_id}.0/24 を含む Nebula 証明書と、他ホストのサブネットへの経路を用意する\n"
        "  3. systemctl daemon-reload && systemctl enable --now flatnet-gateway\n"
        "  4. podman run --network flatnet ...",
    ),
    "install.next_uninstall": (
        "\nStop the service first if it runs: systemctl disable --now flatnet-gateway",
        "\nサービスが動いている場合は先に停止してください: systemctl disable --now flatnet-gateway",
    ),
})


@dataclasses.dataclass(frozen=True)
class PlannedFile:
    path: Path
    content: str
    mode: int


def templates_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "config"


def _under(root: Path, path: Path) -> Path:
    return root / path.relative_to("/")


def plugin_launcher(python: str) -> str:
    """Return the script podman runs as the plugin: this installation's Python started without ``site``.

    Skipping ``site`` saves about 12 ms on every call, VERSION included; the
    launcher finds the rest of flatnet itself when it has to run in-process.
    """
    from flatnet.cni import launcher

    script = launcher.render_script(python, sysconfig.get_paths()["purelib"], str(Path(launcher.__file__).parent))
    shebang, rest = script.split("\n", 1)
    return f"{shebang}\n# {MARKER}\n{rest}"


def conflist(host_id: int, template: Path) -> str:
    document = json.loads(template.read_text())
    plugin = document["plugins"][0]
    plugin.update({
        "hostId": host_id,
        "ipRange": f"10.100.{host_id}.0/24",
        "gateway": f"10.100.{host_id}.1",
        "registryEndpoints": [f"http://10.100.0.{host_id}:8080"],
        "dataDir": str(DATA_DIR),
    })
    # JSON has no comments: the marker is a plugin key that the runtime passes through
    # untouched and the plugin ignores.
    plugin[MARKER] = True
    return json.dumps(document, indent=2) + "\n"


def plan(host_id: int, python: str = sys.executable) -> list[PlannedFile]:
    """List every file install writes for ``host_id``, with its content."""
    if not 1 <= host_id <= 254:
        raise FlatnetError(f"host id {host_id} is invalid: it must be from 1 to 254, unique in the fleet")
    templates = templates_dir()
    if not (templates / "cni" / "flatnet.conflist").exists():
        raise FlatnetError(i18n.text("install.no_templates", path=templates))

    gateway = (templates / "gateway" / "gateway.toml").read_text().format(host_id=host_id)
    unit = (templates / "systemd" / "flatnet-gateway.service").read_text().format(
        python=python, config=GATEWAY_CONFIG_PATH, docs=templates.parent / "docs" / "design.md",
    )
    return [
        PlannedFile(PLUGIN_PATH, plugin_launcher(python), 0o755),
        PlannedFile(CONFLIST_PATH, conflist(host_id, templates / "cni" / "flatnet.conflist"), 0o644),
        PlannedFile(GATEWAY_CONFIG_PATH, f"# {MARKER}\n" + gateway, 0o644),
        PlannedFile(UNIT_PATH, f"# {MARKER}\n" + unit, 0o644),
    ]


def _require_root(root: Path, dry_run: bool) -> None:
    if not dry_run and root == Path("/") and os.geteuid() != 0:
        raise FlatnetError(i18n.text("install.needs_root"))


def install(host_id: int, *, root: Path = Path("/"), dry_run: bool = False, force: bool = False) -> list[str]:
    """Write flatnet's files for ``host_id`` under ``root`` and return the lines to print."""
    _require_root(root, dry_run)
    files = plan(host_id)

    # Check every file before writing any, so a refusal leaves the host as it was.
    for planned in files:
        target = _under(root, planned.path)
        if target.exists() and target.read_text() != planned.content and not force:
            raise FlatnetError(i18n.text("install.exists", path=target))

    lines = []
    created: list[Path] = []
    for directory in (DATA_DIR, LOG_DIR):
        target = _under(root, directory)
        if not target.is_dir():
            lines.append(i18n.text("install.would_make_dir" if dry_run else "install.made_dir", path=target))
            if not dry_run:
                created += _make_directories(target, 0o750)
    for planned in files:
        target = _under(root, planned.path)
        if target.exists() and target.read_text() == planned.content:
            lines.append(i18n.text("install.unchanged", path=target))
            continue
        lines.append(i18n.text("install.would_write" if dry_run else "install.wrote", path=target))
        if not dry_run:
            created += _make_directories(target.parent, 0o755)
            _write(target, planned.content, planned.mode)
    if created:
        _record_created(_under(root, MANIFEST_PATH), created)

    if not dry_run and root == Path("/") and Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "daemon-reload"], check=False)
    lines.append(i18n.text("install.next", config=_under(root, GATEWAY_CONFIG_PATH), host_id=host_id))
    return lines


def _make_directories(path: Path, mode: int) -> list[Path]:
    """Create ``path`` and its missing parents, and return those created, outermost first."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=mode)
    return list(reversed(missing))


def _record_created(manifest: Path, created: list[Path]) -> None:
    known = json.loads(manifest.read_text())["directories"] if manifest.exists() else []
    known += [str(path) for path in created if str(path) not in known]
    _make_directories(manifest.parent, 0o755)
    _write(manifest, json.dumps({MARKER: True, "directories": known}, indent=2) + "\n", 0o644)


def _write(path: Path, content: str, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(content)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def uninstall(*, root: Path = Path("/"), dry_run: bool = False, purge: bool = False) -> list[str]:
    """Remove what install wrote under ``root``, and with ``purge`` also the data and log directories."""
    _require_root(root, dry_run)
    lines = []
    for path in (PLUGIN_PATH, CONFLIST_PATH, GATEWAY_CONFIG_PATH, UNIT_PATH):
        target = _under(root, path)
        if not target.exists():
            continue
        if MARKER not in target.read_text(errors="replace"):
            lines.append(i18n.text("install.kept", path=target, reason=i18n.text("install.kept_foreign")))
            continue
        lines.append(i18n.text("install.would_remove" if dry_run else "install.removed", path=target))
        if not dry_run:
            target.unlink()

    manifest = _under(root, MANIFEST_PATH)
    created = json.loads(manifest.read_text())["directories"] if manifest.exists() else []
    if not dry_run and manifest.exists():
        manifest.unlink()
    for directory in (DATA_DIR, LOG_DIR):
        target = _under(root, directory)
        if not target.exists():
            continue
        if purge:
            lines.append(i18n.text("install.would_remove" if dry_run else "install.removed", path=f"{target}/"))
            if not dry_run:
                shutil.rmtree(target)
        else:
            lines.append(i18n.text("install.kept", path=f"{target}/", reason=i18n.text("install.kept_data")))

    # Directories install created go too, deepest first, once nothing else is in them.
    kept = set() if purge else {_under(root, DATA_DIR), _under(root, LOG_DIR)}
    for directory in sorted(map(Path, created), key=lambda p: len(p.parts), reverse=True):
        if directory in kept:
            continue
        if not dry_run and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()

    if not dry_run and root == Path("/") and Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "daemon-reload"], check=False)
    lines.append(i18n.text("install.next_uninstall"))
    return lines

