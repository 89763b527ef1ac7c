"""The runtime: start-up and shutdown of every part, restart recovery (S9), telemetry fan-out.

A real runtime each time: simulated devices on a virtual radio, SQLite under tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
import sqlalchemy as sa

from ble import protocol as p
from gateway.config import BleSettings, Settings
from gateway.errors import BluetoothUnavailable, GatewayError
from gateway.runtime import Runtime
from gateway.states import SessionState
from gateway.storage import repo, session_log
from gateway.storage.journal import JournalUnavailable
from gateway.telemetry import Dropped, TelemetryFrame, TelemetryItem
from tests.conftest import immutable
from tests.gateway.conftest import (
    Hub,
    StartHub,
    program,
    step,
    wait_output,
    wait_position,
    wait_until,
)


async def test_a_sim_hub_starts_connected_and_stops_every_task(start_hub: StartHub) -> None:
    hub = await start_hub(3)
    runtime = hub.runtime
    assert runtime.started
    assert len(runtime.sim_devices) == 3
    assert all(sim.is_connected for sim in runtime.sim_devices)
    assert {m.state for m in runtime.devices.all()} == {"bonded"}
    assert set(runtime.programs) >= {"quick-lift", "full-face", "eye-refresh"}
    assert len(runtime.tasks) == 4  # one supervisor per device and the loop monitor
    with pytest.raises(GatewayError, match="storage is not open"):
        await runtime.db(repo.list_users)

    await runtime.stop()
    assert (runtime.started, len(runtime.tasks)) == (False, 0)
    assert not any(sim.is_connected for sim in runtime.sim_devices)


async def test_shutting_down_ends_running_sessions_and_turns_output_off(
    start_hub: StartHub,
) -> None:
    hub = await start_hub(2)
    sessions = [await hub.start(i, program(step("cheeks", 300, 10))) for i in range(2)]
    await asyncio.gather(*(wait_output(hub.sim(i)) for i in range(2)))
    firmware = [hub.firmware(i) for i in range(2)]

    await hub.runtime.stop()
    for index, session in enumerate(sessions):
        assert session.state is SessionState.INTERRUPTED
        assert session.reason == "gateway shutting down"
        assert firmware[index].output_ua == 0
        assert hub.spies[index].of(p.Stop)
    assert len(hub.runtime.tasks) == 0


async def test_storage_is_migrated_and_the_builtin_programs_synced(start_hub: StartHub) -> None:
    hub = await start_hub(1, storage=True)
    records = await hub.runtime.db(repo.list_programs)
    assert {r.slug for r in records} >= set(hub.runtime.programs)


async def test_a_restart_ends_a_session_left_running_as_interrupted(start_hub: StartHub) -> None:
    first = await start_hub(1, storage=True)
    runtime = first.runtime
    user = await runtime.db(repo.create_user, name="ann")
    session = await first.start(0, program(step("cheeks", 300, 30)), owner=str(user.id))
    await wait_position(session, 0.5)
    writer = runtime.writer
    assert writer is not None
    await runtime.settle_storage()
    record = await runtime.db(session_log.get_session, session_id=session.id)
    assert record.state == "running"
    # The process dies: nothing more reaches the journal or the database (no clean end is
    # recorded; a clean shutdown would have journaled "gateway shutting down").
    assert runtime.journal is not None
    runtime.journal.close()
    await writer.close()
    await runtime.stop()

    second = await start_hub(1, storage=True)
    record = await second.runtime.db(session_log.get_session, session_id=session.id)
    assert record.state == "interrupted"
    assert record.end_reason == "gateway restarted during the session"
    assert record.ended_at is not None
    # Only open sessions are touched: a second restart finds nothing left to end.
    assert await second.runtime.db(session_log.find_open_sessions, hub_id=record.hub_id) == []


async def test_a_slow_telemetry_subscriber_only_costs_itself_frames(hub: Hub) -> None:
    telemetry = hub.runtime.hub
    address = hub.address(0)
    session = await hub.start(0, program(step("cheeks", 300, 10)))
    await wait_output(hub.sim(0))

    published: list[TelemetryFrame] = []
    remove = telemetry.add_listener(lambda f: published.append(f) if f.device == address else None)
    slow = telemetry.subscribe(device=address, queue_size=8)  # never read
    fast = telemetry.subscribe(device=address, queue_size=8)
    received: list[TelemetryItem] = []

    async def consume() -> None:
        async for item in fast:
            received.append(item)

    consumer = asyncio.create_task(consume())
    frames_before = session.figures.snapshot()["frames"]
    await wait_until(lambda: len(published) >= 60)
    # Snapshot everything in one synchronous step: no frame can slip in between.
    remove()
    while (item := fast.get_nowait()) is not None:
        received.append(item)
    fast.close()
    slow_dropped = slow.dropped_total
    slow.close()
    await consumer

    assert not any(isinstance(item, Dropped) for item in received)
    assert [f.seq for f in received if isinstance(f, TelemetryFrame)] == [f.seq for f in published]
    assert slow_dropped == len(published) - 8
    assert telemetry.counters.device_frames_lost == 0
    assert session.figures.snapshot()["frames"] >= frames_before + len(published)
    assert session.state is SessionState.RUNNING
    await hub.runtime.sessions.stop(session.id, actor="u1")


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.path.exists("/run/dbus/system_bus_socket"),
    reason="needs a Linux host without a D-Bus system bus",
)
async def test_bluez_without_dbus_fails_fast_with_advice() -> None:
    runtime = Runtime(Settings(ble=BleSettings(mode="bluez"), mdns=False), storage=False)
    with pytest.raises(BluetoothUnavailable, match="--ble sim:2"):
        await runtime.start()
    await runtime.stop()


# --- S9 under storage faults: a session that could go unrecorded never starts ---------------------


def _sessions_table_away(runtime: Runtime) -> None:
    assert runtime.engine is not None
    with runtime.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE sessions RENAME TO sessions_away"))


def _sessions_table_back(runtime: Runtime) -> None:
    assert runtime.engine is not None
    with runtime.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE sessions_away RENAME TO sessions"))


async def test_no_session_starts_that_the_journal_cannot_record_and_stop_needs_neither(
    start_hub: StartHub,
) -> None:
    hub = await start_hub(2, storage=True)
    runtime = hub.runtime
    journal = runtime.journal
    assert journal is not None
    user = await runtime.db(repo.create_user, name="ann")
    owner = str(user.id)
    running = await hub.start(0, program(step("cheeks", 300, 30)), owner=owner)
    await wait_output(hub.sim(0))

    # The journal's disk refuses writes (an immutable file: even root cannot write it).
    with immutable(journal.path):
        with pytest.raises(JournalUnavailable, match="none starts"):
            await hub.start(1, program(step("cheeks", 300, 30)), owner=owner)
        assert hub.firmware(1).output_ua == 0
        assert not hub.spies[1].of(p.Start)
        assert runtime.sessions.active_on(hub.address(1)) is None
        # With the database also gone, a stop still turns the output off at once (S3).
        _sessions_table_away(runtime)
        stopped = await runtime.sessions.stop(running.id, actor=owner)
        assert stopped.state is SessionState.STOPPED
        assert hub.firmware(0).output_ua == 0
    _sessions_table_back(runtime)
    await wait_until(lambda: journal.failing is None and journal.backlog == 0)
    record = await runtime.db(session_log.get_session, session_id=running.id)
    assert (record.state, record.end_reason) == ("stopped", f"stopped by {owner}")


async def test_a_full_journal_refuses_new_sessions_until_the_database_takes_it(
    start_hub: StartHub,
) -> None:
    hub = await start_hub(2, storage=True)
    runtime = hub.runtime
    journal = runtime.journal
    assert journal is not None
    user = await runtime.db(repo.create_user, name="ann")
    owner = str(user.id)
    journal.max_bytes = 1  # "full" as soon as one entry waits for the database
    _sessions_table_away(runtime)
    try:
        first = await hub.start(0, program(step("cheeks", 300, 30)), owner=owner)
        await asyncio.wrap_future(journal.sync())
        with pytest.raises(JournalUnavailable, match="journal is full"):
            await hub.start(1, program(step("cheeks", 300, 30)), owner=owner)
        assert hub.firmware(1).output_ua == 0
        await runtime.sessions.stop(first.id, actor=owner)
    finally:
        _sessions_table_back(runtime)
    await runtime.settle_storage()
    record = await runtime.db(session_log.get_session, session_id=first.id)
    assert record.state == "stopped"
    await wait_until(lambda: not journal.full)  # the database told the journal it has it all
    second = await hub.start(1, program(step("cheeks", 300, 30)), owner=owner)
    await runtime.sessions.stop(second.id, actor=owner)


async def test_a_session_whose_device_changes_hands_meanwhile_is_stopped(
    start_hub: StartHub,
) -> None:
    """S8 across the race the API cannot close alone: a start still awaiting the device lands
    just before a hand-over applies. The hub stops that session; output goes off."""
    hub = await start_hub(1, storage=True)
    runtime = hub.runtime
    hub_id, address = runtime.settings.hub_id, hub.address(0)
    ann = await runtime.db(repo.create_user, name="ann")
    bob = await runtime.db(repo.create_user, name="bob")
    await runtime.db(repo.upsert_device, hub_id=hub_id, address=address, name="mine")
    await runtime.db(repo.claim_device, hub_id=hub_id, address=address, user_id=ann.id)
    await runtime.access_changed()
    session = await hub.start(0, program(step("cheeks", 300, 30)), owner=str(ann.id))
    await wait_output(hub.sim(0))

    await runtime.db(repo.claim_device, hub_id=hub_id, address=address, user_id=bob.id, force=True)
    await runtime.access_changed()

    await wait_until(lambda: not session.active)
    assert session.state is SessionState.STOPPED
    assert session.reason == f"{address} changed hands while the session started"
    await wait_until(lambda: hub.firmware(0).output_ua == 0)
