"""The lab's Nebula certificates, made with nebula-cert.

Each host's certificate carries its Nebula address as a /24 and its container subnet, because
Nebula 1.6.1 drops packets whose source is not in the sender's certificate. The address is
never signed as a /16: Nebula refuses to start when the certificate's own network contains
an unsafe route.
"""

from __future__ import annotations

from collections.abc import Iterable

from flatnet import nebula
from flatnet.lab import layout
from flatnet.lab.layout import LabPaths

CA_NAME = "flatnet-lab"


def create_pki(paths: LabPaths, host_ids: Iterable[int]) -> None:
    """Create the lab's CA and one certificate per host under ``paths.pki_dir``, as `flatnet nebula sign` does.

    nebula-cert refuses to overwrite existing files, so this runs only on a fresh lab directory.
    """
    paths.pki_dir.mkdir(mode=0o700)
    nebula.create_ca(CA_NAME, paths.ca_cert(), paths.ca_key())
    for host_id in host_ids:
        name = layout.host_name(host_id)
        nebula.sign(
            host_id, ca_crt=paths.ca_cert(), ca_key=paths.ca_key(),
            out_crt=paths.host_cert(name), out_key=paths.host_key(name), name=name,
        )
