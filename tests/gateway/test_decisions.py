"""The decision log: batched off the request path, rolling, one access line per record."""

import asyncio
import json

from flatnet.gateway.decisions import Decision, DecisionLog, DecisionRecord


def _record(index: int) -> DecisionRecord:
    return DecisionRecord(
        ts=1_800_000_000.25 + index, request_id=f"r{index}", client="127.0.0.1", method="GET", host="web.flatnet",
        name="web", decision=Decision.PEER, target="http://10.100.0.2:8080", owner=2, container_id="c1",
        vector={1: 3, 2: 9}, expired=(3,), status=200, bytes_sent=10, duration_ms=1.5,
    )


async def _write(log: DecisionLog, count: int) -> None:
    for index in range(count):
        log.add(_record(index))
    await asyncio.sleep(0)


def test_records_are_written_as_json_lines(tmp_path):
    log = DecisionLog(tmp_path)

    asyncio.run(_write(log, 3))
    log.close()

    lines = (tmp_path / "decisions" / "decisions.jsonl").read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["r0", "r1", "r2"]
    assert json.loads(lines[0])["vector"] == {"1": 3, "2": 9}
    assert json.loads(lines[0])["decision"] == "peer"


def test_log_rolls_over_and_keeps_files(tmp_path):
    log = DecisionLog(tmp_path, max_bytes=1 << 16, keep_files=2)

    async def write_batches():
        for _ in range(40):
            await _write(log, 50)
            log.flush()

    asyncio.run(write_batches())
    log.close()

    directory = tmp_path / "decisions"
    assert sorted(path.name for path in directory.iterdir()) == ["decisions.jsonl", "decisions.jsonl.1", "decisions.jsonl.2"]
    for path in directory.iterdir():
        assert path.stat().st_size <= 1 << 16


def test_access_line_per_record(tmp_path):
    access = tmp_path / "access.log"
    log = DecisionLog(tmp_path, access_log=access)

    asyncio.run(_write(log, 2))
    log.close()

    lines = access.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("2027-01-15T08:00:00.250Z client=127.0.0.1 method=GET")
    assert 'host="web.flatnet" name=web decision=peer target=http://10.100.0.2:8080 owner=2 status=200' in lines[0]
    assert lines[1].endswith("request_id=r1")


def test_add_returns_before_anything_is_written(tmp_path):
    log = DecisionLog(tmp_path)

    async def add_one() -> int:
        log.add(_record(0))
        return (tmp_path / "decisions" / "decisions.jsonl").stat().st_size

    assert asyncio.run(add_one()) == 0
    log.close()
