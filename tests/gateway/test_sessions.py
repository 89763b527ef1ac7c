"""Sessions end to end: the real runtime driving simulated devices over the virtual radio.

Each test starts sessions through ``SessionManager`` and judges the outcome at the device (its
output log and the commands it decoded) and in the session's record: states, reasons, dose.
Nothing here asserts on time; every wait is bounded by a hang guard only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ble import protocol as p
from gateway.errors import Conflict, DeviceUnavailable, Forbidden, InvalidProgram, NotFound
from gateway.figures import APPLY_MORE_GEL
from gateway.states import SessionState
from gateway.storage import history, repo
from tests.gateway.conftest import (
    SOFT_START_MS,
    CommandSpy,
    Hub,
    StartHub,
    output_after,
    output_log,
    program,
    state,
    steepest_rise_ok,
    step,
    wait_done,
    wait_output,
    wait_position,
    wait_state,
    wait_until,
)


def assert_each_segment_once(spy: CommandSpy, program_ms: int) -> None:
    """Nothing was queued twice: a pause or a contact loss never re-queues the program."""
    queued = spy.of(p.QueueSegment)
    assert len({s.segment_id for s in queued}) == len(queued)
    assert sum(s.duration_ms for s in queued) <= program_ms


def dose_bounds(amplitude_ua: int, level_pct: int, seconds: float) -> tuple[float, float]:
    """A plausible µA·s range for ``seconds`` of output after a 1 s soft start."""
    current = amplitude_ua * level_pct // 100
    low = current * (seconds - SOFT_START_MS / 1000) * 0.9
    high = current * seconds * 1.05
    return low, high


# --- a whole session ---------------------------------------------------------------------------


async def test_full_programs_on_seven_devices_complete_with_their_dose_recorded(
    start_hub: StartHub,
) -> None:
    hub = await start_hub(7, storage=True)
    runtime = hub.runtime
    user = await runtime.db(repo.create_user, name="ann")
    two_zones = program(step("forehead", 300, 5), step("cheeks", 200, 5))
    await runtime.db(repo.create_program, program=two_zones, owner_id=user.id)
    levels = [1, 2, 3, 4, 5, 3, 1]

    sessions = [
        await hub.start(index, two_zones, level=level, owner=str(user.id))
        for index, level in enumerate(levels)
    ]
    await asyncio.gather(*(wait_done(session) for session in sessions))

    assert runtime.writer is not None
    await runtime.settle_storage()
    for index, (session, level) in enumerate(zip(sessions, levels, strict=True)):
        pct = level * 20
        assert (session.state, session.reason) == (SessionState.COMPLETED, "program complete")
        assert session.position_s == 10
        charge = session.figures.snapshot()["charge_uas_by_zone"]
        assert set(charge) == {"forehead", "cheeks"}
        low, high = dose_bounds(300, pct, 5)
        assert low <= charge["forehead"] <= high
        # The quieter second step follows without a ramp: a full 5 s at its level.
        cheeks = 200 * pct // 100 * 5
        assert cheeks * 0.95 <= charge["cheeks"] <= cheeks * 1.05
        firmware = hub.firmware(index)
        assert firmware.output_ua == 0
        assert firmware.max_output_ua == 300 * pct // 100
        assert steepest_rise_ok(output_log(hub.sim(index)), 300 * pct // 100)
        cues = hub.events.notices(session, "move")
        assert [c.detail["cue"] for c in cues].count("next zone") == 2
        assert len(cues) >= 4  # a glide cue every 2 s within each step too

        detail = await runtime.db(history.get_session_detail, session_id=session.id)
        record = detail.session
        assert (record.state, record.end_reason) == ("completed", "program complete")
        assert record.delivered_s == 10
        assert record.intensity == level
        assert record.dose_uas_by_zone == pytest.approx(charge)
        assert record.seconds_by_zone == {"forehead": 5.0, "cheeks": 5.0}
        kinds = [event.kind for event in detail.events]
        assert kinds[0] == "created"
        assert kinds.count("move") == len(cues)
        states = [
            (e.detail["state"], e.detail["reason"]) for e in detail.events if e.kind == "state"
        ]
        assert states == [("running", "started"), ("completed", "program complete")]
        samples = await runtime.db(history.read_telemetry, session_id=session.id)
        assert len(samples) == session.figures.snapshot()["frames"]
    assert runtime.hub.counters.device_frames_lost == 0


async def test_every_end_state_change_carries_a_reason(hub: Hub) -> None:
    session = await hub.start(0)
    await wait_output(hub.sim(0))
    await hub.runtime.sessions.stop(session.id, actor="u1")
    assert session.state is SessionState.STOPPED
    assert session.reason == "stopped by u1"
    assert all(reason for _, reason in hub.events.states(session))
    assert hub.events.states(session)[-1] == ("stopped", "stopped by u1")


# --- pause, resume, intensity ------------------------------------------------------------------


async def test_pause_and_resume_continue_where_the_device_stopped_with_a_ramp(hub: Hub) -> None:
    sessions = hub.runtime.sessions
    sim, spy = hub.sim(0), hub.spies[0]
    session = await hub.start(0, program(step("cheeks", 300, 5)), level=5)
    await wait_until(lambda: hub.firmware(0).output_ua == 300)

    await sessions.pause(session.id, actor="u1")
    assert session.state is SessionState.PAUSED
    assert hub.firmware(0).output_ua == 0
    assert hub.firmware(0).state is p.DeviceState.PAUSED
    device_head = hub.firmware(0).current_segment
    device_elapsed = hub.firmware(0).segment_elapsed_ms
    assert device_head is not None
    mark = spy.mark()
    await asyncio.sleep(0.4)  # paused for a while; keepalives hold the lease
    assert hub.firmware(0).state is p.DeviceState.PAUSED
    assert hub.firmware(0).counters.lease_expiries == 0
    assert spy.since(mark, p.Keepalive) != []
    assert hub.firmware(0).segment_elapsed_ms == device_elapsed
    paused_at = session.position_s

    resumed_ms = sim.now_ms()
    await sessions.resume(session.id, actor="u1")
    assert state(session) is SessionState.RUNNING
    assert [r.ramp_ms for r in spy.since(mark, p.Resume)] == [SOFT_START_MS]
    # Nothing was re-queued or restarted: the device plays on from its own position.
    assert spy.since(mark, p.Start) == []
    assert_each_segment_once(spy, 5000)
    assert hub.firmware(0).current_segment == device_head
    await wait_until(lambda: hub.firmware(0).output_ua == 300)
    assert session.position_s > paused_at

    after = output_after(output_log(sim), resumed_ms)
    assert after[0][1] == 0
    assert steepest_rise_ok(after, 300)
    assert steepest_rise_ok(output_log(sim), 300)
    states = [state for state, _ in hub.events.states(session)]
    assert states == ["running", "paused", "running"]
    await sessions.stop(session.id, actor="u1")


async def test_pause_and_resume_are_idempotent_and_refused_when_ended(hub: Hub) -> None:
    sessions = hub.runtime.sessions
    session = await hub.start(0)
    await sessions.pause(session.id, actor="u1")
    await sessions.pause(session.id, actor="u1")
    await sessions.resume(session.id, actor="u1")
    await sessions.resume(session.id, actor="u1")
    await sessions.stop(session.id, actor="u1")
    with pytest.raises(Conflict):
        await sessions.pause(session.id, actor="u1")
    with pytest.raises(Conflict):
        await sessions.resume(session.id, actor="u1")
    with pytest.raises(Conflict):
        await sessions.set_level(session.id, 2, actor="u1")
    stopped_twice = await sessions.stop(session.id, actor="u1")
    assert stopped_twice.reason == "stopped by u1"


async def test_intensity_up_ramps_and_down_is_immediate(hub: Hub) -> None:
    sessions = hub.runtime.sessions
    sim, spy = hub.sim(0), hub.spies[0]
    session = await hub.start(0, program(step("forehead", 400, 6)), level=2)
    await wait_until(lambda: hub.firmware(0).output_ua == 400 * 40 // 100)

    mark = spy.mark()
    await sessions.set_level(session.id, 5, actor="u1")
    up_ms = spy.times_of(p.SetIntensity)[-1]
    await asyncio.sleep(0.3)  # both changes within a second: down lands mid-ramp
    await sessions.set_level(session.id, 1, actor="u1")
    down_ms = spy.times_of(p.SetIntensity)[-1]
    assert [c.percent for c in spy.since(mark, p.SetIntensity)] == [100, 20]
    assert session.level == 1

    log = output_log(sim)
    rise = [pt for pt in output_after(log, up_ms) if pt[0] < down_ms]
    assert rise[-1][1] < 400, "the increase must still be ramping when the decrease lands"
    assert steepest_rise_ok(rise, 400)
    # Down is immediate: the first change at or after the command is already the new level.
    assert [ua for t, ua in log if t == down_ms][-1] == 400 * 20 // 100
    assert hub.firmware(0).output_ua == 80
    notices = hub.events.notices(session, "intensity")
    assert [n.detail for n in notices] == [{"from": 2, "to": 5}, {"from": 5, "to": 1}]
    with pytest.raises(ValueError, match="1-5"):
        await sessions.set_level(session.id, 6, actor="u1")
    await sessions.stop(session.id, actor="u1")


# --- ownership, consent, conflicts (S7, S8) ------------------------------------------------------


async def test_one_session_per_device_and_only_its_owner_or_an_admin_controls_it(
    hub: Hub,
) -> None:
    sessions = hub.runtime.sessions
    session = await hub.start(0, owner="ann")
    with pytest.raises(Conflict, match="already runs"):
        await hub.start(0, owner="ann")
    with pytest.raises(Conflict):
        await hub.start(0, owner="bob")
    other = await hub.start(1, owner="bob")  # the other device is free
    assert sessions.active_on(hub.address(0)) is session
    assert sessions.active_on(hub.address(1).lower()) is other

    for control in (
        sessions.pause(session.id, actor="bob"),
        sessions.resume(session.id, actor="bob"),
        sessions.set_level(session.id, 1, actor="bob"),
        sessions.stop(session.id, actor="bob"),
    ):
        with pytest.raises(Forbidden):
            await control
    assert session.state is SessionState.RUNNING
    assert session.level == 5

    await sessions.set_level(session.id, 2, actor="root", is_admin=True)
    await sessions.pause(session.id, actor="root", is_admin=True)
    await sessions.stop(session.id, actor="root", is_admin=True)
    assert state(session) is SessionState.STOPPED
    assert session.reason == "stopped by root"
    assert sessions.active_on(hub.address(0)) is None
    again = await hub.start(0, owner="bob")  # free again once ended
    assert again.state is SessionState.RUNNING


async def test_no_session_without_consent(hub: Hub) -> None:
    mark = hub.spies[0].mark()
    with pytest.raises(Forbidden, match="contraindication"):
        await hub.start(0, consented=False)
    assert hub.spies[0].since(mark) == []
    assert hub.runtime.sessions.active_on(hub.address(0)) is None


async def test_idempotency_key_returns_the_first_session(hub: Hub) -> None:
    first = await hub.start(0, idempotency_key="k1")
    again = await hub.start(0, idempotency_key="k1")
    assert again is first
    assert len(hub.spies[0].of(p.Start)) == 1


# --- session length (S10) ----------------------------------------------------------------------


async def test_a_program_longer_than_the_session_cap_is_refused(start_hub: StartHub) -> None:
    hub = await start_hub(1, max_session_min=1)
    mark = hub.spies[0].mark()
    too_long = program(step("cheeks", 300, 35), step("jawline", 300, 30))
    with pytest.raises(InvalidProgram) as refused:
        await hub.start(0, too_long)
    assert [where for where, _ in refused.value.problems] == ["steps"]
    assert "65 s" in str(refused.value)
    assert hub.spies[0].since(mark) == []


async def test_a_session_reaching_the_length_cap_is_stopped(start_hub: StartHub) -> None:
    hub = await start_hub(1, max_session_min=1)
    sessions = hub.runtime.sessions
    # The cap is a minute; shorten the clock the manager arms (same code path, less waiting).
    sessions.session_cap_s = 0.5
    session = await hub.start(0, program(step("cheeks", 300, 30)))
    await sessions.pause(session.id, actor="u1")  # paused time counts too
    await wait_done(session)
    assert session.state is SessionState.STOPPED
    assert session.reason == "session length cap reached"
    assert hub.firmware(0).output_ua == 0
    assert hub.firmware(0).state is p.DeviceState.IDLE


# --- contact (S5) and gel ------------------------------------------------------------------------


async def test_contact_lost_and_regained_pauses_then_resumes_with_a_ramp(hub: Hub) -> None:
    sim, spy = hub.sim(0), hub.spies[0]
    session = await hub.start(0, program(step("cheeks", 300, 5)))
    await wait_until(lambda: hub.firmware(0).output_ua == 300)

    sim.set_on_skin(False)
    await wait_state(session, SessionState.PAUSED, "contact lost")
    await wait_until(lambda: hub.firmware(0).state is p.DeviceState.PAUSED)
    assert hub.firmware(0).output_ua == 0
    held = session.position_s
    mark = spy.mark()
    back_ms = sim.now_ms()
    sim.set_on_skin(True)
    await wait_state(session, SessionState.RUNNING, "contact restored")
    assert [r.ramp_ms for r in spy.since(mark, p.Resume)] == [SOFT_START_MS]
    assert spy.since(mark, p.Start) == []
    assert_each_segment_once(spy, 5000)
    await wait_until(lambda: hub.firmware(0).output_ua == 300)
    assert session.position_s >= held

    assert output_after(output_log(sim), back_ms)[0][1] == 0
    assert steepest_rise_ok(output_log(sim), 300)
    notices = [n.notice for n in hub.events.notices(session) if n.notice != "move"]
    assert notices == ["contact_lost", "contact_restored"]
    states = hub.events.states(session)
    assert states == [
        ("running", "started"),
        ("paused", "contact lost"),
        ("running", "contact restored"),
    ]
    await hub.runtime.sessions.stop(session.id, actor="u1")


async def test_contact_lost_for_good_stops_the_session(start_hub: StartHub) -> None:
    hub = await start_hub(1, contact_resume_window_s=0.5)
    session = await hub.start(0, program(step("cheeks", 300, 10)))
    await wait_output(hub.sim(0))
    hub.sim(0).set_on_skin(False)
    await wait_done(session)
    assert session.state is SessionState.STOPPED
    assert session.reason == "contact lost for more than 0.5 s"
    assert hub.firmware(0).output_ua == 0
    assert hub.firmware(0).state is p.DeviceState.IDLE


async def test_flapping_contact_measures_the_window_from_the_latest_loss(
    start_hub: StartHub,
) -> None:
    hub = await start_hub(1, contact_resume_window_s=1.0)
    sim = hub.sim(0)
    session = await hub.start(0, program(step("cheeks", 300, 10)))
    await wait_output(sim)
    sim.set_on_skin(False)
    await wait_state(session, SessionState.PAUSED, "contact lost")
    sim.set_on_skin(True)
    await wait_state(session, SessionState.RUNNING, "contact restored")
    await asyncio.sleep(0.6)
    sim.set_on_skin(False)
    await wait_state(session, SessionState.PAUSED, "contact lost")
    # The first loss's window ends about now; this loss is younger than the window.
    await asyncio.sleep(0.6)
    sim.set_on_skin(True)
    await wait_state(session, SessionState.RUNNING, "contact restored")
    assert session.active
    await hub.runtime.sessions.stop(session.id, actor="u1")


async def test_a_pause_during_a_contact_pause_holds_when_contact_returns(hub: Hub) -> None:
    sim = hub.sim(0)
    sessions = hub.runtime.sessions
    session = await hub.start(0, program(step("cheeks", 300, 10)))
    await wait_output(sim)
    sim.set_on_skin(False)
    await wait_state(session, SessionState.PAUSED, "contact lost")
    await sessions.pause(session.id, actor="u1")
    assert (session.state, session.reason) == (SessionState.PAUSED, "paused by u1")
    mark = hub.spies[0].mark()
    sim.set_on_skin(True)
    managed = hub.runtime.devices.get(hub.address(0))
    await wait_until(lambda: bool(managed.contact_quality))  # the hub saw contact come back
    await asyncio.sleep(0.2)
    assert session.state is SessionState.PAUSED
    assert hub.spies[0].since(mark, p.Resume) == []
    assert hub.firmware(0).output_ua == 0
    await sessions.resume(session.id, actor="u1")
    await wait_output(sim)
    await sessions.stop(session.id, actor="u1")


async def test_only_recent_ended_sessions_stay_in_memory(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.sessions.RECENT_ENDED", 2)
    sessions = hub.runtime.sessions
    ended = []
    for number in range(4):
        session = await hub.start(0, idempotency_key=f"k{number}")
        await sessions.stop(session.id, actor="u1")
        ended.append(session)
    assert [s.id for s in sessions.all()] == [ended[2].id, ended[3].id]
    with pytest.raises(NotFound):
        sessions.get(ended[0].id)
    assert sessions.get(ended[3].id).state is SessionState.STOPPED
    # A forgotten session's idempotency key no longer answers from memory.
    fresh = await hub.start(0, idempotency_key="k0")
    assert fresh.id != ended[0].id
    await sessions.stop(fresh.id, actor="u1")


async def test_drying_gel_raises_an_apply_more_gel_notice(hub: Hub) -> None:
    sim = hub.sim(0)
    physics = hub.firmware(0).physics
    # Age the gel until the load is ~100 kΩ: contact quality ~23, poor but not lost.
    minutes = (100_000 / physics.fresh_gel_ohm - 1) / physics.config.gel_drying_per_min
    session = await hub.start(0, program(step("cheeks", 300, 10)))
    await wait_output(sim)
    sim.dry_gel(minutes)
    await wait_until(lambda: bool(hub.events.notices(session, "apply_gel")))
    [notice] = hub.events.notices(session, "apply_gel")
    assert notice.detail == {"message": APPLY_MORE_GEL}
    assert session.state is SessionState.RUNNING
    assert session.figures.snapshot()["contact_warnings"] == 1
    await hub.runtime.sessions.stop(session.id, actor="u1")


# --- the link ------------------------------------------------------------------------------------


async def test_link_drop_within_the_window_resumes_from_the_devices_position(hub: Hub) -> None:
    sim, spy = hub.sim(0), hub.spies[0]
    session = await hub.start(0, program(step("jawline", 300, 6)))
    await wait_position(session, 2.5)
    mark = spy.mark()
    head = hub.firmware(0).current_segment
    assert head is not None
    # Segment ids count from 1 and every segment lasts a second: where the device is now.
    device_ms = (head.segment_id - 1) * 1000 + hub.firmware(0).segment_elapsed_ms
    assert sim.drop_link() == 1
    await wait_state(session, SessionState.RUNNING, "link restored; resumed")

    requeued = spy.since(mark, p.QueueSegment)
    resumed_ms = 6000 - sum(s.duration_ms for s in requeued)  # nothing played twice or skipped
    assert device_ms - 100 <= resumed_ms <= device_ms
    # The first segment is cut to start where the device had got to, not at its beginning.
    assert requeued[0].duration_ms == 1000 - resumed_ms % 1000
    assert [s.ramp_ms for s in requeued] == [SOFT_START_MS] * len(requeued)
    assert len(spy.since(mark, p.Start)) == 1
    await wait_until(lambda: hub.firmware(0).output_ua == 300)
    assert session.position_s >= resumed_ms / 1000
    assert steepest_rise_ok(output_log(sim), 300)
    states = [state for state, _ in hub.events.states(session)]
    assert states == ["running", "paused", "running"]
    assert hub.runtime.devices.get(hub.address(0)).reconnects == 1
    await hub.runtime.sessions.stop(session.id, actor="u1")


async def test_link_lost_for_longer_than_the_window_interrupts(start_hub: StartHub) -> None:
    hub = await start_hub(2, link_resume_window_s=0.3)
    sim = hub.sim(0)
    session = await hub.start(0, program(step("jawline", 300, 10)))
    bystander = await hub.start(1, program(step("jawline", 300, 10)))
    await wait_output(sim)
    sim.vanish()
    await wait_done(session)
    assert session.state is SessionState.INTERRUPTED
    assert session.reason == "link lost for more than 0.3 s"
    assert hub.firmware(0).output_ua == 0
    assert hub.firmware(0).state is p.DeviceState.IDLE
    assert bystander.state is SessionState.RUNNING
    assert hub.firmware(1).output_ua > 0


async def test_a_paused_session_stays_paused_after_a_reconnect(hub: Hub) -> None:
    sessions = hub.runtime.sessions
    session = await hub.start(0, program(step("jawline", 300, 10)))
    await wait_output(hub.sim(0))
    await sessions.pause(session.id, actor="u1")
    hub.sim(0).drop_link()
    await wait_state(session, SessionState.PAUSED, "link restored; paused")
    assert hub.firmware(0).output_ua == 0
    await sessions.resume(session.id, actor="u1")
    await wait_output(hub.sim(0))
    assert session.state is SessionState.RUNNING
    assert steepest_rise_ok(output_log(hub.sim(0)), 300)
    await sessions.stop(session.id, actor="u1")


# --- a personal cap limits (S1) -----------------------------------------------------------------


async def test_a_personal_cap_limits_the_session_says_so_and_the_record_keeps_it(
    start_hub: StartHub,
) -> None:
    hub = await start_hub(3, storage=True)
    runtime = hub.runtime
    user = await runtime.db(repo.create_user, name="ann", cap_ua=250)
    owner = str(user.id)
    prog = program(step("forehead", 300, 5), step("brow", 200, 5), step("cheeks", 380, 5))
    # Device 0 under a 250 µA cap; device 1 under a cap above every step; device 2 uncapped.
    caps = [250, 380, None]
    sessions = [
        await hub.start(i, prog, owner=owner, user_cap_ua=cap, idempotency_key=f"k{i}")
        for i, cap in enumerate(caps)
    ]
    limited, above, uncapped = sessions
    # A retried start is the same session: the notice is not published twice.
    retried = await hub.start(0, prog, owner=owner, user_cap_ua=250, idempotency_key="k0")
    assert retried is limited
    assert limited.limited_by_cap
    assert limited.limited_steps == (0, 2)
    assert [s.amplitude_ua for s in limited.program.steps] == [250, 200, 250]
    assert limited.program.slug == prog.slug
    assert [n.detail for n in hub.events.notices(limited, "limited_by_cap")] == [
        {"cap_ua": 250, "steps": [0, 2]}
    ]
    for session in (above, uncapped):
        assert not session.limited_by_cap
        assert session.program is prog  # amplitudes unchanged
        assert hub.events.notices(session, "limited_by_cap") == []
    assert limited.public()["limited_by_cap"] is True
    assert above.public()["limited_by_cap"] is False

    await asyncio.gather(*(wait_output(hub.sim(i)) for i in range(3)))
    expected = ([250, 200, 250], [300, 200, 380], [300, 200, 380])
    for index, (session, amplitudes) in enumerate(zip(sessions, expected, strict=True)):
        assert session.streamer is not None
        compiled = session.streamer.segments
        assert [seg.amplitude_ua for seg in compiled[::5]] == amplitudes  # 5 segments a step
        # What reached the device is the compiled program, in order.
        queued = [seg.amplitude_ua for seg in hub.spies[index].of(p.QueueSegment)]
        assert queued == [seg.amplitude_ua for seg in compiled[: len(queued)]]
    await wait_until(lambda: hub.firmware(0).output_ua == 250)
    await wait_until(lambda: hub.firmware(1).output_ua == 300)
    for session in sessions:
        await runtime.sessions.stop(session.id, actor=owner)
    assert hub.firmware(0).max_output_ua == 250
    assert hub.firmware(1).max_output_ua == 300

    assert runtime.writer is not None
    await runtime.settle_storage()
    for session in sessions:
        detail = await runtime.db(history.get_session_detail, session_id=session.id)
        assert detail.session.limited_by_cap is session.limited_by_cap
        notices = [e.detail for e in detail.events if e.kind == "limited_by_cap"]
        assert notices == ([{"cap_ua": 250, "steps": [0, 2]}] if session is limited else [])
        assert detail.events[0].kind == "created"


# --- storage and restart (S9) --------------------------------------------------------------------


async def test_stored_events_follow_a_session_with_pauses_and_a_fault(
    start_hub: StartHub,
) -> None:
    hub = await start_hub(1, storage=True)
    runtime = hub.runtime
    user = await runtime.db(repo.create_user, name="ann")
    session = await hub.start(0, owner=str(user.id), prog=program(step("cheeks", 300, 10)))
    await wait_position(session, 1.0)
    await runtime.sessions.pause(session.id, actor=str(user.id))
    await runtime.sessions.set_level(session.id, 3, actor=str(user.id))
    await runtime.sessions.resume(session.id, actor=str(user.id))
    await wait_output(hub.sim(0))
    hub.sim(0).inject_hardware_fault()
    await wait_done(session)
    assert runtime.writer is not None
    await runtime.settle_storage()

    detail = await runtime.db(history.get_session_detail, session_id=session.id)
    record = detail.session
    assert record.state == "failed"
    assert record.end_reason == "hardware fault reported by the device"
    assert record.intensity == 3
    assert record.dose_uas_by_zone["cheeks"] > 0
    states: list[Any] = [
        (e.detail["state"], e.detail["reason"]) for e in detail.events if e.kind == "state"
    ]
    assert states == [
        ("running", "started"),
        ("paused", f"paused by {user.id}"),
        ("running", f"resumed by {user.id}"),
        ("failed", "hardware fault reported by the device"),
    ]
    assert [e.detail for e in detail.events if e.kind == "intensity"] == [{"from": 5, "to": 3}]


# --- battery --------------------------------------------------------------------------------------


async def test_a_low_battery_is_told_once_and_an_empty_one_ends_the_session(hub: Hub) -> None:
    sim = hub.sim(0)
    sim.set_battery(10)
    await wait_until(lambda: hub.runtime.devices.get(hub.address(0)).battery_pct == 10)
    with pytest.raises(DeviceUnavailable, match="10 % battery"):
        await hub.start(0, program(step("cheeks", 300, 60)))
    assert hub.firmware(0).output_ua == 0
    assert not hub.spies[0].of(p.Start)

    sim.set_battery(30)
    await wait_until(lambda: hub.runtime.devices.get(hub.address(0)).battery_pct == 30)
    session = await hub.start(0, program(step("cheeks", 300, 60)))
    await wait_output(sim)
    sim.set_battery(8)  # below the device's own low-battery line (10 %)
    await wait_until(lambda: bool(hub.events.notices(session, "low_battery")))
    await asyncio.sleep(0.3)  # more low samples arrive: still one notice
    assert [n.detail for n in hub.events.notices(session, "low_battery")] == [{"battery_pct": 8}]
    assert session.state is SessionState.RUNNING

    sim.set_battery(1)
    await wait_done(session)
    assert session.state is SessionState.STOPPED
    assert session.reason.startswith("battery empty (1 %)")
    assert hub.firmware(0).output_ua == 0
