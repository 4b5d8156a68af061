"""Time arguments and time text: RFC 3339 instants, relative forms like ``-15m``, canonical output.

Every time replay prints is UTC in the form the log uses (``2026-12-04T10:00:00.123Z``), so a
report does not depend on the reader's time zone.
"""

from __future__ import annotations

import datetime
import math
import re

from flatnet import i18n
from flatnet.registry import format_time

i18n.define({
    "replay.bad_time": (
        "invalid time {value!r} for {option}: give an RFC 3339 time such as 2026-12-04T10:32:00Z"
        " or 2026-12-04T19:32:00+09:00, a time relative to now such as -15m, -2h, -30s or -1d, or 'now'",
        "{option} の時刻 {value!r} が不正です。2026-12-04T10:32:00Z や 2026-12-04T19:32:00+09:00 のような"
        " RFC 3339 の時刻、-15m、-2h、-30s、-1d のような現在からの相対時刻、または 'now' を指定してください",
    ),
})

_RELATIVE = re.compile(r"-(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class TimeArgumentError(ValueError):
    """A time argument that is neither RFC 3339 nor a relative form; the message names the valid forms."""


def parse_time(value: str, option: str, now: float) -> float:
    """Return the POSIX time that ``value`` names; relative forms count back from ``now``."""
    text = value.strip()
    if text == "now":
        return now
    relative = _RELATIVE.fullmatch(text)
    if relative is not None:
        return now - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    # RFC 3339 needs an offset: a time without one would depend on the reader's zone.
    if len(text) < 20 or not (text.endswith(("Z", "z")) or re.search(r"[+-]\d\d:\d\d$", text)):
        raise TimeArgumentError(i18n.text("replay.bad_time", value=value, option=option))
    try:
        moment = datetime.datetime.fromisoformat(text[:-1] + "Z" if text[-1] == "z" else text)
    except ValueError:
        raise TimeArgumentError(i18n.text("replay.bad_time", value=value, option=option)) from None
    return moment.timestamp()


def event_seconds(ts: str) -> float:
    """Return an event's ``ts`` as a POSIX time; NaN when it is not a time. A time without an offset is UTC."""
    try:
        moment = datetime.datetime.fromisoformat(ts)
    except ValueError:
        return math.nan
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def show_time(seconds: float) -> str:
    """Format a POSIX time for a report: UTC with milliseconds, as the log writes times."""
    return format_time(seconds)
