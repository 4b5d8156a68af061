"""Messages a person reads on screen, in English and Japanese.

The language follows the POSIX locale variables in their order of precedence
(LC_ALL, LC_MESSAGES, LANG): a value starting with ``ja`` selects Japanese.
Code, logs and identifiers stay in English; only text shown to a person goes
through :func:`text`.
"""

from __future__ import annotations

import os

_catalog: dict[str, tuple[str, str]] = {}


def locale_is_japanese(environ: dict[str, str] | None = None) -> bool:
    """Tell whether the effective message locale is Japanese."""
    env = os.environ if environ is None else environ
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name)
        if value:
            return value.lower().startswith("ja")
    return False


def define(messages: dict[str, tuple[str, str]]) -> None:
    """Add messages to the catalog: key -> (English, Japanese) format strings."""
    for key, pair in messages.items():
        if key in _catalog and _catalog[key] != pair:
            raise ValueError(f"message key {key!r} is defined twice with different text")
        _catalog[key] = pair


def catalog() -> dict[str, tuple[str, str]]:
    """Return a copy of every message defined so far: key -> (English, Japanese)."""
    return dict(_catalog)


def text(key: str, /, *, japanese: bool | None = None, **values: object) -> str:
    """Format message ``key`` in the locale's language with ``values``."""
    english, japanese_text = _catalog[key]
    use_japanese = locale_is_japanese() if japanese is None else japanese
    return (japanese_text if use_japanese else english).format(**values)
