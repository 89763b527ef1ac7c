"""Sessions recorded end to end, idempotency keys, S9 reasons, hub scoping, start-up recovery."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from ble.protocol import TelemetrySample
from gateway.errors import Conflict, NotFound
from gateway.states import SessionState
from gateway.storage import history, session_log
from gateway.storage.models import SessionRecord
from gateway.storage.writer import StorageWriter

HUB = "hub-test"


async def new_session(writer: StorageWriter, user_id: int, **kw: Any) -> SessionRecord:
    args: dict[str, Any] = {
        "hub_id": HUB,
        "owner_id": user_id,
        "device_address": "AA:BB:CC:00:00:01",
        "program_slug": "quick-lift",
        "intensity": 3,
        "planned_s": 600,
    } | kw
    record, created = await writer.run(lambda s: session_log.create_session(session=s, **args))
    assert created
    return record


async def test_session_recorded_end_to_end_reads_back_identical(
    writer: StorageWriter,
    engine: Engine,
    user_id: int,
    sample_factory: Callable[..., list[TelemetrySample]],
) -> None:
    record = await new_session(writer, user_id)
    await writer.run(
        lambda s: session_log.update_session_state(
            session=s, hub_id=HUB, session_id=record.id, state="running", reason="started by ada"
        )
    )
    samples = sample_factory(60 * 50, start_frame=65_000)  # 60 s at 50 Hz, frame counter wraps
    base_ms = 1_700_000_000_000
    for i in range(0, len(samples), 5):  # notifications of 5 samples, stamped on arrival
        writer.append_telemetry(
            record.id, samples[i : i + 5], received_at=(base_ms + (i + 4) * 20) / 1000
        )
        if i == 1500:
            await writer.run(
                lambda s: session_log.add_session_event(
                    session=s, hub_id=HUB, session_id=record.id, kind="cue", detail={"zone": "brow"}
                )
            )
    dose = {"forehead": 12_345.5, "brow": 6_000.25}
    await writer.run(
        lambda s: session_log.finish_session(
            session=s,
            hub_id=HUB,
            session_id=record.id,
            state=SessionState.COMPLETED,
            reason="program complete",
            delivered_s=60.0,
            dose_uas_by_zone=dose,
            seconds_by_zone={"forehead": 40.0, "brow": 20.0},
        )
    )
    await writer.flush()

    with Session(engine) as s:
        detail = history.get_session_detail(session=s, session_id=record.id)
        stored = history.read_telemetry(session=s, session_id=record.id)
    assert [t.sample for t in stored] == samples
    assert [t.t_ms for t in stored] == [base_ms + i * 20 for i in range(len(samples))]
    assert writer.stats.written_batches < 60  # batched per window, never one row per sample
    row = detail.session
    assert (row.state, row.end_reason, row.delivered_s) == ("completed", "program complete", 60.0)
    assert row.dose_uas_by_zone == dose
    assert row.started_at is not None
    assert row.ended_at is not None
    assert row.started_at <= row.ended_at
    assert row.ended_at.tzinfo is not None
    assert [(e.kind, e.detail.get("state")) for e in detail.events] == [
        ("created", None),
        ("state", "running"),
        ("cue", None),
        ("state", "completed"),
    ]
    assert detail.events[-1].detail == {
        "from": "running",
        "state": "completed",
        "reason": "program complete",
    }


async def test_limited_by_cap_is_stored_and_defaults_to_false(
    writer: StorageWriter, engine: Engine, user_id: int
) -> None:
    limited = await new_session(writer, user_id, limited_by_cap=True)
    plain = await new_session(writer, user_id)

    def read(session_id: str) -> Callable[[Session], history.SessionDetail]:
        return lambda s: history.get_session_detail(session=s, session_id=session_id)

    assert (await writer.run(read(limited.id))).session.limited_by_cap is True
    assert (await writer.run(read(plain.id))).session.limited_by_cap is False
    # A row written without the column (an older hub sharing the database) reads as not
    # limited: the server default, not a Python one, fills it in.
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO sessions (id, hub_id, owner_id, device_address, program_slug, "
                "intensity, state, created_at, planned_s, delivered_s, dose_uas_by_zone, "
                "seconds_by_zone) VALUES ('from-an-older-hub', :hub, :owner, 'AA', 'quick-lift', "
                "3, 'pending', :now, 60, 0, '{}', '{}')"
            ),
            {"hub": HUB, "owner": user_id, "now": datetime.now(UTC)},
        )
    with Session(engine) as s:
        older = session_log.get_session(session=s, session_id="from-an-older-hub")
        assert older.limited_by_cap is False


async def test_idempotency_key_returns_the_first_session(
    writer: StorageWriter, user_id: int
) -> None:
    first = await new_session(writer, user_id, idempotency_key="req-1")
    again, created = await writer.run(
        lambda s: session_log.create_session(
            session=s,
            hub_id=HUB,
            owner_id=user_id,
            device_address="AA:BB:CC:00:00:02",  # a retry with other arguments changes nothing
            program_slug="other",
            intensity=5,
            planned_s=60,
            idempotency_key="req-1",
        )
    )
    assert not created
    assert again.id == first.id
    assert again.program_slug == "quick-lift"
    other_key = await new_session(writer, user_id, idempotency_key="req-2")
    no_key = [await new_session(writer, user_id) for _ in range(2)]
    assert len({first.id, other_key.id, *(r.id for r in no_key)}) == 4


async def test_same_key_for_another_owner_is_another_session(
    writer: StorageWriter, user_id: int
) -> None:
    from gateway.storage import repo

    bob = await writer.run(lambda s: repo.create_user(session=s, name="bob"))
    mine = await new_session(writer, user_id, idempotency_key="k")
    his = await new_session(writer, bob.id, idempotency_key="k")
    assert mine.id != his.id


async def test_every_end_needs_a_reason_and_happens_once(
    writer: StorageWriter, user_id: int
) -> None:
    record = await new_session(writer, user_id)
    with pytest.raises(ValueError, match="reason"):
        await writer.run(
            lambda s: session_log.update_session_state(
                session=s, hub_id=HUB, session_id=record.id, state="stopped", reason="  "
            )
        )
    with pytest.raises(ValueError, match="end state"):
        await writer.run(
            lambda s: session_log.finish_session(
                session=s,
                hub_id=HUB,
                session_id=record.id,
                state="paused",
                reason="x",
                delivered_s=1,
                dose_uas_by_zone={},
            )
        )

    def stop(s: Session) -> SessionRecord:
        return session_log.finish_session(
            session=s,
            hub_id=HUB,
            session_id=record.id,
            state="stopped",
            reason="stopped by user",
            delivered_s=3.5,
            dose_uas_by_zone={"neck": 700.0},
        )

    stopped = await writer.run(stop)
    assert (stopped.state, stopped.end_reason) == ("stopped", "stopped by user")
    with pytest.raises(Conflict, match="already ended"):
        await writer.run(stop)
    with pytest.raises(ValueError):
        await new_session(writer, user_id, intensity=6)


async def test_a_hub_cannot_write_another_hubs_session(writer: StorageWriter, user_id: int) -> None:
    record = await new_session(writer, user_id)
    with pytest.raises(NotFound, match="other-hub"):
        await writer.run(
            lambda s: session_log.update_session_state(
                session=s, hub_id="other-hub", session_id=record.id, state="stopped", reason="x"
            )
        )
    with pytest.raises(NotFound):
        await writer.run(
            lambda s: session_log.add_session_event(
                session=s, hub_id="other-hub", session_id=record.id, kind="cue"
            )
        )
    still = await writer.run(lambda s: session_log.get_session(session=s, session_id=record.id))
    assert still.state == "pending"


async def test_restart_interrupts_open_sessions_of_this_hub_only(
    writer: StorageWriter, user_id: int
) -> None:
    pending = await new_session(writer, user_id)
    running = await new_session(writer, user_id, device_address="AA:BB:CC:00:00:09")
    done = await new_session(writer, user_id)
    elsewhere = await new_session(writer, user_id, hub_id="hub-b")
    for record, state in ((running, "running"), (done, "running")):
        await writer.run(
            lambda s, r=record, st=state: session_log.update_session_state(
                session=s, hub_id=HUB, session_id=r.id, state=st, reason="started"
            )
        )
    await writer.run(
        lambda s: session_log.record_progress(
            session=s,
            hub_id=HUB,
            session_id=running.id,
            delivered_s=42.0,
            dose_uas_by_zone={"cheeks": 9000.0},
        )
    )
    await writer.run(
        lambda s: session_log.finish_session(
            session=s,
            hub_id=HUB,
            session_id=done.id,
            state="completed",
            reason="program complete",
            delivered_s=10,
            dose_uas_by_zone={},
        )
    )
    open_ids = await writer.run(lambda s: session_log.find_open_sessions(session=s, hub_id=HUB))
    assert [r.id for r in open_ids] == [pending.id, running.id]

    ended = await writer.run(
        lambda s: session_log.interrupt_open_sessions(
            session=s, hub_id=HUB, reason="hub restarted while the session was open"
        )
    )
    assert sorted(r.id for r in ended) == sorted([pending.id, running.id])
    for record in ended:
        assert record.state == "interrupted"
        assert record.ended_at is not None
        assert record.end_reason == "hub restarted while the session was open"
    kept = await writer.run(lambda s: session_log.get_session(session=s, session_id=running.id))
    assert (kept.delivered_s, kept.dose_uas_by_zone) == (42.0, {"cheeks": 9000.0})
    other = await writer.run(lambda s: session_log.get_session(session=s, session_id=elsewhere.id))
    assert other.state == "pending"
    assert await writer.run(lambda s: session_log.find_open_sessions(session=s, hub_id=HUB)) == []


async def test_a_refused_create_undoes_only_itself_not_the_records_before_it(
    writer: StorageWriter, engine: Engine, user_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    args: dict[str, Any] = {
        "hub_id": HUB,
        "owner_id": user_id,
        "device_address": "AA:BB:CC:00:00:01",
        "program_slug": "quick-lift",
        "intensity": 3,
        "planned_s": 600,
    }
    winner = await new_session(writer, user_id, idempotency_key="raced")
    # The other hub's insert lands between this one's look-up of the key and its insert: the
    # look-up misses it once, the unique index then refuses the insert.
    by_key = session_log._by_key
    missed: list[str] = []

    def late_lookup(s: Session, owner_id: int, key: str) -> SessionRecord | None:
        if not missed:
            missed.append(key)
            return None
        return by_key(s, owner_id, key)

    monkeypatch.setattr(session_log, "_by_key", late_lookup)
    # One transaction, as the writer applies a journal batch: an earlier record, then the
    # create the database refuses.
    with Session(engine) as s:
        session_log.create_session(session=s, session_id="s-earlier", **args)
        record, created = session_log.create_session(session=s, idempotency_key="raced", **args)
        assert (record.id, created) == (winner.id, False)
        session_log.add_session_event(session=s, hub_id=HUB, session_id="s-earlier", kind="cue")
        s.commit()
    detail = await writer.run(
        lambda s: history.get_session_detail(session=s, session_id="s-earlier")
    )
    assert [e.kind for e in detail.events] == ["created", "cue"]
