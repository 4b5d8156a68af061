"""The gateway settings of the event log and the own-host check: the ``[log]``
and ``[reconcile]`` tables of the config file."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from flatnet import i18n
from flatnet.events.log import DEFAULT_SEGMENT_BYTES
from flatnet.gateway.journal import JournalPolicy
from flatnet.i18n import Message

DAY_SECONDS = 24 * 3600.0

i18n.define({
    "log_settings.tombstones_too_short": (
        "log.tombstone_retention {retention:g} s must be greater than ttl + resync = {ttl:g} + {resync:g} = {total:g} s,"
        " so that a late snapshot from a peer cannot bring a removed container back;"
        " raise log.tombstone_retention or lower ttl or resync",
        "log.tombstone_retention {retention:g} 秒は ttl + resync = {ttl:g} + {resync:g} = {total:g} 秒より大きくしてください。"
        "そうでないと、遅れて届いたピアのスナップショットが削除済みのコンテナーを復活させます。"
        "log.tombstone_retention を増やすか、ttl か resync を減らしてください",
    ),
})


class LogSettings(BaseModel):
    """Snapshots, retention and tombstones (``[log]``); times in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    snapshot_every_events: int = Field(10_000, ge=1, description="events applied between two snapshots")
    snapshot_every_seconds: float = Field(300.0, gt=0, description="seconds between two snapshots while events arrive")
    retention: float = Field(
        7 * DAY_SECONDS, ge=0,
        description="seconds a log segment is kept after its last write once a snapshot covers it; replay needs history",
    )
    tombstone_retention: float = Field(
        DAY_SECONDS, gt=0,
        description="seconds a removed container is remembered; must be greater than ttl + resync",
    )
    segment_bytes: int = Field(DEFAULT_SEGMENT_BYTES, ge=4096, description="size at which a log segment is rolled")

    def policy(self) -> JournalPolicy:
        return JournalPolicy(
            snapshot_every_events=self.snapshot_every_events,
            snapshot_every_seconds=self.snapshot_every_seconds,
            retention=self.retention,
            tombstone_retention=self.tombstone_retention,
            segment_bytes=self.segment_bytes,
        )


class ReconcileSettings(BaseModel):
    """The check of this host's containers against the kernel at start (``[reconcile]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="remove containers of this host whose network namespace or interface is gone")
    grace_seconds: float = Field(
        60.0, ge=0,
        description="an address reserved this recently is left alone: its ADD may still be setting up the interface",
    )


def check_tombstone_retention(log: LogSettings, ttl: float, resync: float) -> None:
    """Raise ValueError, carrying a catalogue Message, unless tombstones outlive ``ttl + resync``.

    A peer's snapshot can lag by up to the resync interval, and its containers
    stay live for the ttl. A tombstone dropped before both have passed lets
    such a snapshot bring a removed container back.
    """
    if log.tombstone_retention <= ttl + resync:
        raise ValueError(Message(
            "log_settings.tombstones_too_short", retention=log.tombstone_retention, ttl=ttl, resync=resync, total=ttl + resync,
        ))
