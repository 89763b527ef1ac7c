"""StorageWriter: batching, ordering, shutdown, failures, and a SIGKILL in the middle of a session.

Nothing here asserts on durations; the crash test bounds what was lost by *which* samples
were appended before the last window, using the monotonic clock both processes share.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from ble.protocol import TelemetrySample
from gateway.errors import NotFound, StorageUnavailable
from gateway.storage import history, repo, session_log
from gateway.storage.models import SessionRecord, TelemetryBatch
from gateway.storage.writer import StorageWriter

HUB = "hub-test"
ROOT = Path(__file__).resolve().parents[3]
Samples = Callable[..., list[TelemetrySample]]


async def _session(writer: StorageWriter, user_id: int, address: str = "AA:01") -> str:
    record, _ = await writer.run(
        lambda s: session_log.create_session(
            session=s,
            hub_id=HUB,
            owner_id=user_id,
            device_address=address,
            program_slug="quick-lift",
            intensity=2,
            planned_s=300,
        )
    )
    return record.id


def _batches(engine: Engine, session_id: str) -> list[TelemetryBatch]:
    with Session(engine) as s:
        return list(
            s.exec(
                select(TelemetryBatch)
                .where(TelemetryBatch.session_id == session_id)
                .order_by(TelemetryBatch.seq)
            ).all()
        )


def test_append_telemetry_is_plain_not_a_coroutine() -> None:
    assert not inspect.iscoroutinefunction(StorageWriter.append_telemetry)


async def test_telemetry_waits_for_its_window_then_goes_in_one_row(
    engine: Engine, sample_factory: Samples
) -> None:
    async with StorageWriter(engine, flush_s=10) as writer:  # no timed flush during the test
        user = await writer.run(lambda s: repo.create_user(session=s, name="u"))
        sid = await _session(writer, user.id)
        samples = sample_factory(500)
        for i in range(0, 500, 5):
            writer.append_telemetry(sid, samples[i : i + 5])
        assert writer.stats.buffered_samples == 500
        assert _batches(engine, sid) == []
        await writer.flush()
        (batch,) = _batches(engine, sid)
        assert (batch.seq, batch.n, batch.first_frame, len(batch.data)) == (0, 500, 0, 500 * 22)
        writer.append_telemetry(sid, sample_factory(3, start_frame=500, start_ms=15_000))
    # close() flushed the rest; numbering continued
    assert [(b.seq, b.n) for b in _batches(engine, sid)] == [(0, 500), (1, 3)]


async def test_timed_flush_happens_without_being_asked(
    writer: StorageWriter, engine: Engine, user_id: int, sample_factory: Samples
) -> None:
    sid = await _session(writer, user_id)
    writer.append_telemetry(sid, sample_factory(10))
    for _ in range(250):
        if _batches(engine, sid):
            break
        await asyncio.sleep(0.02)
    assert sum(b.n for b in _batches(engine, sid)) == 10


async def test_a_new_writer_continues_batch_numbers(
    engine: Engine, user_id: int, writer: StorageWriter, sample_factory: Samples
) -> None:
    sid = await _session(writer, user_id)
    writer.append_telemetry(sid, sample_factory(5))
    await writer.flush()
    async with StorageWriter(engine, flush_s=10) as second:
        second.append_telemetry(sid, sample_factory(5, start_frame=5, start_ms=5_100))
    assert [b.seq for b in _batches(engine, sid)] == [0, 1]
    with Session(engine) as s:
        frames = [t.sample.frame for t in history.read_telemetry(session=s, session_id=sid)]
    assert frames == list(range(10))


async def test_device_time_going_back_starts_a_new_anchor(
    writer: StorageWriter, engine: Engine, user_id: int, sample_factory: Samples
) -> None:
    sid = await _session(writer, user_id)
    writer.append_telemetry(sid, sample_factory(50, start_ms=900_000), received_at=1000.98)
    # the device rebooted: its clock restarts near zero
    writer.append_telemetry(sid, sample_factory(10, start_ms=100), received_at=1002.18)
    await writer.flush()
    assert [b.t0_ms for b in _batches(engine, sid)] == [1_000_000, 1_002_000]
    with Session(engine) as s:
        times = [t.t_ms for t in history.read_telemetry(session=s, session_id=sid)]
    assert times == sorted(times)
    assert times[-1] == 1_002_180


async def test_telemetry_of_an_unknown_session_is_dropped_alone(
    writer: StorageWriter, engine: Engine, user_id: int, sample_factory: Samples
) -> None:
    sid = await _session(writer, user_id)
    writer.append_telemetry("no-such-session", sample_factory(7))
    writer.append_telemetry(sid, sample_factory(20))
    await writer.flush()
    assert sum(b.n for b in _batches(engine, sid)) == 20
    assert writer.stats.dropped_samples == 7


async def test_buffer_limit_drops_and_counts(engine: Engine, sample_factory: Samples) -> None:
    async with StorageWriter(engine, flush_s=10, max_buffered_samples=100) as writer:
        user = await writer.run(lambda s: repo.create_user(session=s, name="u"))
        sid = await _session(writer, user.id)
        for i in range(0, 150, 10):
            writer.append_telemetry(sid, sample_factory(10, start_frame=i, start_ms=5000 + i * 20))
        assert (writer.stats.buffered_samples, writer.stats.dropped_samples) == (100, 50)
    assert sum(b.n for b in _batches(engine, sid)) == 100


async def test_job_errors_reach_the_caller_and_the_worker_lives_on(
    writer: StorageWriter,
) -> None:
    with pytest.raises(NotFound):
        await writer.run(lambda s: repo.get_user(session=s, user_id=424242))

    def broken(_s: Session) -> None:
        raise RuntimeError("bug in a job")

    with pytest.raises(RuntimeError, match="bug in a job"):
        await writer.run(broken)
    with pytest.raises(StorageUnavailable):
        await writer.run(lambda s: s.add(SessionRecord(id="x")) or s.flush())
    user = await writer.run(lambda s: repo.create_user(session=s, name="still here"))
    assert user.id is not None
    assert writer.stats.jobs_failed == 3


async def test_submitted_jobs_run_in_order_before_telemetry(
    writer: StorageWriter, engine: Engine, user_id: int, sample_factory: Samples
) -> None:
    writer.submit(
        lambda s: session_log.create_session(
            session=s,
            hub_id=HUB,
            owner_id=user_id,
            device_address="AA:02",
            program_slug="p",
            intensity=1,
            planned_s=60,
            session_id="fire-and-forget",
        )
    )
    writer.append_telemetry("fire-and-forget", sample_factory(25))
    await writer.flush()
    assert sum(b.n for b in _batches(engine, "fire-and-forget")) == 25


async def test_after_close_writes_are_refused_or_dropped(
    engine: Engine, sample_factory: Samples
) -> None:
    writer = StorageWriter(engine, flush_s=1)
    with pytest.raises(StorageUnavailable, match="not started"):
        await writer.run(lambda s: None)
    await writer.start()
    await writer.close()
    await writer.close()  # idempotent
    writer.append_telemetry("s", sample_factory(3))
    writer.submit(lambda s: None)  # never raises: stop paths call it
    with pytest.raises(StorageUnavailable, match="closed"):
        await writer.run(lambda s: None)
    assert writer.stats.dropped_samples == 3


async def test_start_fails_fast_when_the_database_is_unreachable(tmp_path: Path) -> None:
    from gateway.config import DatabaseSettings
    from gateway.storage.engine import create_engine_from_settings

    (tmp_path / "db.sqlite").mkdir()  # a directory where the database file should be
    engine = create_engine_from_settings(DatabaseSettings(url=f"sqlite:///{tmp_path}/db.sqlite"))
    writer = StorageWriter(engine)
    try:
        with pytest.raises(StorageUnavailable, match="check the database"):
            await writer.start()
    finally:
        await writer.close()
        engine.dispose()


CHILD = r"""
import asyncio, sys, time
from ble.protocol import DeviceState, TelemetrySample
from gateway.config import DatabaseSettings
from gateway.storage import repo, session_log
from gateway.storage.engine import create_engine_from_settings
from gateway.storage.writer import StorageWriter

async def main(url):
    engine = create_engine_from_settings(DatabaseSettings(url=url))
    writer = StorageWriter(engine, flush_s=1.0)
    await writer.start()
    user = await writer.run(lambda s: repo.create_user(session=s, name="crash"))
    record, _ = await writer.run(lambda s: session_log.create_session(
        session=s, hub_id="hub-crash", owner_id=user.id, device_address="AA:CC",
        program_slug="p", intensity=2, planned_s=1200))
    await writer.run(lambda s: session_log.update_session_state(
        session=s, hub_id="hub-crash", session_id=record.id, state="running", reason="started"))
    print("session", record.id, flush=True)
    frame = 0
    while True:
        batch = [TelemetrySample(f, 1000 + f * 20, DeviceState.RUNNING, 0, f % 60000, 250, 260,
                                 450, 95, 80, 330) for f in range(frame, frame + 5)]
        writer.append_telemetry(record.id, batch)
        frame += 5
        print("appended", frame, time.monotonic(), flush=True)
        await asyncio.sleep(0.05)

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.slow
def test_sigkill_loses_at_most_the_last_window_and_restart_interrupts(db_url: str) -> None:
    from gateway.config import DatabaseSettings
    from gateway.storage.engine import create_engine_from_settings, upgrade

    engine = create_engine_from_settings(DatabaseSettings(url=db_url))
    upgrade(engine)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, db_url], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    assert child.stdout is not None
    lines: list[str] = []
    first_append: float | None = None
    try:
        for line in child.stdout:
            lines.append(line)
            if line.startswith("appended"):
                stamp = float(line.split()[2])
                first_append = first_append or stamp
                if stamp - first_append >= 2.3:  # at least two 1 s windows have been flushed
                    break
        child.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        lines += child.stdout.read().splitlines()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    session_id = lines[0].split()[1]
    appended = [(int(x.split()[1]), float(x.split()[2])) for x in lines if x.startswith("appended")]
    # Everything appended before the last full window (plus slack for one flush in flight)
    # must be in the database: 1.0 s window + 0.5 s for the flush itself.
    must_have = max((count for count, at in appended if at < killed_at - 1.5), default=0)

    with Session(engine) as s:
        stored = history.read_telemetry(session=s, session_id=session_id)
    frames = [t.sample.frame for t in stored]
    assert frames == list(range(len(frames))), "stored samples must be a gap-free prefix"
    print(f"appended {appended[-1][0]}, stored {len(frames)}, must have {must_have}")
    assert len(frames) >= must_have > 0
    assert len(frames) <= appended[-1][0]

    with Session(engine) as s:
        ended = session_log.interrupt_open_sessions(
            session=s, hub_id="hub-crash", reason="hub restarted (previous run was killed)"
        )
        s.commit()
        detail = history.get_session_detail(session=s, session_id=session_id)
        open_left = s.exec(
            select(func.count())
            .select_from(SessionRecord)
            .where(SessionRecord.state.in_(["pending", "running", "paused"]))  # type: ignore[attr-defined]
        ).one()
    assert [r.id for r in ended] == [session_id]
    assert detail.session.state == "interrupted"
    assert detail.session.end_reason == "hub restarted (previous run was killed)"
    assert detail.events[-1].detail["reason"] == "hub restarted (previous run was killed)"
    assert open_left == 0
    engine.dispose()
