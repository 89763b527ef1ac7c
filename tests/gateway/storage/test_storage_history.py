"""History reads (paging, filters, telemetry export, streaks, weekly minutes) and retention."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from ble.protocol import TelemetrySample
from gateway.programs import builtin_programs
from gateway.storage import history, repo, retention, session_log
from gateway.storage.samples import CSV_HEADER
from gateway.storage.writer import StorageWriter

HUB = "hub-test"
NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)  # a Wednesday, ISO week 12


async def record(
    writer: StorageWriter,
    owner_id: int,
    *,
    at: datetime,
    state: str = "completed",
    device: str = "AA:01",
    seconds: dict[str, float] | None = None,
    **kw: Any,
) -> str:
    """A session created, started and ended at ``at`` (open when ``state`` is running)."""

    def job(s: Session) -> str:
        created, _ = session_log.create_session(
            session=s,
            hub_id=kw.get("hub_id", HUB),
            owner_id=owner_id,
            device_address=device,
            program_slug=kw.get("program_slug", "quick-lift"),
            intensity=3,
            planned_s=600,
            now=at,
        )
        hub = kw.get("hub_id", HUB)
        session_log.update_session_state(
            session=s, hub_id=hub, session_id=created.id, state="running", reason="go", now=at
        )
        if state != "running":
            session_log.finish_session(
                session=s,
                hub_id=hub,
                session_id=created.id,
                state=state,
                reason="done" if state == "completed" else "user stop",
                delivered_s=kw.get("delivered_s", 300.0),
                dose_uas_by_zone={"forehead": 1000.0},
                seconds_by_zone=seconds,
                now=at + timedelta(minutes=5),
            )
        return created.id

    return await writer.run(job)


async def test_pages_and_filters(writer: StorageWriter, engine: Engine, user_id: int) -> None:
    bob = (await writer.run(lambda s: repo.create_user(session=s, name="bob"))).id
    ids = [
        await record(writer, user_id, at=NOW - timedelta(days=d), device=f"AA:0{d % 2}")
        for d in range(7)
    ]
    await record(writer, bob, at=NOW)
    await record(writer, user_id, at=NOW + timedelta(hours=1), state="running", hub_id="hub-b")
    with Session(engine) as s:
        page = history.list_sessions(session=s, owner_id=user_id, hub_id=HUB, limit=3)
        assert (page.total, [r.id for r in page.items], page.next_offset) == (7, ids[:3], 3)
        last = history.list_sessions(session=s, owner_id=user_id, hub_id=HUB, limit=3, offset=6)
        assert ([r.id for r in last.items], last.next_offset) == ([ids[6]], None)
        odd = history.list_sessions(session=s, owner_id=user_id, hub_id=HUB, device_address="AA:01")
        assert [r.id for r in odd.items] == ids[1::2]
        window = history.list_sessions(
            session=s, owner_id=user_id, since=NOW - timedelta(days=3), until=NOW
        )
        assert [r.id for r in window.items] == ids[1:4]
        running = history.list_sessions(session=s, states=["running"])
        assert running.total == 1
        assert running.items[0].hub_id == "hub-b"
        assert history.list_sessions(session=s).total == 9
        with pytest.raises(ValueError, match="limit"):
            history.list_sessions(session=s, limit=0)


async def test_streaks_count_consecutive_completed_days(
    writer: StorageWriter, engine: Engine, user_id: int
) -> None:
    days_ago = [12, 11, 10, 9, 5, 1, 0]  # best run 4 days, current run 2 days
    for d in days_ago:
        await record(writer, user_id, at=NOW - timedelta(days=d))
    await record(writer, user_id, at=NOW - timedelta(days=2), state="stopped")  # no streak
    await record(writer, user_id, at=NOW - timedelta(days=3), state="running")
    with Session(engine) as s:
        today = NOW.date()
        assert history.streaks(session=s, user_id=user_id, today=today) == history.Streaks(
            current=2, best=4, last_day=today
        )
        tomorrow = history.streaks(session=s, user_id=user_id, today=today + timedelta(days=1))
        assert tomorrow.current == 2  # still alive until a day is missed
        later = history.streaks(session=s, user_id=user_id, today=today + timedelta(days=2))
        assert (later.current, later.best) == (0, 4)
        assert history.streaks(session=s, user_id=424242) == history.Streaks(0, 0, None)


async def test_minutes_per_zone_per_iso_week(
    writer: StorageWriter, engine: Engine, user_id: int
) -> None:
    program = next(p for p in builtin_programs() if len(p.steps) > 1)
    await writer.run(lambda s: repo.sync_builtin_programs(session=s, programs=[program]))
    first, second = program.steps[0], program.steps[1]
    monday = datetime(2026, 3, 16, 8, 0, tzinfo=UTC)  # ISO 2026-W12
    await record(writer, user_id, at=monday, seconds={"forehead": 120, "neck": 60})
    await record(writer, user_id, at=monday + timedelta(days=6), seconds={"forehead": 30})
    await record(writer, user_id, at=monday - timedelta(days=1), seconds={"cheeks": 90})
    # no seconds given: derived by walking the program's steps for delivered_s
    await record(
        writer,
        user_id,
        at=monday + timedelta(days=1),
        state="stopped",
        program_slug=program.slug,
        delivered_s=first.duration_s + 30,
    )
    await record(writer, user_id, at=monday, state="running", seconds={"forehead": 999})
    with Session(engine) as s:
        weeks = history.weekly_minutes(session=s, user_id=user_id)
        since = history.weekly_minutes(session=s, user_id=user_id, since=monday)
    expected = {"forehead": 2.5, "neck": 1.0}
    for zone, seconds in ((first.zone, first.duration_s), (second.zone, 30)):
        expected[zone] = round(expected.get(zone, 0) + seconds / 60, 2)
    assert [(w.iso_year, w.iso_week, w.week_start) for w in weeks] == [
        (2026, 11, date(2026, 3, 9)),
        (2026, 12, date(2026, 3, 16)),
    ]
    assert weeks[0].minutes_by_zone == {"cheeks": 1.5}
    assert weeks[1].minutes_by_zone == dict(sorted(expected.items()))
    assert weeks[1].total_minutes == round(sum(expected.values()), 2)
    # every recorded session delivered 1000 µA·s on the forehead; the running one is not counted
    assert weeks[0].dose_uas_by_zone == {"forehead": 1000.0}
    assert weeks[1].dose_uas_by_zone == {"forehead": 3000.0}
    assert since == weeks[1:]


async def test_telemetry_downsampled_and_as_csv(
    writer: StorageWriter,
    engine: Engine,
    user_id: int,
    sample_factory: Callable[..., list[TelemetrySample]],
) -> None:
    sid = await record(writer, user_id, at=NOW, state="running")
    samples = sample_factory(600)  # 12 s at 50 Hz
    base = 1_700_000_000_000
    for i in range(0, 600, 10):
        writer.append_telemetry(sid, samples[i : i + 10], received_at=(base + (i + 9) * 20) / 1000)
    await writer.flush()
    with Session(engine) as s:
        whole = history.telemetry_rows(session=s, session_id=sid)
        per_s = history.telemetry_rows(session=s, session_id=sid, every_ms=1000)
        text = history.telemetry_csv(session=s, session_id=sid, every_ms=1000)
        raw = history.telemetry_csv(session=s, session_id=sid)
    assert len(whole) == 600
    assert all(r.n == 1 for r in whole)
    assert [r.n for r in per_s] == [50] * 12
    assert [r.t_ms for r in per_s] == [base + k * 1000 for k in range(12)]
    bucket = samples[50:100]
    second = per_s[1]
    assert second.current_mean_ua == round(sum(x.current_mean_ua for x in bucket) / 50, 1)
    assert second.current_peak_ua == max(x.current_peak_ua for x in bucket)
    assert second.battery_pct == min(x.battery_pct for x in bucket)
    assert second.frame == 50
    table = list(csv.reader(io.StringIO(text)))
    assert tuple(table[0]) == CSV_HEADER
    assert len(table) == 13
    assert table[2][0] == str(base + 1000)
    assert table[2][1] == "2023-11-14T22:13:21.000Z"
    assert len(raw.splitlines()) == 601


async def test_retention_deletes_old_raw_telemetry_only(
    writer: StorageWriter,
    engine: Engine,
    user_id: int,
    sample_factory: Callable[..., list[TelemetrySample]],
) -> None:
    now = datetime.now(UTC)
    old = await record(writer, user_id, at=now - timedelta(days=100))
    old_other_hub = await record(writer, user_id, at=now - timedelta(days=100), hub_id="hub-b")
    recent = await record(writer, user_id, at=now - timedelta(days=2))
    for sid in (old, old_other_hub, recent):
        writer.append_telemetry(sid, sample_factory(20))
    await writer.flush()
    assert await writer.run(lambda s: retention.prune_telemetry(session=s, older_than_days=0)) == 0
    deleted = await writer.run(
        lambda s: retention.prune_telemetry(session=s, older_than_days=90, hub_id=HUB)
    )
    assert deleted == 1
    with Session(engine) as s:
        assert history.read_telemetry(session=s, session_id=old) == []
        assert len(history.read_telemetry(session=s, session_id=old_other_hub)) == 20
        assert len(history.read_telemetry(session=s, session_id=recent)) == 20
        kept = history.get_session_detail(session=s, session_id=old)
    assert kept.session.dose_uas_by_zone == {"forehead": 1000.0}
    assert [e.kind for e in kept.events] == ["created", "state", "state"]
    everywhere = await writer.run(
        lambda s: retention.prune_telemetry(session=s, older_than_days=90)
    )
    assert everywhere == 1
