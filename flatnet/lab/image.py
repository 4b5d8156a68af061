"""The lab's web image, flatnet-lab/web: busybox-static and its applets, serving the container's
name at ``/`` and 1 MiB of fixed bytes at ``/big.bin``.

There is no image registry in the lab, so the image is a root tree packed with tarfile and
loaded with `podman import`. All lab hosts share podman's image store, so it is imported once
and only when missing or built from a different recipe.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path

from flatnet import i18n
from flatnet.errors import FlatnetError
from flatnet.lab import layout
from flatnet.lab.layout import LabPaths
from flatnet.lab.podman import podman_argv, podman_env, run_podman
from flatnet.lab.processes import require_tool

i18n.define({
    "lab.busybox_dynamic": (
        "{path} is dynamically linked, but the lab's image has no libraries;"
        " install busybox-static (apt-get install -y busybox-static)",
        "{path} は動的リンクですが、ラボのイメージにはライブラリがありません。"
        "busybox-static をインストールしてください（apt-get install -y busybox-static）",
    ),
    "lab.busybox_applets": (
        "{path} lacks the applets {applets} that the lab's image needs; install busybox-static",
        "{path} にはラボのイメージに必要なアプレット {applets} がありません。busybox-static をインストールしてください",
    ),
})

IMAGE = "localhost/flatnet-lab/web:latest"
IMAGE_SHORT_NAME = "flatnet-lab/web"
REVISION_LABEL = "flatnet.lab.image"
REQUIRED_APPLETS = ("sh", "httpd", "ip", "ping", "wget", "hostname", "cat", "sed", "timeout", "printf")
BIG_FILE_SIZE = 1 << 20

# podman 4.3.1 exposes a container's own name in two places: /run/.containerenv has
# name="..." only for --privileged containers, while /etc/hosts always has a line
# "<address> <hostname> <name>" (127.0.0.1 with --network none). Neither the hostname
# (the short container id) nor any environment variable carries the name. With
# --network host that line is missing and the hostname is served instead.
START_SCRIPT = """\
#!/bin/sh
# Write this container's name to /www/index.html, then serve /www on port 80.
name=""
if [ -r /run/.containerenv ]; then
    name=$(sed -n 's/^name="\\(.*\\)"$/\\1/p' /run/.containerenv)
fi
if [ -z "$name" ]; then
    self=$(hostname)
    while read -r address first second rest; do
        if [ "$first" = "$self" ] && [ -n "$second" ]; then
            name=$second
        fi
    done < /etc/hosts
fi
if [ -z "$name" ]; then
    name=$(hostname)
fi
printf '%s' "$name" > /www/index.html

# httpd runs as a child, not as PID 1: PID 1 ignores SIGTERM without a handler, and this
# trap lets `podman stop` end the container at once instead of after its 10 s timeout.
/bin/httpd -f -v -p 80 -h /www &
server=$!
trap 'kill $server; exit 0' TERM INT
wait $server
"""
START_PATH = "/flatnet-web.sh"
COMMAND = ["/bin/sh", START_PATH]


def big_file_bytes() -> bytes:
    """Return the 1 MiB served at /big.bin: the same bytes in every image, for transfer checks."""
    return hashlib.shake_256(b"flatnet-lab big.bin").digest(BIG_FILE_SIZE)


def _is_static(binary: Path) -> bool:
    """Tell whether an ELF file has no PT_INTERP program header, that is, needs no loader."""
    with open(binary, "rb") as file:
        header = file.read(64)
        if header[:4] != b"\x7fELF":
            return False
        is_64 = header[4] == 2
        byte_order = "<" if header[5] == 1 else ">"
        if is_64:
            phoff, = struct.unpack_from(byte_order + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(byte_order + "HH", header, 54)
        else:
            phoff, = struct.unpack_from(byte_order + "I", header, 28)
            phentsize, phnum = struct.unpack_from(byte_order + "HH", header, 42)
        file.seek(phoff)
        table = file.read(phentsize * phnum)
    pt_interp = 3
    types = (struct.unpack_from(byte_order + "I", table, index * phentsize)[0] for index in range(phnum))
    return pt_interp not in types


def _busybox() -> tuple[Path, list[str]]:
    """Return the static busybox binary and its applet names, or raise saying what to install."""
    path = Path(require_tool("busybox")).resolve()
    if not _is_static(path):
        raise FlatnetError(i18n.text("lab.busybox_dynamic", path=path))
    listing = subprocess.run([str(path), "--list"], capture_output=True, text=True, check=True, timeout=10)
    applets = sorted(set(listing.stdout.split()))
    missing = [applet for applet in REQUIRED_APPLETS if applet not in applets]
    if missing:
        raise FlatnetError(i18n.text("lab.busybox_applets", path=path, applets=", ".join(missing)))
    return path, applets


def _revision(busybox: Path, applets: list[str]) -> str:
    """Return a short digest of everything the image is built from, stored as a label on it."""
    digest = hashlib.sha256()
    for part in (START_SCRIPT, json.dumps(COMMAND), " ".join(applets), str(BIG_FILE_SIZE)):
        digest.update(part.encode() + b"\0")
    digest.update(busybox.read_bytes())
    return digest.hexdigest()[:16]


def _add_file(archive: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    archive.addfile(info, io.BytesIO(data))


def _add_directory(archive: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    archive.addfile(info)


def write_root_tree(tar_path: Path, busybox: Path, applets: list[str]) -> None:
    """Write the image's root tree as a tar file: busybox, one symlink per applet, the web root."""
    with tarfile.open(tar_path, "w") as archive:
        for directory in ("bin", "etc", "dev", "proc", "sys", "run", "root", "www"):
            _add_directory(archive, directory)
        _add_directory(archive, "tmp", 0o1777)
        _add_file(archive, "bin/busybox", busybox.read_bytes(), 0o755)
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            archive.addfile(link)
        _add_file(archive, START_PATH.lstrip("/"), START_SCRIPT.encode(), 0o755)
        _add_file(archive, "www/index.html", b"", 0o644)
        _add_file(archive, "www/big.bin", big_file_bytes(), 0o644)


def installed_revision(paths: LabPaths, host: str) -> str | None:
    """Return the recipe label of the installed image, or None when the image is missing."""
    # `podman image exists` reports a missing image by exit status 1.
    exists = subprocess.run(
        podman_argv(layout.netns_name(host), ["image", "exists", IMAGE]),
        env=podman_env(paths, host), capture_output=True, timeout=60, check=False,
    )
    if exists.returncode != 0:
        return None
    template = '{{index .Labels "%s"}}' % REVISION_LABEL
    inspected = run_podman(paths, host, ["image", "inspect", "--format", template, IMAGE])
    return inspected.stdout.strip()


def ensure_image(paths: LabPaths, host: str) -> bool:
    """Import the web image through ``host``'s podman unless it is there from the same recipe.

    Return True when it imported the image. An image of an older recipe keeps its ID but loses
    its name, and is left for podman to prune.
    """
    busybox, applets = _busybox()
    revision = _revision(busybox, applets)
    if installed_revision(paths, host) == revision:
        return False

    with tempfile.TemporaryDirectory(prefix="flatnet-lab-image-") as scratch:
        tar_path = Path(scratch) / "root.tar"
        write_root_tree(tar_path, busybox, applets)
        run_podman(paths, host, [
            "import",
            "--change", f"CMD={json.dumps(COMMAND, separators=(',', ':'))}",
            "--change", f"LABEL={REVISION_LABEL}={revision}",
            str(tar_path), IMAGE,
        ])
    return True
