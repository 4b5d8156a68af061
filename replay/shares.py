"""Auditing decision files in several processes, each a share of the files.

Each process (forked, so it starts with the parent's modules and snapshots)
folds the history itself, indexes its share of the records and classifies
them. Its report goes back over a pipe. Settings inferred from the records
need every share's routing fields, so each child first sends its shape
counts, the parent infers the settings from all of them and sends them back.
A child that fails is replaced by the parent auditing its share itself.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import threading
from pathlib import Path
from typing import IO, Any

from flatnet.errors import FlatnetError
from flatnet.events import snapshot as snapshots
from flatnet.replay import audit
from flatnet.replay import settings as replay_settings
from flatnet.replay.datadir import DataDir, DecisionFile
from flatnet.replay.history import History
from flatnet.replay.output import Progress
from flatnet.replay.records import RecordIndex
from flatnet.replay.settings import ReplaySettings

# Below this many bytes of decision files, one process is faster than forking.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024


@dataclasses.dataclass
class Job:
    """The inputs every share of one audit needs."""

    data_dir: DataDir
    config: Path | None
    options: audit.AuditOptions
    snapshot_list: list[snapshots.Snapshot]
    settings: ReplaySettings | None = None


@dataclasses.dataclass
class _Child:
    pid: int
    files: list[tuple[DecisionFile, int]]
    results: IO[bytes]
    shapes: IO[bytes] | None
    settings: IO[bytes] | None


def run(
    job: Job, files: list[tuple[DecisionFile, int]], processes: int | None, progress: Progress,
) -> tuple[list[audit.AuditReport], History]:
    """Audit ``files`` in up to ``processes`` processes; return each share's report and the parent's history."""
    total = sum(size for _, size in files)
    if processes is None:
        processes = (os.cpu_count() or 1) if total >= PARALLEL_MIN_BYTES else 1
    # Forking a process that runs other threads can copy a lock held by one of them.
    if threading.active_count() > 1:
        processes = 1
    groups = _split(files, max(1, processes))
    if job.config is not None:
        job.settings = replay_settings.from_config(job.config, job.data_dir, job.snapshot_list)
    children = [_start(job, group) for group in groups[1:]]

    def settings_for(index: RecordIndex) -> ReplaySettings:
        if job.settings is None:
            job.settings = _infer_with_children(job, index, children)
        return job.settings

    try:
        own, history = audit.audit_share(job, groups[0], settings_for, progress)
    except BaseException:
        for child in children:
            _abandon(child)
        raise
    parts = [own]
    for child in children:
        parts.append(_collect(job, child))
    return parts, history


def _split(files: list[tuple[DecisionFile, int]], parts: int) -> list[list[tuple[DecisionFile, int]]]:
    """Split ``files`` into at most ``parts`` groups of about equal size (largest first, greedy)."""
    groups: list[list[tuple[DecisionFile, int]]] = [[] for _ in range(parts)]
    totals = [0] * parts
    for entry in sorted(files, key=lambda entry: (-entry[1], str(entry[0].path))):
        smallest = totals.index(min(totals))
        groups[smallest].append(entry)
        totals[smallest] += entry[1]
    return [groups[0]] + [group for group in groups[1:] if group]


def _start(job: Job, files: list[tuple[DecisionFile, int]]) -> _Child:
    results_read, results_write = os.pipe()
    shapes_read = shapes_write = settings_read = settings_write = None
    if job.settings is None:
        shapes_read, shapes_write = os.pipe()
        settings_read, settings_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(results_read)
        if shapes_read is not None:
            os.close(shapes_read)
            os.close(settings_write)
        _run_child(job, files, results_write, shapes_write, settings_read)
    os.close(results_write)
    if shapes_write is not None:
        os.close(shapes_write)
        os.close(settings_read)
    return _Child(
        pid, files, os.fdopen(results_read, "rb"),
        os.fdopen(shapes_read, "rb") if shapes_read is not None else None,
        os.fdopen(settings_write, "wb") if settings_write is not None else None,
    )


def _run_child(job: Job, files: list[tuple[DecisionFile, int]], results: int, shapes: int | None, settings: int | None) -> None:
    # A forked child audits its share, sends the report and exits without
    # running the parent's cleanup (atexit handlers, open files).
    status = 1
    try:
        def settings_for(index: RecordIndex) -> ReplaySettings:
            if job.settings is not None:
                return job.settings
            with os.fdopen(shapes, "wb") as pipe:
                pickle.dump(audit.shape_counts(index), pipe, protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(settings, "rb") as pipe:
                job.settings = pickle.load(pipe)
            return job.settings

        report, _ = audit.audit_share(job, files, settings_for, None)
        with os.fdopen(results, "wb") as pipe:
            pickle.dump(report, pipe, protocol=pickle.HIGHEST_PROTOCOL)
        status = 0
    finally:
        os._exit(status)


def _infer_with_children(job: Job, index: RecordIndex, children: list[_Child]) -> ReplaySettings:
    counts = audit.shape_counts(index)
    for child in children:
        try:
            theirs = pickle.load(child.shapes)
        except (EOFError, pickle.UnpicklingError):
            # The child died before it got there. Its share is audited here later,
            # and its files' routing fields are read here for the settings too.
            theirs = _shape_counts_of(job, child.files)
        for key, count in theirs.items():
            counts[key] = counts.get(key, 0) + count
    try:
        settings = audit.infer_settings(job.data_dir, job.snapshot_list, counts, index)
    except FlatnetError:
        for child in children:
            _abandon(child)
        raise
    for child in children:
        try:
            pickle.dump(settings, child.settings, protocol=pickle.HIGHEST_PROTOCOL)
            child.settings.close()
        except OSError:
            pass
    return settings


def _shape_counts_of(job: Job, files: list[tuple[DecisionFile, int]]) -> dict[Any, int]:
    from flatnet.replay.records import index_records

    return audit.shape_counts(index_records(files, since=job.options.since, until=job.options.until))


def _collect(job: Job, child: _Child) -> audit.AuditReport:
    try:
        with child.results:
            report = pickle.load(child.results)
    except (EOFError, pickle.UnpicklingError):
        report = None
    os.waitpid(child.pid, 0)
    if report is None:
        # The child died (out of memory, a signal): audit its share here.
        report, _ = audit.audit_share(job, child.files, lambda index: job.settings, None)
    return report


def _abandon(child: _Child) -> None:
    for pipe in (child.settings, child.results, child.shapes):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass
    os.waitpid(child.pid, 0)
