"""Several hubs on one PostgreSQL: concurrent start-up, concurrent recording, no clobbering."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlmodel import Session

from ble.protocol import TelemetrySample
from gateway.config import DatabaseSettings
from gateway.errors import NotFound
from gateway.storage import history, repo, session_log
from gateway.storage.engine import create_engine_from_settings, current_revision, upgrade
from gateway.storage.writer import StorageWriter

pytestmark = pytest.mark.postgres

ADDRESS = "AA:BB:CC:DD:EE:42"  # the same device address exists on both hubs


async def _hub(
    writer: StorageWriter, hub_id: str, user_id: int, samples: list[TelemetrySample]
) -> list[str]:
    """One hub's run: its device, three sessions streaming telemetry, one of them finished."""
    await writer.run(
        lambda s: repo.upsert_device(session=s, hub_id=hub_id, address=ADDRESS, name=hub_id)
    )
    ids = []
    for n in range(3):
        record, _ = await writer.run(
            lambda s, n=n: session_log.create_session(
                session=s,
                hub_id=hub_id,
                owner_id=user_id,
                device_address=ADDRESS,
                program_slug="quick-lift",
                intensity=2,
                planned_s=600,
                idempotency_key=f"{hub_id}-start-{n}",
            )
        )
        ids.append(record.id)
    for sid in ids:
        await writer.run(
            lambda s, sid=sid: session_log.update_session_state(
                session=s, hub_id=hub_id, session_id=sid, state="running", reason=f"{hub_id} go"
            )
        )
    for k in range(0, len(samples), 25):
        for sid in ids:
            writer.append_telemetry(sid, samples[k : k + 25])
        await asyncio.sleep(0.005)
    await writer.run(
        lambda s: session_log.finish_session(
            session=s,
            hub_id=hub_id,
            session_id=ids[0],
            state="completed",
            reason=f"{hub_id} done",
            delivered_s=10.0,
            dose_uas_by_zone={"forehead": 2000.0},
        )
    )
    await writer.flush()
    return ids


async def test_racing_an_idempotency_key_from_two_hubs_makes_one_session(
    pg_schema: str,
) -> None:
    engines = [create_engine_from_settings(DatabaseSettings(url=pg_schema)) for _ in range(2)]
    writers: list[StorageWriter] = []
    try:
        # both hubs start at once on an empty database: the migration runs exactly once
        await asyncio.gather(*(asyncio.to_thread(upgrade, engine) for engine in engines))
        assert current_revision(engines[0]) == current_revision(engines[1]) is not None
        writers = [StorageWriter(engine, flush_s=0.05) for engine in engines]
        await asyncio.gather(*(w.start() for w in writers))
        user = await writers[0].run(lambda s: repo.create_user(session=s, name="shared"))
        assert user.id is not None
        owner = user.id
        for key in ("k1", "k2", "k3", "k4", "k5"):
            results = await asyncio.gather(
                *(
                    w.run(
                        lambda s, hub=hub, key=key: session_log.create_session(
                            session=s,
                            hub_id=hub,
                            owner_id=owner,
                            device_address=ADDRESS,
                            program_slug="quick-lift",
                            intensity=1,
                            planned_s=60,
                            idempotency_key=key,
                        )
                    )
                    for w, hub in zip(writers, ("hub-a", "hub-b"), strict=True)
                )
            )
            assert results[0][0].id == results[1][0].id
            assert sorted(created for _, created in results) == [False, True]
    finally:
        for writer in writers:
            await writer.close()
        for engine in engines:
            engine.dispose()


async def test_two_hubs_sessions_stay_apart(
    pg_schema: str, sample_factory: Callable[..., list[TelemetrySample]]
) -> None:
    engines = [create_engine_from_settings(DatabaseSettings(url=pg_schema)) for _ in range(2)]
    writers: list[StorageWriter] = []
    try:
        upgrade(engines[0])
        writers = [StorageWriter(engine, flush_s=0.05) for engine in engines]
        await asyncio.gather(*(w.start() for w in writers))
        user = await writers[0].run(lambda s: repo.create_user(session=s, name="shared"))
        assert user.id is not None
        samples = sample_factory(500)
        ids_a, ids_b = await asyncio.gather(  # both hubs record at the same time
            _hub(writers[0], "hub-a", user.id, samples[:250]),
            _hub(writers[1], "hub-b", user.id, samples[250:]),
        )
        assert set(ids_a).isdisjoint(ids_b)

        with Session(engines[0]) as s:
            runs = (("hub-a", ids_a, samples[:250]), ("hub-b", ids_b, samples[250:]))
            for hub_id, ids, part in runs:
                for sid in ids:
                    record = session_log.get_session(session=s, session_id=sid)
                    assert record.hub_id == hub_id
                    stored = history.read_telemetry(session=s, session_id=sid)
                    assert [t.sample for t in stored] == part
                first = session_log.get_session(session=s, session_id=ids[0])
                assert (first.state, first.end_reason) == ("completed", f"{hub_id} done")
            devices = {
                hub: repo.get_device(session=s, hub_id=hub, address=ADDRESS).name
                for hub in ("hub-a", "hub-b")
            }
        assert devices == {"hub-a": "hub-a", "hub-b": "hub-b"}

        # hub-a can neither change nor end hub-b's sessions
        with pytest.raises(NotFound):
            await writers[0].run(
                lambda s: session_log.update_session_state(
                    session=s, hub_id="hub-a", session_id=ids_b[1], state="stopped", reason="x"
                )
            )
        ended = await writers[0].run(
            lambda s: session_log.interrupt_open_sessions(
                session=s, hub_id="hub-a", reason="hub-a restarted"
            )
        )
        assert sorted(r.id for r in ended) == sorted(ids_a[1:])
        still_open = await writers[1].run(
            lambda s: session_log.find_open_sessions(session=s, hub_id="hub-b")
        )
        assert sorted(r.id for r in still_open) == sorted(ids_b[1:])
        assert all(r.state == "running" for r in still_open)
    finally:
        for writer in writers:
            await writer.close()
        for engine in engines:
            engine.dispose()
