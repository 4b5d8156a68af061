"""Step-by-step progress of the lab commands, each step with the milliseconds it took."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable

from flatnet import i18n

i18n.define({
    "lab.step": ("{step} {ms:>6} ms", "{step} {ms:>6} ms"),
})

STEP_COLUMNS = 44

Progress = Callable[[str], None]


def ignore_progress(message: str) -> None:
    del message


class StepTimer:
    """Report each finished step through ``progress`` with the time since the previous one."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.started = time.monotonic()
        self.last = self.started

    def done(self, key: str, **values: object) -> None:
        """Report step ``key`` (an i18n key formatted with ``values``) as finished now."""
        now = time.monotonic()
        self._report(key, now - self.last, values)
        self.last = now

    def total(self, key: str, **values: object) -> None:
        """Report ``key`` with the time since the timer was made."""
        self._report(key, time.monotonic() - self.started, values)

    def _report(self, key: str, seconds: float, values: dict[str, object]) -> None:
        step = pad(i18n.text(key, **values), STEP_COLUMNS)
        self.progress(i18n.text("lab.step", step=step, ms=round(seconds * 1000)))


def display_width(text: str) -> int:
    """Return the terminal columns ``text`` takes: wide (e.g. Japanese) characters take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def pad(text: str, columns: int) -> str:
    """Return ``text`` with spaces added until it fills ``columns`` terminal columns."""
    return text + " " * max(0, columns - display_width(text))
