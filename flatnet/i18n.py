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


class Message:
    """A catalog message and its values, formatted once the reader's language is known.

    An error raised deep inside a request carries one, because only the code
    that writes the response has the requester's locale. A value that is a
    Message or Joined is formatted in the same language; any other value is
    formatted as it is. ``str()`` gives the English text, for logs.
    """

    __slots__ = ("key", "values")

    def __init__(self, key: str, /, **values: object):
        if key not in _catalog:
            raise KeyError(f"message key {key!r} is not defined")
        self.key = key
        self.values = values

    def render(self, japanese: bool | None = None) -> str:
        """Format the message in Japanese, in English, or (with None) in this process's locale's language."""
        if japanese is None:
            japanese = locale_is_japanese()
        values = {name: _render_value(value, japanese) for name, value in self.values.items()}
        return text(self.key, japanese=japanese, **values)

    def __str__(self) -> str:
        return self.render(japanese=False)

    def __repr__(self) -> str:
        return f"Message({self.key!r}, {self.values!r})"


class Joined:
    """Messages (or plain strings) formatted one by one and joined with ``separator``, as a Message value."""

    __slots__ = ("items", "separator")

    def __init__(self, items: list[Message | str], separator: str = "; "):
        self.items = items
        self.separator = separator

    def render(self, japanese: bool | None = None) -> str:
        return self.separator.join(str(_render_value(item, japanese)) for item in self.items)

    def __str__(self) -> str:
        return self.render(japanese=False)


def _render_value(value: object, japanese: bool | None) -> object:
    if isinstance(value, (Message, Joined)):
        return value.render(japanese)
    return value
