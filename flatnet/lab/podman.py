"""podman for one lab host: run inside the host's namespace with the host's own containers.conf.

Every podman command for a lab host needs that host's CONTAINERS_CONF. Without it podman falls
back to the machine's network backend, and `podman rm` exits 0 while the container's address
leaks. All lab hosts share one podman database, so container names are unique lab-wide and the
lab finds its own containers by the annotation each host's containers.conf adds.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from flatnet.errors import FlatnetError
from flatnet.lab import config, layout, namespaces
from flatnet.lab.layout import LabPaths
from flatnet.lab.processes import nsenter_argv, run_command
from flatnet.logs import lab as log

REMOVE_TIMEOUT_SECONDS = 120.0
# libcni's cache of each attachment's result, which a CNI DEL removes (podman 4.3's default).
CNI_RESULTS_DIR = Path("/var/lib/cni/results")


def podman_env(paths: LabPaths, name: str) -> dict[str, str]:
    """Return this process's environment with CONTAINERS_CONF set to host ``name``'s file."""
    return {**os.environ, "CONTAINERS_CONF": str(paths.containers_conf(name))}


def podman_argv(netns: str, args: Sequence[str]) -> list[str]:
    return nsenter_argv(netns, ["podman", *args])


def run_podman(
    paths: LabPaths, name: str, args: Sequence[str], *, netns: str | None = None,
    timeout: float = REMOVE_TIMEOUT_SECONDS,
) -> subprocess.CompletedProcess[str]:
    """Run podman for host ``name`` in ``netns`` (default: the host's own) and raise if it fails."""
    return run_command(
        podman_argv(netns or layout.netns_name(name), args), env=podman_env(paths, name), timeout=timeout,
    )


def list_lab_containers(paths: LabPaths, name: str, netns: str) -> dict[int, list[str]]:
    """Return the IDs of every container that carries the lab's host annotation, by host id.

    The podman database is shared, so the listing through one host's configuration also shows
    the containers of every other host.
    """
    listing = run_podman(paths, name, ["ps", "-aq", "--no-trunc"], netns=netns)
    ids = listing.stdout.split()
    if not ids:
        return {}
    template = '{{.ID}} {{index .Config.Annotations "%s"}}' % layout.HOST_ANNOTATION
    inspected = run_podman(paths, name, ["inspect", "--format", template, *ids], netns=netns)

    by_host: dict[int, list[str]] = defaultdict(list)
    for line in inspected.stdout.splitlines():
        container_id, _, host = line.partition(" ")
        if host.strip().isdigit():
            by_host[int(host)].append(container_id)
    return dict(by_host)


def remove_lab_containers(paths: LabPaths, configured_hosts: Iterable[int]) -> tuple[int, list[str]]:
    """Remove every lab container, one `podman rm -f -t 0` per host.

    Return how many containers podman removed and a message for each host where it failed.

    Each host's containers are removed inside the host's namespace with its configuration, so
    the CNI DEL runs where the ADD ran. If that namespace is gone, the scratch namespace is
    used instead, because a CNI plugin must never run in the root namespace. ``-t 0`` spares
    podman's 10 s stop timeout for containers whose PID 1 ignores SIGTERM, as busybox httpd does.
    """
    removed, problems, _ = _remove_containers(paths, configured_hosts)
    return removed, problems


def _remove_containers(paths: LabPaths, configured_hosts: Iterable[int]) -> tuple[int, list[str], list[str]]:
    """Do the work of remove_lab_containers, and also return the IDs of the removed containers."""
    with_conf = [host for host in configured_hosts if paths.containers_conf(layout.host_name(host)).exists()]
    if not with_conf:
        return 0, [], []
    lister = layout.host_name(with_conf[0])
    lister_netns = layout.netns_name(lister)
    if not namespaces.exists(lister_netns):
        lister_netns = _scratch_netns()

    removed_ids: list[str] = []
    problems: list[str] = []
    try:
        by_host = list_lab_containers(paths, lister, lister_netns)
    except FlatnetError as error:
        return 0, [str(error)], []

    for host_id, container_ids in sorted(by_host.items()):
        name = layout.host_name(host_id)
        netns = layout.netns_name(name)
        conf_host = name if host_id in with_conf else lister
        if not namespaces.exists(netns) or conf_host != name:
            log.warning(
                "namespace %s or its containers.conf is gone; removing its containers from %s: %s",
                netns, layout.SCRATCH_NETNS, " ".join(cid[:12] for cid in container_ids),
            )
            netns = _scratch_netns()
        try:
            run_podman(paths, conf_host, ["rm", "-f", "-t", "0", *container_ids], netns=netns)
        except FlatnetError as error:
            problems.append(str(error))
        else:
            removed_ids += container_ids
    return len(removed_ids), problems, removed_ids


def remove_containers_without_lab_dir(host_ids: Iterable[int]) -> tuple[int, list[str]]:
    """Remove every lab container after the lab directory, with each host's containers.conf, was deleted.

    Return what remove_lab_containers returns. Each host gets a stand-in containers.conf in a
    temporary directory, with an empty network config dir. podman finds no flatnet network
    there, so it removes each container without a CNI DEL. That DEL would have no lab files
    left to update, and the container's veth goes with its host's namespace. libcni's cached
    result would stay, so it is deleted here.
    """
    host_ids = list(host_ids)
    with tempfile.TemporaryDirectory(prefix="flatnet-lab-down-") as scratch:
        stand_in = LabPaths(Path(scratch))
        stand_in.cni_bin_dir.mkdir()
        for host_id in host_ids:
            name = layout.host_name(host_id)
            stand_in.host_dir(name).mkdir()
            stand_in.cni_config_dir(name).mkdir()
            conf = config.render_containers_conf(stand_in, host_id, [stand_in.cni_bin_dir])
            stand_in.containers_conf(name).write_text(conf)
        removed, problems, container_ids = _remove_containers(stand_in, host_ids)
    for container_id in container_ids:
        for cached in CNI_RESULTS_DIR.glob(f"{layout.NETWORK_NAME}-{container_id}-*"):
            cached.unlink(missing_ok=True)
    return removed, problems


def _scratch_netns() -> str:
    if not namespaces.exists(layout.SCRATCH_NETNS):
        namespaces.create(layout.SCRATCH_NETNS)
    return layout.SCRATCH_NETNS
