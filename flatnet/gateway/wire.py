"""HTTP/1.1 messages as the proxy sees them: request heads, framing, header filtering.

Bodies are framed again on each hop, so a message never carries both
Content-Length and Transfer-Encoding, and hop-by-hop headers (and those named
in Connection) never cross a hop.
"""

from __future__ import annotations

import dataclasses
import enum

# RFC 9110 section 7.6.1: connection-specific fields that a proxy must not forward.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
NO_BODY_STATUSES = frozenset({204, 304})


class Framing(enum.Enum):
    """How a message body is delimited on the wire."""

    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"


@dataclasses.dataclass(slots=True)
class RequestHead:
    """A request as parsed from a client: method, target, version and header lines."""

    method: bytes
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    upgrade: bool
    framing: Framing
    # Lower-cased names of the headers the proxy reads, with their values.
    fields: dict[bytes, list[bytes]]

    def field(self, name: bytes) -> bytes | None:
        values = self.fields.get(name)
        return values[0] if values else None


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """A response the gateway writes itself, such as an error page."""

    status: int
    reason: bytes
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    close: bool = False


def connection_tokens(fields: dict[bytes, list[bytes]]) -> set[bytes]:
    """Return the lower-cased header names listed in Connection, which are for this hop only."""
    tokens = set()
    for value in fields.get(b"connection", ()):
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


def forwardable(headers: list[tuple[bytes, bytes]], fields: dict[bytes, list[bytes]], drop: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    """Return ``headers`` without hop-by-hop ones, those named in Connection, and ``drop``."""
    named = connection_tokens(fields) if b"connection" in fields else ()
    kept = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in drop or lowered in named:
            continue
        kept.append((name, value))
    return kept


def head_bytes(first_line: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    parts = [first_line]
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> list[bytes]:
    return [b"%x\r\n" % len(data), data, b"\r\n"]
