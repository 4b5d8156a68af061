"""The report of `replay decisions`: the classes, the evidence, the totals, and how shares add up.

Every part of a report is sorted by its content, never by the order work was
done in, so the same directory always gives the same report.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from flatnet.replay.datadir import DecisionFile
from flatnet.replay.history import History
from flatnet.replay.records import RecordIndex
from flatnet.replay.routing import Result
from flatnet.replay.settings import ReplaySettings


class Verdict(str, enum.Enum):
    CONSISTENT = "consistent"
    STALE = "stale"
    DIVERGENT = "divergent"


class Skip(str, enum.Enum):
    """The reason a record was not classified."""

    UNREPLAYABLE = "unreplayable"
    BEFORE_HISTORY = "before-history"
    INCOMPLETE = "incomplete-line"


@dataclasses.dataclass(frozen=True)
class AuditOptions:
    """The records to audit: a time range (POSIX times), a container name, a request id."""

    since: float = -math.inf
    until: float = math.inf
    name: str | None = None
    request_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Evidence:
    """An event an owner had in its log before the decision, and the gateway did not have yet."""

    origin: int
    seq: int
    ts: str
    type: str
    container_id: str
    reason: str | None
    # Seconds from the event to the decision.
    lag: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One decision that was not consistent, with what shows it."""

    verdict: Verdict
    ts: float
    request_id: str
    name: str | None
    host: str
    recorded: Result
    replayed: Result
    # For a stale decision: the result the owners' logs led to at that moment.
    expected: Result | None
    change: str | None
    evidence: tuple[Evidence, ...]
    # Seconds from the owner's change to the decision.
    lag: float | None
    source: str


@dataclasses.dataclass
class AuditReport:
    """Everything `replay decisions` found in one data directory."""

    data_dir: Path
    gateway: int
    config: Path | None
    counts: collections.Counter[Verdict] = dataclasses.field(default_factory=collections.Counter)
    by_name: dict[str, collections.Counter[Verdict]] = dataclasses.field(default_factory=dict)
    by_owner: dict[str, collections.Counter[Verdict]] = dataclasses.field(default_factory=dict)
    skipped: collections.Counter[Skip] = dataclasses.field(default_factory=collections.Counter)
    corrupt: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    findings: list[Finding] = dataclasses.field(default_factory=list)
    first_ts: float | None = None
    last_ts: float | None = None
    # Per origin: the highest seq a decision saw beyond the log's head, and that head.
    missing: dict[int, tuple[int, int]] = dataclasses.field(default_factory=dict)

    @property
    def audited(self) -> int:
        return sum(self.counts.values())

    @property
    def exit_status(self) -> int:
        return 1 if self.counts[Verdict.DIVERGENT] or self.corrupt else 0


def conclude(parts: list[AuditReport], history: History, settings: ReplaySettings) -> AuditReport:
    """Add the reports of the shares up into one, in an order that depends only on their content."""
    report = AuditReport(parts[0].data_dir, settings.settings.host_id, settings.config) if parts else None
    for part in parts:
        report.counts.update(part.counts)
        report.skipped.update(part.skipped)
        report.corrupt += part.corrupt
        report.notes += part.notes
        report.findings += part.findings
        for table, merged in ((part.by_name, report.by_name), (part.by_owner, report.by_owner)):
            for key, counts in table.items():
                merged.setdefault(key, collections.Counter()).update(counts)
        for origin, (seq, head) in part.missing.items():
            if origin not in report.missing or seq > report.missing[origin][0]:
                report.missing[origin] = (seq, head)
        if part.first_ts is not None:
            report.first_ts = part.first_ts if report.first_ts is None else min(report.first_ts, part.first_ts)
            report.last_ts = part.last_ts if report.last_ts is None else max(report.last_ts, part.last_ts)

    for origin, (seq, head) in sorted(report.missing.items()):
        report.corrupt.append(
            f"decisions saw events of origin {origin} up to seq {seq}, but its log here ends at seq {head}:"
            f" the log lost events, or the data directory was copied before the log"
        )
    for origin, span in sorted(history.spans.items()):
        if span.failure is not None:
            report.corrupt.append(f"the log of origin {origin} is damaged; views stop at seq {span.head}: {span.failure}")
    report.by_name = dict(sorted(report.by_name.items()))
    report.by_owner = dict(sorted(report.by_owner.items()))
    report.findings.sort(key=lambda finding: (finding.ts, finding.source))
    report.corrupt.sort()
    report.notes.sort()
    return report


def with_request_ids(found: list[tuple[int, Finding]], index: RecordIndex) -> list[Finding]:
    """Fill in the findings' request ids, read again from their lines."""
    wanted: dict[DecisionFile, dict[int, list[int]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for slot, (position, _) in enumerate(found):
        file, number = index.locate(position)
        wanted[file][number].append(slot)
    request_ids = [""] * len(found)
    for file, numbers in wanted.items():
        for number, line in _lines_numbered(file.path, sorted(numbers)):
            for slot in numbers[number]:
                request_ids[slot] = _request_id(line)
    return [dataclasses.replace(finding, request_id=request_id) for (_, finding), request_id in zip(found, request_ids)]


def _lines_numbered(path: Path, numbers: list[int], block_bytes: int = 8 << 20) -> Iterator[tuple[int, bytes]]:
    """Yield the lines of ``path`` with the given numbers (counting from 1, sorted).

    Blocks without a wanted line are only counted, not split into lines.
    """
    wanted = iter(numbers)
    target = next(wanted, None)
    number = 1
    rest = b""
    with open(path, "rb") as file:
        while target is not None:
            block = file.read(block_bytes)
            if not block:
                return
            data = rest + block
            end = data.rfind(b"\n") + 1
            complete, rest = data[:end], data[end:]
            lines_here = complete.count(b"\n")
            if target < number + lines_here:
                lines = complete.split(b"\n")
                while target is not None and target < number + lines_here:
                    yield target, lines[target - number]
                    target = next(wanted, None)
            number += lines_here


def _request_id(line: bytes) -> str:
    try:
        fields = orjson.loads(line)
    except orjson.JSONDecodeError:
        return ""
    value = fields.get("request_id") if isinstance(fields, dict) else None
    return value if isinstance(value, str) else ""
