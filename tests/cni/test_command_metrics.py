"""The in-process metrics file: totals, its checks, and concurrent plugins adding to it."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from flatnet.cni import command_metrics
from flatnet.cni.command_metrics import FILE_NAME, Totals


def test_record_places_durations_in_buckets(tmp_path):
    command_metrics.record(tmp_path, "ADD", True, 0.0004)
    command_metrics.record(tmp_path, "ADD", False, 0.2)
    command_metrics.record(tmp_path, "ADD", True, 100.0)

    totals = command_metrics.read(tmp_path)
    add = totals.commands["ADD"]
    bounds = list(command_metrics.DURATION_BUCKETS)
    assert add.results == {"ok": 2, "error": 1}
    assert add.bucket_counts[bounds.index(0.0005)] == 1
    assert add.bucket_counts[bounds.index(0.25)] == 1
    assert add.bucket_counts[-1] == 1
    assert sum(add.bucket_counts) == 3
    assert add.seconds == pytest.approx(100.2004)


def test_read_before_first_run_is_none(tmp_path):
    assert command_metrics.read(tmp_path) is None


def test_unknown_command_is_not_recorded(tmp_path):
    command_metrics.record(tmp_path, "PING", True, 0.01)

    assert command_metrics.read(tmp_path) is None


def test_file_size_does_not_grow_with_runs(tmp_path):
    command_metrics.record(tmp_path, "DEL", True, 0.003)
    size_after_one = (tmp_path / FILE_NAME).stat().st_size
    for _ in range(200):
        command_metrics.record(tmp_path, "DEL", True, 0.003)

    # Only the counts and the sum get longer: a few digits, and up to 17 significant digits of a float.
    assert (tmp_path / FILE_NAME).stat().st_size <= size_after_one + 32
    assert command_metrics.read(tmp_path).commands["DEL"].results["ok"] == 201


def test_invalid_file_is_started_over(tmp_path):
    (tmp_path / FILE_NAME).write_text("{not json")

    command_metrics.record(tmp_path, "ADD", True, 0.01)

    assert command_metrics.read(tmp_path).commands["ADD"].results == {"ok": 1, "error": 0}


def test_other_buckets_are_started_over(tmp_path):
    old = Totals((0.1, 1.0))
    old.observe("ADD", True, 0.05)
    (tmp_path / FILE_NAME).write_text(json.dumps(old.to_document()))

    command_metrics.record(tmp_path, "ADD", True, 0.01)

    totals = command_metrics.read(tmp_path)
    assert totals.bounds == command_metrics.DURATION_BUCKETS
    assert totals.commands["ADD"].results["ok"] == 1


def test_unwritable_file_is_logged_not_raised(tmp_path, caplog):
    (tmp_path / FILE_NAME).mkdir()

    command_metrics.record(tmp_path, "ADD", True, 0.01)

    assert "failed to record the in-process ADD" in caplog.text


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda document: document.update(format=2), "format"),
        (lambda document: document.update(buckets=[1, 0.5]), "buckets"),
        (lambda document: document["commands"].update(PING=document["commands"]["ADD"]), "unknown command"),
        (lambda document: document["commands"]["ADD"].update(ok=-1), "result counts"),
        (lambda document: document["commands"]["ADD"].update(ok=True), "result counts"),
        (lambda document: document["commands"]["ADD"]["buckets"].pop(), "bucket counts"),
        (lambda document: document["commands"]["ADD"].update(ok=5), "do not add up"),
        (lambda document: document["commands"]["ADD"].update(sum="fast"), "sum"),
    ],
)
def test_invalid_documents_are_rejected(change, problem):
    totals = Totals()
    totals.observe("ADD", True, 0.01)
    document = totals.to_document()
    change(document)

    with pytest.raises(ValueError, match=problem):
        Totals.from_document(document)


def _record_many(data_dir, count):
    for _ in range(count):
        command_metrics.record(data_dir, "ADD", True, 0.001)


def test_concurrent_plugins_lose_no_run(tmp_path):
    processes = [multiprocessing.get_context("fork").Process(target=_record_many, args=(tmp_path, 100)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)

    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    assert command_metrics.read(tmp_path).commands["ADD"].results["ok"] == 400
