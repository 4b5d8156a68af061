"""Crash test: a process appending to the log is killed with SIGKILL at random moments.

Each round forks a child that opens the log (recovering whatever the last kill
left) and appends events. It appends with one fsync per event or by group
commit with 1 to 64 concurrent writers, and writes the seq of every
acknowledged event to a pipe.
The test kills it at a random moment, reopens the log and checks that every
acknowledged event is there, unchanged, and that the tail is clean.

SIGKILL seldom tears a write in two (the kernel finishes small writes), so
most tails here end whole; test_log's truncation property cuts a segment at
every byte to cover torn tails.
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import time

from flatnet.events.commit import GroupCommit
from flatnet.events.log import OriginLog
from tests.events.test_log import ORIGIN, make_event

ROUNDS = 220
SEGMENT_BYTES = 16 * 1024
# Long enough for a few hundred appends, so kills land before, during and after batches.
MAX_KILL_DELAY_SECONDS = 0.03
CHILD_TIMEOUT_SECONDS = 10.0


def _append_until_killed(directory, writers: int, ack_fd: int) -> None:
    log = OriginLog(directory, ORIGIN, segment_bytes=SEGMENT_BYTES)
    os.write(ack_fd, b"ready\n")
    next_seq = log.head + 1
    deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS

    if writers == 0:
        while time.monotonic() < deadline:
            log.append(make_event(next_seq))
            os.write(ack_fd, b"%d\n" % next_seq)
            next_seq += 1
        return

    async def main() -> None:
        nonlocal next_seq
        commit = GroupCommit(log)

        async def writer() -> None:
            nonlocal next_seq
            while time.monotonic() < deadline:
                seq = next_seq
                next_seq += 1
                await commit.append(make_event(seq))
                os.write(ack_fd, b"%d\n" % seq)

        await asyncio.gather(*(writer() for _ in range(writers)))

    asyncio.run(main())


def _run_round(directory, rng: random.Random) -> tuple[list[int], str]:
    writers = rng.choice([0, 1, 8, 64])
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            _append_until_killed(directory, writers, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)

    received = b""
    kill_at = None
    try:
        while True:
            now = time.monotonic()
            if kill_at is not None and now >= kill_at:
                os.kill(pid, signal.SIGKILL)
                break
            wait = CHILD_TIMEOUT_SECONDS if kill_at is None else kill_at - now
            ready, _, _ = select.select([read_fd], [], [], wait)
            if ready:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                received += chunk
            if kill_at is None and b"ready\n" in received:
                kill_at = time.monotonic() + rng.uniform(0, MAX_KILL_DELAY_SECONDS)
        os.waitpid(pid, 0)
        # Acknowledgements written before the kill are still in the pipe.
        while chunk := os.read(read_fd, 65536):
            received += chunk
    finally:
        os.close(read_fd)
    lines = received.split(b"\n")
    acknowledged = [int(line) for line in lines[:-1] if line.isdigit()]
    return acknowledged, f"{'per-event fsync' if writers == 0 else f'group commit, {writers} writers'}"


def test_kill_at_random_moments_loses_no_acknowledged_event(tmp_path):
    rng = random.Random(20261204)
    verified = 0
    total_acknowledged = 0
    repairs = 0

    for round_number in range(ROUNDS):
        acknowledged, mode = _run_round(tmp_path, rng)
        total_acknowledged += len(acknowledged)

        log = OriginLog(tmp_path, ORIGIN, segment_bytes=SEGMENT_BYTES)
        repairs += log.repair is not None
        where = f"round {round_number} ({mode})"
        assert log.head >= max(acknowledged, default=0), f"{where}: acknowledged seq {max(acknowledged)} lost, head {log.head}"
        for event in log.read(after=verified):
            assert event == make_event(event.seq), f"{where}: seq {event.seq} differs from what was appended"
            verified = event.seq
        assert verified == log.head
        log.close()

        last_segment = sorted(tmp_path.glob("*.jsonl"))[-1] if list(tmp_path.glob("*.jsonl")) else None
        if last_segment is not None:
            data = last_segment.read_bytes()
            assert data == b"" or data.endswith(b"\n"), f"{where}: {last_segment} does not end with a whole record"
        reopened = OriginLog(tmp_path, ORIGIN, segment_bytes=SEGMENT_BYTES)
        assert reopened.repair is None, f"{where}: a clean tail needed repair again: {reopened.repair}"
        reopened.close()

    # The rounds must have appended something and been killed mid-write at least sometimes.
    assert total_acknowledged > ROUNDS
    assert verified > 0
    print(f"{ROUNDS} kills, {total_acknowledged} acknowledged events, {verified} stored, {repairs} torn tails cut")
