"""Group commit: concurrent appends share a batch, keep their order, and are acknowledged only when durable."""

import asyncio
import os

import pytest

from flatnet.events.commit import GroupCommit
from flatnet.events.log import LogError, OriginFailed, OriginLog
from tests.events.test_log import ORIGIN, make_event, segments


async def test_concurrent_appends_share_batches(tmp_path):
    log = OriginLog(tmp_path, ORIGIN)
    commit = GroupCommit(log)

    await asyncio.gather(*(commit.append(make_event(seq)) for seq in range(1, 65)))

    assert log.head == 64
    assert commit.batches < 64
    assert [event.seq for event in OriginLog(tmp_path, ORIGIN).read()] == list(range(1, 65))


async def test_single_append_is_one_batch(tmp_path):
    commit = GroupCommit(OriginLog(tmp_path, ORIGIN))

    await commit.append(make_event(1))
    await commit.append(make_event(2))

    assert commit.batches == 2


async def test_on_durable_sees_batch_before_ack(tmp_path):
    log = OriginLog(tmp_path, ORIGIN)
    seen = []

    def on_durable(events):
        # Called once the batch is on disk and before any appender resumes.
        seen.extend((event.seq, log.head) for event in events)

    commit = GroupCommit(log, on_durable)
    await asyncio.gather(*(commit.append(make_event(seq)) for seq in range(1, 11)))

    assert [seq for seq, _ in seen] == list(range(1, 11))
    assert all(head >= seq for seq, head in seen)


async def test_failed_batch_fails_every_later_append(tmp_path):
    log = OriginLog(tmp_path, ORIGIN)
    commit = GroupCommit(log)
    await commit.append(make_event(1))
    read_only = os.open(segments(tmp_path)[0], os.O_RDONLY)
    os.dup2(read_only, log._writer.fileno())
    os.close(read_only)

    results = await asyncio.gather(*(commit.append(make_event(seq)) for seq in range(2, 6)), return_exceptions=True)

    assert all(isinstance(result, LogError) for result in results)
    assert log.head == 1
    with pytest.raises(OriginFailed):
        await commit.append(make_event(2))


async def test_out_of_order_event_fails_alone(tmp_path):
    log = OriginLog(tmp_path, ORIGIN)
    commit = GroupCommit(log)

    with pytest.raises(LogError, match="does not follow head 0"):
        await commit.append(make_event(3))

    await commit.append(make_event(1))
    assert log.head == 1


async def test_flush_waits_for_pending_appends(tmp_path):
    log = OriginLog(tmp_path, ORIGIN)
    commit = GroupCommit(log)
    futures = [commit.submit(make_event(seq)) for seq in range(1, 6)]

    await commit.flush()

    assert all(future.done() for future in futures)
    assert log.head == 5
