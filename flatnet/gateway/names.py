"""Names in requests: the container a Host header requests, and the language a client reads.

Parsing works on the raw bytes of a request, so the proxy's hot path never
decodes a header it does not need.
"""

from __future__ import annotations

import dataclasses
import enum
import re

# A container name as podman allows it ([a-zA-Z0-9][a-zA-Z0-9_.-]*), lower-cased.
_NAME = re.compile(rb"[a-z0-9][a-z0-9_.-]*")
_PORT = re.compile(rb"[0-9]{1,5}")
# The maximum length of a container name the log accepts (events.record.CONTAINER_NAME), as in DNS.
MAX_NAME_LENGTH = 253


class HostProblem(enum.Enum):
    """The reason a Host header names no container, each with its own error page."""

    MISSING = "missing"
    REPEATED = "repeated"
    MALFORMED = "malformed"
    FOREIGN = "foreign"


@dataclasses.dataclass(frozen=True, slots=True)
class HostName:
    """The container name in a Host header, and the port it asked for, if any."""

    name: str
    port: int | None


class InvalidHost(Exception):
    """A Host header that names no container of this domain."""

    def __init__(self, problem: HostProblem, host: str, rule: str):
        super().__init__(f"Host {host!r}: {rule}")
        self.problem = problem
        self.host = host
        self.rule = rule


def parse_host(host: bytes | None, domain: str) -> HostName:
    """Return the container name and port in ``host``, ``<name>.<domain>[.][:port]``.

    Case is ignored. Raise InvalidHost naming the rule broken.
    """
    if host is None:
        raise InvalidHost(HostProblem.MISSING, "", "the Host header is required")
    text = host.decode("latin-1")
    value = host.strip().lower()
    if not value:
        raise InvalidHost(HostProblem.MISSING, text, "the Host header is empty")
    if value.startswith(b"["):
        raise InvalidHost(HostProblem.FOREIGN, text, f"an IP address names no container; send <name>.{domain}")

    port = None
    name, colon, port_text = value.partition(b":")
    if colon:
        if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
            raise InvalidHost(HostProblem.MALFORMED, text, "the port must be a number from 1 to 65535")
        port = int(port_text)

    name = name.rstrip(b".")
    suffix = b"." + domain.encode("ascii")
    if not name.endswith(suffix):
        raise InvalidHost(HostProblem.FOREIGN, text, f"the name must end in .{domain}")
    name = name[: -len(suffix)]
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidHost(HostProblem.MALFORMED, text, f"the container name must be at most {MAX_NAME_LENGTH} characters")
    if not _NAME.fullmatch(name) or name.endswith((b".", b"-")) or b".." in name:
        raise InvalidHost(
            HostProblem.MALFORMED, text,
            "the container name must be letters, digits, '_', '.' and '-', starting with a letter or digit",
        )
    return HostName(name.decode("ascii"), port)


def split_absolute_target(target: bytes) -> tuple[bytes | None, bytes]:
    """Split a request target into its authority and its path.

    A proxy must take the host from an absolute-form target (``http://host/path``)
    and ignore the Host header (RFC 9112, section 3.2.2). An origin-form target
    (``/path``) has no authority, and None is returned for it.
    """
    if target[:1] == b"/" or not target.lower().startswith(b"http://"):
        return None, target
    rest = target[len(b"http://"):]
    slash = rest.find(b"/")
    if slash < 0:
        return rest, b"/"
    return rest[:slash], rest[slash:]


def prefers_japanese(accept_language: bytes | None) -> bool:
    """Tell whether an Accept-Language header ranks Japanese above English.

    Only the two languages the proxy writes are compared, each by its own q
    value or, failing that, the q value of ``*``.
    """
    if not accept_language:
        return False
    weights: dict[str, float] = {}
    for part in accept_language.decode("latin-1").split(","):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        weight = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                weight = float(params[2:])
            except ValueError:
                weight = 0.0
        primary = tag.split("-", 1)[0]
        if primary in ("ja", "en", "*"):
            weights[primary] = max(weights.get(primary, 0.0), weight)
    fallback = weights.get("*", 0.0)
    return weights.get("ja", fallback) > weights.get("en", fallback)
