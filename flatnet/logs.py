"""The loggers of flatnet's subsystems, declared in one place.

Nothing else calls ``logging.getLogger``: a module imports the logger of its
subsystem from here.
"""

from __future__ import annotations

import datetime
import logging
import sys

import orjson

gateway = logging.getLogger("flatnet.gateway")
log = logging.getLogger("flatnet.log")
sync = logging.getLogger("flatnet.sync")
registry = logging.getLogger("flatnet.registry")
proxy = logging.getLogger("flatnet.proxy")
routes = logging.getLogger("flatnet.routes")
access = logging.getLogger("flatnet.access")
lab = logging.getLogger("flatnet.lab")
cni = logging.getLogger("flatnet.cni")

_log_format = "text"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")


_RESERVED_FIELDS = frozenset({"ts", "level", "logger", "message", "error"})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message``, and ``error`` for exceptions.

    A record logged with ``extra={"fields": {...}}`` carries those fields too,
    under their own names. The field names are documented in docs/logs.md.
    """

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update({key: value for key, value in fields.items() if key not in _RESERVED_FIELDS})
        if record.exc_info:
            document["error"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


def _formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(_FORMAT)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Send records of ``level`` and above to stderr, as text lines or JSON lines."""
    global _log_format
    _log_format = log_format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(log_format))
    root = logging.getLogger("flatnet")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def add_access_log_file(path: str) -> None:
    """Also write the proxy's access lines to ``path``, one line per request."""
    handler = logging.FileHandler(path)
    if _log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    access.addHandler(handler)
