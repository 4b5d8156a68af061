"""The lab's Nebula certificates, made with nebula-cert.

Each host's certificate carries its Nebula address as a /24 and its container subnet, because
Nebula 1.6.1 drops packets whose source is not in the sender's certificate. The address is
never signed as a /16: Nebula refuses to start when the certificate's own network contains
an unsafe route.
"""

from __future__ import annotations

from collections.abc import Iterable

from flatnet.lab import layout
from flatnet.lab.layout import LabPaths
from flatnet.lab.processes import run_command

CA_NAME = "flatnet-lab"


def create_pki(paths: LabPaths, host_ids: Iterable[int]) -> None:
    """Create the lab's CA and one signed certificate per host under ``paths.pki_dir``.

    nebula-cert refuses to overwrite existing files, so this runs only on a fresh lab directory.
    """
    paths.pki_dir.mkdir(mode=0o700)
    run_command([
        "nebula-cert", "ca", "-name", CA_NAME,
        "-out-crt", str(paths.ca_cert()), "-out-key", str(paths.ca_key()),
    ])
    for host_id in host_ids:
        name = layout.host_name(host_id)
        run_command([
            "nebula-cert", "sign",
            "-ca-crt", str(paths.ca_cert()), "-ca-key", str(paths.ca_key()),
            "-name", name,
            "-ip", f"{layout.nebula_address(host_id)}/24",
            "-subnets", str(layout.container_subnet(host_id)),
            "-out-crt", str(paths.host_cert(name)), "-out-key", str(paths.host_key(name)),
        ])
