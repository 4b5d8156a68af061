"""Output shared by the replay subcommands: text tables, JSON lines, and a progress bar on stderr."""

from __future__ import annotations

import sys
import time
import unicodedata
from collections.abc import Sequence
from typing import IO, Any

import orjson

# A progress bar appears only for work that is still going after this long.
PROGRESS_AFTER_SECONDS = 1.0
PROGRESS_REDRAW_SECONDS = 0.1
_BAR_COLUMNS = 30
# Widest cell of a table column other than the last, in terminal columns. A DNS
# label (a container name) has at most 63 characters, so valid names show whole.
# A longer cell, such as a name from a bogus Host header, is cut with "…", so it
# cannot widen the column on every row. --json output is never cut.
MAX_CELL_WIDTH = 64


def display_width(text: str) -> int:
    """Count the terminal columns ``text`` takes: wide characters (such as Japanese) take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def clip(text: str, width: int) -> str:
    """Cut ``text`` to at most ``width`` terminal columns, ending a cut text with "…"."""
    if display_width(text) <= width:
        return text
    shown_chars = []
    used = 1  # the "…"
    for char in text:
        used += display_width(char)
        if used > width:
            break
        shown_chars.append(char)
    return "".join(shown_chars) + "…"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], *, right: Sequence[int] = ()) -> list[str]:
    """Format rows under a header in aligned columns; columns listed in ``right`` are right-aligned.

    Cells of every column but the last are cut to MAX_CELL_WIDTH. The last
    column pads nothing, so it is shown whole.
    """
    last = len(header) - 1
    cells = [[str(cell) for cell in header]]
    cells += [[clip(str(cell), MAX_CELL_WIDTH) if column < last else str(cell) for column, cell in enumerate(row)] for row in rows]
    widths = [max(display_width(row[column]) for row in cells) for column in range(len(header))]
    lines = []
    for row in cells:
        parts = []
        for column, cell in enumerate(row):
            padding = " " * (widths[column] - display_width(cell))
            parts.append(padding + cell if column in right else cell + padding)
        lines.append("  ".join(parts).rstrip())
    return lines


def json_line(document: dict[str, Any]) -> str:
    """Serialize ``document`` as one JSON line with sorted keys, so equal reports give equal bytes."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def seconds_text(seconds: float) -> str:
    return f"{seconds:.3f} s"


class Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal and the work has taken over a second."""

    def __init__(self, label: str, total: float, stream: IO[str] | None = None):
        self.label = label
        self.total = max(total, 1.0)
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._shown = False
        self._enabled = self.stream.isatty()

    def update(self, done: float) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self.started < PROGRESS_AFTER_SECONDS or now - self._drawn_at < PROGRESS_REDRAW_SECONDS:
            return
        self._drawn_at = now
        fraction = min(1.0, done / self.total)
        filled = int(fraction * _BAR_COLUMNS)
        bar = "#" * filled + "." * (_BAR_COLUMNS - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction * 100:5.1f}%")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r" + " " * (display_width(self.label) + _BAR_COLUMNS + 12) + "\r")
            self.stream.flush()
            self._shown = False
