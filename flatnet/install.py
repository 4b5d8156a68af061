"""`flatnet install` and `flatnet uninstall`: put flatnet on a real host, or take it off.

Install writes the plugin launcher, the CNI network config, a gateway config
and a systemd unit, each from the templates in ``config/``, and records the
SHA-256 of each file it wrote. An existing file with other content is never
overwritten without ``--force``, and uninstall removes a file whose content no
longer matches that record only with ``--force``. ``--root`` installs under
another directory (as a package build's DESTDIR does), which is how the tests
check that uninstall leaves nothing behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sysconfig
import sys
import tomllib
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
# Install's manifest. It lists the directories install created, so that uninstall can remove them
# again once empty, and each file's SHA-256, so that uninstall removes only unchanged files.
MANIFEST_PATH = Path("/etc/flatnet/install-manifest.json")
# The manifest of flatnet versions that recorded directories only.
OLD_MANIFEST_PATH = Path("/etc/flatnet/installed-directories.json")

i18n.define({
    "install.wrote": ("wrote      {path}", "書き込み   {path}"),
    "install.would_write": ("would write {path} (mode {mode}):", "書き込み予定 {path}（モード {mode}）:"),
    "install.unchanged": ("unchanged  {path}", "変更なし   {path}"),
    "install.made_dir": ("created    {path}/", "作成       {path}/"),
    "install.would_make_dir": ("would create {path}/", "作成予定   {path}/"),
    "install.removed": ("removed    {path}", "削除       {path}"),
    "install.would_remove": ("would remove {path}", "削除予定   {path}"),
    "install.kept": ("kept       {path} ({reason})", "保持       {path} ({reason})"),
    "install.kept_data": (
        "contains the event log and IP reservations; remove it with --purge",
        "イベントログと IP アドレスの予約を含むため。--purge で削除します",
    ),
    "install.kept_logs": ("contains the access log; remove it with --purge", "アクセスログを含むため。--purge で削除します"),
    "install.kept_foreign": ("not written by flatnet install", "flatnet install が書いたファイルではないため"),
    "install.kept_changed": (
        "changed since flatnet install wrote it; remove it with --force",
        "flatnet install が書き込んだ後に変更されたため。--force で削除します",
    ),
    "install.kept_unrecorded": (
        "flatnet install recorded no checksum for it, so it may have been changed; remove it with --force",
        "flatnet install がチェックサムを記録していないため、変更されている可能性があります。--force で削除します",
    ),
    "install.invalid_host_id": (
        "host id {value!r} is invalid: give a whole number from 1 to 254, unique in the fleet",
        "ホスト ID {value!r} は無効です。1 から 254 の整数を、フリート内で一意になるように指定してください",
    ),
    "install.gateway_running": (
        "the flatnet gateway (pid {pid}) is running on {data_dir}; "
        "stop it before uninstalling: systemctl disable --now flatnet-gateway",
        "flatnet ゲートウェイ (pid {pid}) が {data_dir} を使って動いています。"
        "アンインストールの前に停止してください: systemctl disable --now flatnet-gateway",
    ),
    "install.unit_enabled": (
        "flatnet-gateway is enabled, and {link} would point to a removed unit file; "
        "disable and stop it before uninstalling: systemctl disable --now flatnet-gateway",
        "flatnet-gateway が有効になっており、削除されるユニットファイルを {link} が指したまま残ります。"
        "アンインストールの前に無効にして停止してください: systemctl disable --now flatnet-gateway",
    ),
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


def host_id_argument(value: str) -> int:
    """Parse ``--host-id`` for argparse, which reports a rejected value as a usage error (exit status 2)."""
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 254:
        raise argparse.ArgumentTypeError(i18n.text("install.invalid_host_id", value=value))
    return int(value)


def plan(host_id: int, python: str = sys.executable) -> list[PlannedFile]:
    """List every file install writes for ``host_id``, with its content."""
    if not 1 <= host_id <= 254:
        raise FlatnetError(i18n.text("install.invalid_host_id", value=host_id))
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
        if target.exists() and target.read_bytes() != planned.content.encode() and not force:
            raise FlatnetError(i18n.text("install.exists", path=target))

    lines = []
    created: list[Path] = []
    for directory in (DATA_DIR, LOG_DIR):
        target = _under(root, directory)
        if not target.is_dir():
            lines.append(i18n.text("install.would_make_dir" if dry_run else "install.made_dir", path=target))
            if not dry_run:
                created += _make_directories(target, 0o750)

    checksums = {}
    for planned in files:
        target = _under(root, planned.path)
        checksums[str(target)] = _sha256(planned.content.encode())
        if target.exists() and target.read_bytes() == planned.content.encode():
            lines.append(i18n.text("install.unchanged", path=target))
        elif dry_run:
            # The operator reviews each file before anything is written, so show it whole.
            lines.append(i18n.text("install.would_write", path=target, mode=f"{planned.mode:04o}"))
            lines.extend(f"    {line}" if line else "" for line in planned.content.splitlines())
        else:
            lines.append(i18n.text("install.wrote", path=target))
            created += _make_directories(target.parent, 0o755)
            _write(target, planned.content, planned.mode)

    if not dry_run:
        manifest = Manifest.read(root)
        manifest.directories += [str(path) for path in created if str(path) not in manifest.directories]
        manifest.files.update(checksums)
        manifest.write(root)

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


@dataclasses.dataclass
class Manifest:
    """Directories that install created under a root, and the hex SHA-256 of each file it wrote, by path."""

    directories: list[str]
    files: dict[str, str]

    @classmethod
    def read(cls, root: Path) -> Manifest:
        """Read the manifest under ``root``, merged with one an older flatnet left; empty when neither exists."""
        manifest = cls([], {})
        for path in (MANIFEST_PATH, OLD_MANIFEST_PATH):
            target = _under(root, path)
            if not target.exists():
                continue
            document = json.loads(target.read_text())
            manifest.directories += [name for name in document["directories"] if name not in manifest.directories]
            manifest.files.update(document.get("files", {}))
        return manifest

    def write(self, root: Path) -> None:
        target = _under(root, MANIFEST_PATH)
        _make_directories(target.parent, 0o755)
        document = {MARKER: True, "directories": self.directories, "files": self.files}
        _write(target, json.dumps(document, indent=2) + "\n", 0o644)
        _under(root, OLD_MANIFEST_PATH).unlink(missing_ok=True)

    @staticmethod
    def remove(root: Path) -> None:
        for path in (MANIFEST_PATH, OLD_MANIFEST_PATH):
            _under(root, path).unlink(missing_ok=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path: Path, content: str, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(content.encode())
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def uninstall(*, root: Path = Path("/"), dry_run: bool = False, purge: bool = False, force: bool = False) -> list[str]:
    """Remove what install wrote under ``root``, and with ``purge`` also the data and log directories.

    A file changed since install wrote it is kept unless ``force`` is set, and a file that
    install neither recorded nor marked is always kept. A running or enabled gateway raises
    FlatnetError before anything is removed.
    """
    _require_root(root, dry_run)
    _check_gateway_stopped(root)
    manifest = Manifest.read(root)

    lines, kept_files = _remove_files(root, manifest.files, dry_run=dry_run, force=force)
    lines += _remove_data_directories(root, dry_run=dry_run, purge=purge)
    if dry_run:
        return lines

    # While any file stays, the manifest stays too, so that a later uninstall still removes the
    # directories install created and can tell which of the kept files install wrote.
    if kept_files:
        records = {path: manifest.files[path] for path in kept_files if path in manifest.files}
        Manifest(manifest.directories, records).write(root)
    else:
        Manifest.remove(root)
    # Directories install created go too, deepest first, once nothing else is in them.
    kept_directories = set() if purge else {_under(root, DATA_DIR), _under(root, LOG_DIR)}
    for directory in sorted(map(Path, manifest.directories), key=lambda p: len(p.parts), reverse=True):
        if directory in kept_directories:
            continue
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()

    if root == Path("/") and Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "daemon-reload"], check=False)
    return lines


def _check_gateway_stopped(root: Path) -> None:
    """Raise FlatnetError if the gateway unit is enabled or a gateway has locked the configured data directory."""
    units = _under(root, UNIT_PATH.parent)
    link = next(units.glob(f"*.wants/{UNIT_PATH.name}"), None)
    if link is not None:
        raise FlatnetError(i18n.text("install.unit_enabled", link=link))

    data_dir = _configured_data_dir(root)
    pid = _lock_holder(data_dir / "gateway.lock")
    if pid is not None:
        raise FlatnetError(i18n.text("install.gateway_running", pid=pid, data_dir=data_dir))


def _configured_data_dir(root: Path) -> Path:
    """Return the installed gateway config's data_dir under ``root``, or DATA_DIR if the config gives none."""
    try:
        value = tomllib.loads(_under(root, GATEWAY_CONFIG_PATH).read_text()).get("data_dir")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        value = None
    if isinstance(value, str) and value.startswith("/"):
        return _under(root, Path(value))
    return _under(root, DATA_DIR)


def _lock_holder(lock: Path) -> str | None:
    """Return the pid that a gateway holding ``lock`` wrote into it, or None when no process holds it.

    The gateway takes an exclusive flock on ``<data_dir>/gateway.lock`` for its whole run
    (``lock_data_dir`` in flatnet/gateway/app.py). Taking a shared lock for a moment tells
    whether it is held, but a gateway that starts in that moment fails with "in use".
    """
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _remove_files(root: Path, checksums: dict[str, str], *, dry_run: bool, force: bool) -> tuple[list[str], list[str]]:
    """Remove the installed files that are as install wrote them, or with ``force`` all that install wrote.

    Return the lines to print and the paths of the files kept.
    """
    lines = []
    kept_paths = []
    for path in (PLUGIN_PATH, CONFLIST_PATH, GATEWAY_CONFIG_PATH, UNIT_PATH):
        target = _under(root, path)
        if not target.exists():
            continue
        content = target.read_bytes()
        recorded = checksums.get(str(target))
        if recorded is None and MARKER.encode() not in content:
            reason = "install.kept_foreign"
        elif _sha256(content) == recorded or force:
            reason = None
        elif recorded is None:
            reason = "install.kept_unrecorded"
        else:
            reason = "install.kept_changed"

        if reason is not None:
            lines.append(i18n.text("install.kept", path=target, reason=i18n.text(reason)))
            kept_paths.append(str(target))
            continue
        lines.append(i18n.text("install.would_remove" if dry_run else "install.removed", path=target))
        if not dry_run:
            target.unlink()
    return lines, kept_paths


def _remove_data_directories(root: Path, *, dry_run: bool, purge: bool) -> list[str]:
    lines = []
    for directory, reason in ((DATA_DIR, "install.kept_data"), (LOG_DIR, "install.kept_logs")):
        target = _under(root, directory)
        if not target.exists():
            continue
        if purge:
            lines.append(i18n.text("install.would_remove" if dry_run else "install.removed", path=f"{target}/"))
            if not dry_run:
                shutil.rmtree(target)
        else:
            lines.append(i18n.text("install.kept", path=f"{target}/", reason=i18n.text(reason)))
    return lines

