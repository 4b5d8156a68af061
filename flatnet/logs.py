"""The loggers of flatnet's subsystems, declared in one place.

Nothing else calls ``logging.getLogger``: a module imports the logger of its
subsystem from here.
"""

from __future__ import annotations

import logging
import sys

gateway = logging.getLogger("flatnet.gateway")
log = logging.getLogger("flatnet.log")
sync = logging.getLogger("flatnet.sync")
registry = logging.getLogger("flatnet.registry")
proxy = logging.getLogger("flatnet.proxy")
routes = logging.getLogger("flatnet.routes")
access = logging.getLogger("flatnet.access")
lab = logging.getLogger("flatnet.lab")
cni = logging.getLogger("flatnet.cni")

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """Send records of ``level`` and above to stderr, one human-readable line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    root = logging.getLogger("flatnet")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def add_access_log_file(path: str) -> None:
    """Also write the proxy's access lines to ``path``, one line per request."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    access.addHandler(handler)
