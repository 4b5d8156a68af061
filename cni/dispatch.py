"""One plugin invocation from environment and stdin to stdout bytes and exit code.

The launcher calls this in-process, and the gateway's fast path calls it for
each request on its socket: the same function, so both paths give the same
result. Diagnostics go to ``<dataDir>/cni.log`` through the ``flatnet.cni``
logger, never to stdout, in English. The error object on stdout is in the
language of the locale variables in ``environ``: on the fast path those are
the plugin's, which the launcher forwards, not the gateway's.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

from flatnet import i18n
from flatnet.cni import command_metrics, spec
from flatnet.cni.handoff import Announcer
from flatnet.cni.spec import CniError
from flatnet.logs import cni as logger

LOG_FILE = "cni.log"
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_log_files: set[Path] = set()


class _DataDirLog(logging.FileHandler):
    """A log file in the data directory, which the first ADD on a host may not have made yet."""

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def execute(environ: dict[str, str], stdin: bytes, announcer: Announcer | None = None) -> tuple[bytes, int]:
    """Run one command; return what goes to stdout and the exit code."""
    cni_version = spec.error_version(stdin)
    japanese = i18n.locale_is_japanese(environ)
    try:
        request = spec.parse_request(environ, stdin)
        if request.command == "VERSION":
            return spec.encode(spec.version_result(request.config)), 0
        _log_to(request.config.get("dataDir"))
        # Imported here, not at the top: it loads pyroute2 (about 0.2 s), which
        # a request rejected by the parser above never needs.
        from flatnet.cni import commands

        result = commands.run(request, announcer)
    except CniError as error:
        if error.code not in (spec.INVALID_ENVIRONMENT, spec.DECODE_FAILURE, spec.INCOMPATIBLE_VERSION):
            logger.warning("%s %s/%s failed with code %d: %s %s", environ.get("CNI_COMMAND"), environ.get("CNI_CONTAINERID"),
                           environ.get("CNI_IFNAME"), error.code, error.msg, error.details)
        return spec.encode(error.as_dict(cni_version, japanese=japanese)), 1
    except Exception as error:  # noqa: BLE001 - the runtime must get a CNI error object, not a traceback
        logger.error("%s %s/%s failed unexpectedly:\n%s", environ.get("CNI_COMMAND"), environ.get("CNI_CONTAINERID"),
                     environ.get("CNI_IFNAME"), traceback.format_exc())
        failure = CniError(spec.INTERNAL_FAILURE, i18n.Message("cni.internal_error", error=error))
        return spec.encode(failure.as_dict(cni_version, japanese=japanese)), 1
    return (spec.encode(result) if result is not None else b""), 0


def execute_in_process(environ: dict[str, str], stdin: bytes) -> tuple[bytes, int]:
    """Run one command in the plugin's own process and add it to the in-process metrics of its data directory.

    The gateway counts the fast path itself; this is the plugin's side of the
    same metrics (see flatnet.cni.command_metrics). The duration covers the
    command's work, including the import of pyroute2.
    """
    started = time.perf_counter()
    # An exception out of execute (the launcher turns it into code 999) counts as an error too.
    code = 1
    try:
        stdout, code = execute(environ, stdin)
    finally:
        seconds = time.perf_counter() - started
        data_dir = command_metrics.data_dir_of(stdin)
        if data_dir is not None:
            command_metrics.record(data_dir, environ.get("CNI_COMMAND", ""), code == 0, seconds)
    return stdout, code


def _log_to(data_dir: object) -> None:
    """Also write the ``flatnet.cni`` logger's records to ``<dataDir>/cni.log``, once per directory.

    podman discards a plugin's stderr when it succeeds, so a DEL that found the
    namespace gone would leave no trace there.
    NOTE: a gateway serving configs with different data directories writes
    every record to each of their logs; one data directory per host is the norm.
    """
    if not isinstance(data_dir, str) or not data_dir.startswith("/"):
        return
    path = Path(data_dir) / LOG_FILE
    if path in _log_files:
        return
    _log_files.add(path)
    handler = _DataDirLog(path, delay=True)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    # A plugin process has no logging configured; a gateway keeps its own level.
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
