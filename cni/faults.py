"""Fault injection for the crash and rollback tests.

``FLATNET_CNI_FAULT=<point>:<action>[,<point>:<action>...]`` in the plugin's
environment makes the command stop at a named point inside ADD or DEL. The
launcher forwards the variable to the gateway, so on the fast path the
gateway itself is the process that stops. Actions:

- ``kill``: SIGKILL the process running the command, as a crash would;
- ``fail``: raise a CNI error there, as a failing step would.

Only root can run the plugin or reach the gateway's socket, and root can
kill either process anyway, so the hook gives nobody a new power.
"""

from __future__ import annotations

import os
import signal

from flatnet import i18n
from flatnet.cni.spec import INTERNAL_FAILURE, CniError, Request
from flatnet.i18n import Message

ADD_POINTS = ("add:after-reserve", "add:after-veth", "add:after-interfaces", "add:after-announce")
DEL_POINTS = ("del:after-interfaces", "del:after-announce", "del:after-release")
POINTS = ADD_POINTS + DEL_POINTS

i18n.define({"cni.fault_injected": ("injected failure at {point}", "{point} で注入された障害です")})


def reach(request: Request, point: str) -> None:
    """Act on the fault configured for ``point``, if there is one."""
    if not request.fault:
        return
    for entry in request.fault.split(","):
        name, _, action = entry.strip().rpartition(":")
        if name != point:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "fail":
            raise CniError(INTERNAL_FAILURE, Message("cni.fault_injected", point=point))
