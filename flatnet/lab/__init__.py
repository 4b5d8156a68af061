"""The flatnet lab: simulated hosts on one Linux machine, each a network namespace with its own
Nebula node, flatnet gateway, bridge and podman configuration, plus a LAN client namespace.

``up``, ``down`` and ``Lab`` are imported on first use, because every `flatnet` command loads
this package to build its parser.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Lab", "down", "up"]


def __getattr__(name: str) -> Any:
    if name == "Lab":
        from flatnet.lab.lab import Lab

        return Lab
    if name == "up":
        from flatnet.lab.build import up

        return up
    if name == "down":
        from flatnet.lab.teardown import down

        return down
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
