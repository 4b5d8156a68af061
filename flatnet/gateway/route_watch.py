"""Kernel notifications that can leave the gateway's routes wrong, so it reconciles at once.

The gateway subscribes to rtnetlink's link, IPv4 address and IPv4 route groups and wakes the
route reconcile when:

- one of flatnet's routes (route protocol ``FLATNET_PROTOCOL``) is deleted;
- in mode ``dev``, the tun device appears or comes up: a Nebula restart deletes the device with
  every route on it, and the kernel sends no route deletion for those;
- in mode ``via``, any link comes up or any address is added, since either can make the next
  hop reachable again.

Only the message headers are read, with the standard library: the reconcile itself surveys the
kernel through pyroute2, so the watch only has to say when.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import Callable

from flatnet.gateway.route_settings import RouteMode, RouteSettings
from flatnet.logs import routes as logger
from flatnet.routes import FLATNET_PROTOCOL

# Multicast groups of NETLINK_ROUTE, from linux/rtnetlink.h.
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40

# Message types, from linux/rtnetlink.h and linux/netlink.h.
NLMSG_OVERRUN = 4
RTM_NEWLINK = 16
RTM_NEWADDR = 20
RTM_DELROUTE = 25

IFLA_IFNAME = 3
IFF_UP = 0x1

_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # struct ifinfomsg: family, type, index, flags, change
_RTMSG = struct.Struct("=BBBBBBBBI")  # struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_ATTRIBUTE = struct.Struct("=HH")  # struct rtattr: length, type

RECEIVE_BYTES = 65536


def _link_name(message: bytes) -> str | None:
    """Return the IFLA_IFNAME attribute of an RTM_NEWLINK payload, or None without one."""
    offset = _IFINFO.size
    while offset + _ATTRIBUTE.size <= len(message):
        length, kind = _ATTRIBUTE.unpack_from(message, offset)
        if length < _ATTRIBUTE.size:
            return None
        if kind == IFLA_IFNAME:
            return message[offset + _ATTRIBUTE.size:offset + length].split(b"\0", 1)[0].decode(errors="replace")
        # Attributes are aligned to 4 bytes.
        offset += (length + 3) & ~3
    return None


def wakes_reconcile(data: bytes, settings: RouteSettings) -> bool:
    """Tell whether any netlink message in ``data`` can have changed what the reconcile would do."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            return False
        payload = data[offset + _HEADER.size:offset + length]
        offset += (length + 3) & ~3

        if kind == NLMSG_OVERRUN:
            return True
        if kind == RTM_DELROUTE and len(payload) >= _RTMSG.size:
            if _RTMSG.unpack_from(payload)[5] == FLATNET_PROTOCOL:
                return True
        elif kind == RTM_NEWLINK and len(payload) >= _IFINFO.size:
            flags = _IFINFO.unpack_from(payload)[3]
            if not flags & IFF_UP:
                continue
            if settings.mode is RouteMode.VIA or _link_name(payload) == settings.device:
                return True
        elif kind == RTM_NEWADDR and settings.mode is RouteMode.VIA:
            return True
    return False


class RouteWatch:
    """An rtnetlink subscription on the event loop that sets ``changed`` when the routes may need work."""

    def __init__(self, settings: Callable[[], RouteSettings]) -> None:
        # A getter, because a reload of the gateway config replaces the settings.
        self.settings = settings
        self.changed = asyncio.Event()
        self._socket: socket.socket | None = None

    def open(self) -> bool:
        """Subscribe; return False, after logging why, if the kernel refuses the subscription."""
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE))
            sock.setblocking(False)
        except OSError as error:
            logger.warning(
                "failed to subscribe to the kernel's route notifications: %s; routes are reconciled only every interval",
                error.strerror,
            )
            return False
        self._socket = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._receive)
        return True

    def _receive(self) -> None:
        while True:
            try:
                data = self._socket.recv(RECEIVE_BYTES)
            except BlockingIOError:
                return
            except OSError as error:
                # ENOBUFS: the kernel dropped notifications the loop was too slow to read.
                if error.errno == errno.ENOBUFS:
                    self.changed.set()
                    continue
                logger.warning(
                    "failed to read the kernel's route notifications: %s; routes are reconciled only every interval",
                    error.strerror,
                )
                self.close()
                return
            if wakes_reconcile(data, self.settings()):
                self.changed.set()

    def close(self) -> None:
        if self._socket is None:
            return
        asyncio.get_running_loop().remove_reader(self._socket.fileno())
        self._socket.close()
        self._socket = None
