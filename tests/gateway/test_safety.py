"""The safety invariants, attacked: caps (S1), soft start at the wire (S2), stop wins (S3), the
dead man's lease (S4) and faults (S6), through the real runtime and at the supervisor itself.

S1 has two faces: the hub, zone and device caps refuse a program before anything is sent; a
person's own cap limits it (steps above it play at the cap), and what reaches the device and what
it outputs stays under min(user cap, zone cap) in every zone.

Outcomes are judged at the simulated device: the commands its firmware decoded (``CommandSpy``),
its output log and its state. No assertion involves time.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ble import protocol as p
from ble.sim.firmware import Firmware
from gateway.config import DEFAULT_ZONE_CAPS_UA, SafetySettings
from gateway.errors import DeviceUnavailable, InvalidProgram, SafetyViolation
from gateway.programs import (
    Caps,
    Program,
    ProgramStep,
    builtin_programs,
    level_percent,
    limit_program,
    validate_program,
)
from gateway.safety import SafetySupervisor, mean_reaches_back, session_cap_s
from gateway.scheduler import compile_program
from gateway.states import SessionState
from tests.gateway.conftest import (
    Hub,
    StartHub,
    output_log,
    program,
    set_device_limits,
    steepest_rise_ok,
    step,
    wait_done,
    wait_output,
    wait_until,
)

ZONES = ("forehead", "brow", "eye_area", "cheeks", "jawline", "neck")
LIMITS = p.DeviceLimits(1, 500, 1, 10_000, 20, 10_000, 8, 1000, 60_000, 100)


def segment(amplitude: int, zone: p.Zone = p.Zone.CHEEKS, ramp_ms: int = 1000) -> p.QueueSegment:
    return p.QueueSegment(1, zone, p.Waveform.SINE, 100, amplitude, 500, 1000, ramp_ms, seq=7)


# --- the write guard on its own ------------------------------------------------------------------


def test_the_write_guard_refuses_a_segment_above_any_cap() -> None:
    safety = SafetySettings(hub_cap_ua=380, zone_caps_ua={"brow": 240})
    supervisor = SafetySupervisor("AA", safety)
    violations: list[str] = []
    supervisor.arm(Caps(safety, device_hard_cap_ua=350, user_cap_ua=300), violations.append)
    check = supervisor.check_command
    cases = [
        (p.Zone.CHEEKS, 300, True),  # user cap 300 is the lowest
        (p.Zone.CHEEKS, 301, False),
        (p.Zone.BROW, 240, True),
        (p.Zone.BROW, 241, False),
        (p.Zone.EYE_AREA, 200, True),
        (p.Zone.EYE_AREA, 201, False),
    ]
    for zone, amplitude, allowed in cases:
        command = segment(amplitude, zone)
        if allowed:
            check(command, bytes(command))
        else:
            with pytest.raises(SafetyViolation, match=f"{amplitude} µA"):
                check(command, bytes(command))
    assert supervisor.blocked == 3
    assert len(violations) == 3


def test_the_write_guard_checks_the_bytes_not_the_command_object() -> None:
    supervisor = SafetySupervisor("AA", SafetySettings())
    supervisor.arm(Caps(SafetySettings()))
    harmless = segment(100)
    with pytest.raises(SafetyViolation, match="450 µA"):
        supervisor.check_command(harmless, bytes(segment(450)))
    with pytest.raises(SafetyViolation, match="unencodable"):
        supervisor.check_command(harmless, bytes(harmless)[:-1])


def test_the_write_guard_refuses_an_onset_without_a_soft_start() -> None:
    safety = SafetySettings(soft_start_ms=1000)
    supervisor = SafetySupervisor("AA", safety)
    supervisor.arm(Caps(safety))
    abrupt: list[p.Command] = [
        segment(100, ramp_ms=999),
        p.SetIntensity(80, 100, seq=1),
        p.Resume(0, seq=1),
    ]
    for command in abrupt:
        with pytest.raises(SafetyViolation, match="ramps in"):
            supervisor.check_command(command, bytes(command))
    ramped: list[p.Command] = [
        segment(100),
        p.SetIntensity(100, 1000, seq=1),
        p.Resume(1000, seq=1),
        p.Start(seq=1),
    ]
    for command in ramped:
        supervisor.check_command(command, bytes(command))
    too_loud = bytes(p.SetIntensity(100, 1000, seq=1))
    too_loud = too_loud[:4] + bytes([150]) + too_loud[5:]
    with pytest.raises(SafetyViolation, match="150 %"):
        supervisor.check_command(p.SetIntensity(100, 1000, seq=1), too_loud)


def test_without_a_session_only_commands_that_cannot_raise_output_pass() -> None:
    supervisor = SafetySupervisor("AA", SafetySettings())
    harmless: list[p.Command] = [
        p.Stop(seq=1),
        p.Keepalive(seq=1),
        p.Pause(seq=1),
        p.Hello(seq=1),
        p.ClearFault(seq=1),
    ]
    for command in harmless:
        supervisor.check_command(command, bytes(command))
    output: list[p.Command] = [
        segment(10),
        p.Start(seq=1),
        p.Resume(1000, seq=1),
        p.SetIntensity(10, 1000, seq=1),
    ]
    for command in output:
        with pytest.raises(SafetyViolation, match="no session"):
            supervisor.check_command(command, bytes(command))


def sample(**fields: Any) -> p.TelemetrySample:
    values: dict[str, Any] = {
        "frame": 1,
        "device_time_ms": 10,
        "state": p.DeviceState.RUNNING,
        "segment_id": 1,
        "segment_elapsed_ms": 0,
        "current_mean_ua": 200,
        "current_peak_ua": 210,
        "impedance_10ohm": 1500,
        "contact_quality": 90,
        "battery_pct": 80,
        "temperature_dc": 340,
    }
    return p.TelemetrySample(**(values | fields))


def test_every_fault_in_a_sample_has_a_reason_and_healthy_samples_have_none() -> None:
    safety = SafetySettings(over_temperature_c=40.0)
    supervisor = SafetySupervisor("AA", safety)
    supervisor.arm(Caps(safety, user_cap_ua=300))
    check = supervisor.check_sample
    assert check(sample(), p.Zone.CHEEKS) is None
    assert check(sample(current_mean_ua=330), p.Zone.CHEEKS) is None  # cap + 10 %
    assert check(sample(faults=p.FaultFlags.LOW_BATTERY), p.Zone.CHEEKS) is None
    reasons = {
        "over-current: measured 331": sample(current_mean_ua=331),
        "over-current: measured 221": sample(current_mean_ua=221),  # eye area: 200 + 10 %
        "over-current reported": sample(faults=p.FaultFlags.OVER_CURRENT),
        "over-temperature reported": sample(faults=p.FaultFlags.OVER_TEMPERATURE),
        "over-temperature: 40.1": sample(temperature_dc=401),
        "hardware fault": sample(faults=p.FaultFlags.HARDWARE),
        "charging": sample(state=p.DeviceState.CHARGING),
        "device reports a fault": sample(state=p.DeviceState.FAULT),
    }
    for expected, bad in reasons.items():
        zone = p.Zone.EYE_AREA if "221" in expected else p.Zone.CHEEKS
        reason = check(bad, zone)
        assert reason is not None
        assert expected in reason


def test_a_mean_reaching_back_into_the_zone_before_is_held_to_the_larger_cap_only() -> None:
    # A sample whose period began in a cheeks segment (250 µA) and ended in an eye-area one
    # (200 µA) averages both levels: 232 µA is not an over-current there, but it is in a
    # period wholly in the eye area, and more than the larger cap + 10 % is one either way.
    safety = SafetySettings()
    supervisor = SafetySupervisor("AA", safety)
    supervisor.arm(Caps(safety, user_cap_ua=250))
    check = supervisor.check_sample
    mixed = sample(current_mean_ua=232)
    assert check(mixed, p.Zone.EYE_AREA, earlier_zone=p.Zone.CHEEKS) is None
    assert "over-current: measured 232" in (check(mixed, p.Zone.EYE_AREA) or "")
    too_much = sample(current_mean_ua=276)  # cheeks at the user cap: 250 + 10 %
    reason = check(too_much, p.Zone.EYE_AREA, earlier_zone=p.Zone.CHEEKS)
    assert reason is not None
    assert "over-current: measured 276" in reason
    # The device's own flag wins whatever the zones.
    flagged = sample(current_mean_ua=0, faults=p.FaultFlags.OVER_CURRENT)
    assert check(flagged, p.Zone.EYE_AREA, earlier_zone=p.Zone.CHEEKS) is not None


def test_only_a_period_that_began_before_its_segment_reaches_back() -> None:
    # Samples every 20 ms of device time: the one 5 ms into a segment averages 15 ms of the
    # segment before; the one 25 ms in does not. Device time wraps at 2**32.
    assert mean_reaches_back(sample(device_time_ms=1020, segment_elapsed_ms=5), 1000)
    assert not mean_reaches_back(sample(device_time_ms=1020, segment_elapsed_ms=25), 1000)
    assert not mean_reaches_back(sample(device_time_ms=1020, segment_elapsed_ms=20), 1000)
    assert mean_reaches_back(sample(device_time_ms=4, segment_elapsed_ms=5), p.DEVICE_TIME_MOD - 16)
    assert not mean_reaches_back(
        sample(device_time_ms=4, segment_elapsed_ms=30), p.DEVICE_TIME_MOD - 16
    )
    assert mean_reaches_back(sample(segment_elapsed_ms=60_000), None)  # no sample before: unknown


def test_the_session_cap_never_exceeds_thirty_minutes() -> None:
    assert session_cap_s(SafetySettings()) == 20 * 60
    assert session_cap_s(SafetySettings(max_session_min=30)) == 30 * 60
    with pytest.raises(ValueError, match="max_session_min"):
        SafetySettings(max_session_min=31)


# --- S1 as a property ----------------------------------------------------------------------------

caps_settings = st.builds(
    # Zone caps may only be lowered from their defaults (the settings refuse more).
    lambda hub, zones: SafetySettings(
        hub_cap_ua=hub,
        zone_caps_ua={zone: min(cap, DEFAULT_ZONE_CAPS_UA[zone]) for zone, cap in zones.items()},
    ),
    st.integers(10, 500),
    st.dictionaries(st.sampled_from(ZONES), st.integers(1, 500)),
)
steps = st.builds(
    ProgramStep,
    zone=st.sampled_from(ZONES),
    amplitude_ua=st.integers(10, 500),
    duration_s=st.integers(5, 20),
    frequency_hz=st.sampled_from([1.0, 10.0, 100.0]),
    move_cue_s=st.just(5),
)
programs = st.builds(
    lambda s: Program(slug="prop", name="prop", steps=tuple(s)),
    st.lists(steps, min_size=1, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(
    safety=caps_settings,
    hard_cap=st.integers(10, 500),
    user_cap=st.none() | st.integers(10, 500),
    prog=programs,
    level=st.integers(1, 5),
)
def test_s1_nothing_compiled_from_a_valid_program_exceeds_any_cap(
    safety: SafetySettings, hard_cap: int, user_cap: int | None, prog: Program, level: int
) -> None:
    caps = Caps(safety, device_hard_cap_ua=hard_cap, user_cap_ua=user_cap)
    limits = replace(LIMITS, hard_cap_ua=hard_cap)
    supervisor = SafetySupervisor("AA", safety)
    supervisor.arm(caps)
    over = [
        f"steps[{i}].amplitude_ua"
        for i, s in enumerate(prog.steps)
        if s.amplitude_ua > min(hard_cap, safety.zone_cap(s.zone_enum))
    ]
    if over:  # the hub, zone and device caps refuse, whatever the user cap
        with pytest.raises(InvalidProgram) as refused:
            validate_program(prog, caps, limits)
        assert [where for where, _ in refused.value.problems if "amplitude" in where] == over
        return
    validate_program(prog, caps, limits)  # frequencies and lengths here are always valid
    limited, lowered = limit_program(prog, user_cap)
    assert lowered == [i for i, s in enumerate(prog.steps) if s.amplitude_ua > (user_cap or 500)]
    if lowered:
        # The program as validated is above the user cap: compiling it under the session's
        # caps is refused before anything could be sent.
        with pytest.raises(SafetyViolation, match=f"steps\\[{lowered[0]}\\]"):
            compile_program(prog, limits, caps=caps)
    for seg in compile_program(limited, limits, caps=caps):
        lowest = min(
            hard_cap, safety.hub_cap_ua, safety.zone_caps_ua[seg.zone.name.lower()], user_cap or 500
        )
        assert seg.amplitude_ua <= lowest
        assert seg.amplitude_ua * level_percent(level) // 100 <= lowest
        command = p.QueueSegment(
            1, seg.zone, seg.waveform, seg.frequency_dhz, seg.amplitude_ua,
            seg.pulse_width_us, seg.duration_ms, safety.soft_start_ms, seq=1,
        )  # fmt: skip
        supervisor.check_command(command, bytes(command))
    assert supervisor.blocked == 0


@settings(max_examples=300, deadline=None)
@given(
    safety=caps_settings,
    user_cap=st.none() | st.integers(10, 500),
    zone=st.sampled_from(list(p.Zone)),
    amplitude=st.integers(0, 0xFFFF),
)
def test_s1_the_write_guard_passes_exactly_what_is_under_every_cap(
    safety: SafetySettings, user_cap: int | None, zone: p.Zone, amplitude: int
) -> None:
    supervisor = SafetySupervisor("AA", safety)
    supervisor.arm(Caps(safety, device_hard_cap_ua=450, user_cap_ua=user_cap))
    lowest = min(450, safety.hub_cap_ua, safety.zone_caps_ua[zone.name.lower()], user_cap or 500)
    command = segment(amplitude, zone)
    if amplitude <= lowest:
        supervisor.check_command(command, bytes(command))
    else:
        with pytest.raises(SafetyViolation):
            supervisor.check_command(command, bytes(command))


CAPPED: dict[str, Any] = {
    "hub_cap_ua": 350,
    "zone_caps_ua": {"neck": 250, "brow": 200, "eye_area": 150},
}


@pytest.fixture
async def capped_hub(start_hub: StartHub) -> Hub:
    """One device whose hard cap is 300 µA, on a hub capped at 350 µA with lowered zone caps."""
    hub = await start_hub(1, **CAPPED)
    await set_device_limits(hub, 0, hard_cap_ua=300)
    return hub


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=2),
    amplitude=st.integers(10, 500),
    level=st.integers(1, 5),
    user_cap=st.none() | st.integers(10, 500),
)
async def test_s1_the_device_never_receives_more_than_every_cap(
    capped_hub: Hub, zones: list[str], amplitude: int, level: int, user_cap: int | None
) -> None:
    hub = capped_hub
    spy = hub.spies[0]
    mark = spy.mark()
    notices = len(hub.events.notices(notice="limited_by_cap"))
    prog = program(*(step(zone, amplitude, 5) for zone in zones))
    safety = hub.runtime.settings.safety
    refusing = min(300, *(safety.zone_cap(p.Zone[z.upper()]) for z in zones))
    lowest = min(refusing, user_cap or 500)
    try:
        session = await hub.start(0, prog, level=level, user_cap_ua=user_cap)
    except InvalidProgram:
        assert amplitude > refusing  # never refused for the user cap alone
        assert spy.since(mark) == []
        return
    try:
        assert amplitude <= refusing
        limited = user_cap is not None and amplitude > user_cap
        assert session.limited_by_cap is limited
        assert len(hub.events.notices(session, "limited_by_cap")) == int(limited)
        assert len(hub.events.notices(notice="limited_by_cap")) == notices + int(limited)
        await wait_until(lambda: hub.firmware(0).state is p.DeviceState.RUNNING)
        received = spy.since(mark, p.QueueSegment)
        assert received
        assert {s.amplitude_ua for s in received} == {min(amplitude, user_cap or 500)}
        assert max(s.amplitude_ua for s in received) <= lowest
        assert hub.firmware(0).max_output_ua <= lowest
    finally:
        await hub.runtime.sessions.stop(session.id, actor="u1")


# --- S1 through the runtime: refused before anything is sent -------------------------------------


async def test_a_program_above_any_cap_is_refused_before_anything_is_sent(
    start_hub: StartHub,
) -> None:
    hub = await start_hub(2, hub_cap_ua=380)
    await set_device_limits(hub, 1, hard_cap_ua=250)
    zone = program(step("cheeks", 300), step("eye_area", 220))
    device = program(step("forehead", 100), step("cheeks", 260))
    cases: list[tuple[int, Program, dict[str, Any], str, str]] = [
        (0, zone, {}, "steps[1]", "eye_area cap of 200"),
        (0, program(step("cheeks", 390)), {}, "steps[0]", "cheeks cap of 380"),
        (1, device, {}, "steps[1]", "cheeks cap of 250"),
        # A user cap below every step limits the rest; it does not excuse a step above a zone,
        # hub or device cap, and those are named, not the user cap.
        (0, zone, {"user_cap_ua": 100}, "steps[1]", "eye_area cap of 200"),
        (0, program(step("cheeks", 390)), {"user_cap_ua": 50}, "steps[0]", "cheeks cap of 380"),
        (1, device, {"user_cap_ua": 100}, "steps[1]", "cheeks cap of 250"),
    ]
    for index, prog, extra, where, why in cases:
        mark = hub.spies[index].mark()
        with pytest.raises(InvalidProgram) as refused:
            await hub.start(index, prog, **extra)
        assert refused.value.problems[0][0] == f"{where}.amplitude_ua"
        assert why in refused.value.problems[0][1]
        assert hub.spies[index].since(mark) == []
        assert hub.runtime.sessions.active_on(hub.address(index)) is None
    # A level below 5 does not make an over-cap program acceptable: caps bind the program.
    with pytest.raises(InvalidProgram):
        await hub.start(0, program(step("cheeks", 390)), level=1)
    assert hub.events.notices(notice="limited_by_cap") == []


# --- S1 through the runtime: a personal cap limits -----------------------------------------------

USER_CAP = 250


class ZoneTrace:
    """Which zone a simulated device was playing each time its output stage was driven.

    It wraps ``OutputStage.drive`` of our simulated firmware (bleak and bumble are untouched):
    every time the firmware sets its output target (a segment starting, START, PAUSE, STOP...)
    the firmware time, the zone of the segment playing right after it (None when nothing plays)
    and the output level right after it are recorded.
    """

    def __init__(self, firmware: Firmware) -> None:
        self.changes: list[tuple[int, p.Zone | None, int]] = []
        original = firmware.output.drive

        def drive(now_ms: int, target_ua: float, ramp_ms: int) -> None:
            original(now_ms, target_ua, ramp_ms)
            playing = firmware.current_segment
            zone = None if playing is None else playing.zone
            self.changes.append((now_ms, zone, firmware.output.output_ua))

        firmware.output.drive = drive  # type: ignore[method-assign]

    def zones_of(self, log: list[tuple[int, int]]) -> list[tuple[int, int, p.Zone | None]]:
        """Each output log point with the zone playing when the device held that level.

        A point logged at the very millisecond of a change is the last level of the zone
        before it, except the last point at that millisecond: the level held from then on.
        """
        out = []
        for i, (ms, ua) in enumerate(log):
            held_on = i + 1 == len(log) or log[i + 1][0] > ms
            zone = None
            for at, changed_to, _ in self.changes:
                if at < ms or (at == ms and held_on):
                    zone = changed_to
            out.append((ms, ua, zone))
        return out


def compressed(prog: Program, seconds: int) -> Program:
    """The built-in program with every step cut to ``seconds`` (below the 5 s a step may ask
    for: a test's shortcut to every zone change, made without validation), cues off."""
    steps = tuple(s.model_copy(update={"duration_s": seconds, "move_cue_s": 0}) for s in prog.steps)
    return prog.model_copy(update={"steps": steps})


async def test_a_user_cap_of_250_lets_every_builtin_program_start_limited(
    start_hub: StartHub,
) -> None:
    library = builtin_programs()
    hub = await start_hub(len(library))
    sessions = [await hub.start(i, prog, user_cap_ua=USER_CAP) for i, prog in enumerate(library)]
    for index, (prog, session) in enumerate(zip(library, sessions, strict=True)):
        assert session.state is SessionState.RUNNING
        lowered = [i for i, s in enumerate(prog.steps) if s.amplitude_ua > USER_CAP]
        assert session.limited_by_cap is bool(lowered)
        assert [s.amplitude_ua for s in session.program.steps] == [
            min(s.amplitude_ua, USER_CAP) for s in prog.steps
        ]
        notices = hub.events.notices(session, "limited_by_cap")
        if lowered:
            assert [n.detail for n in notices] == [{"cap_ua": USER_CAP, "steps": lowered}]
        else:
            assert prog.slug == "eye-refresh"  # brow and eye area only: all under 250 µA
            assert notices == []
        assert session.caps.user_cap_ua == USER_CAP  # the write guard still holds the user cap
        firmware, first = hub.sim(index), session.program.steps[0].amplitude_ua
        await wait_until(lambda: firmware.sync().output_ua == first)  # noqa: B023 (awaited here)
    assert sum(bool(s.limited_by_cap) for s in sessions) == 6
    for index, session in enumerate(sessions):
        for seg in hub.spies[index].of(p.QueueSegment):
            assert seg.amplitude_ua <= min(USER_CAP, session.caps.refusing_for_zone(seg.zone))
        assert hub.firmware(index).max_output_ua <= USER_CAP
        assert hub.runtime.devices.get(hub.address(index)).supervisor.blocked == 0
        await hub.runtime.sessions.stop(session.id, actor="u1")


async def test_limited_builtin_programs_never_output_above_the_user_or_zone_cap(
    start_hub: StartHub,
) -> None:
    # Every zone change of every built-in, played to the end: each step cut to 2 s, long
    # enough for the output to settle at the step's level after its ramp.
    library = [compressed(prog, 2) for prog in builtin_programs()]
    hub = await start_hub(len(library))
    traces = [ZoneTrace(hub.firmware(i)) for i in range(len(library))]
    sessions = [await hub.start(i, prog, user_cap_ua=USER_CAP) for i, prog in enumerate(library)]
    await asyncio.gather(*(wait_done(session) for session in sessions))

    safety = hub.runtime.settings.safety
    for index, (prog, session) in enumerate(zip(library, sessions, strict=True)):
        assert (session.state, session.reason) == (SessionState.COMPLETED, "program complete")
        trace = traces[index]
        assert {zone for _, zone, _ in trace.changes} == {s.zone_enum for s in prog.steps} | {None}

        # Each zone's bound: min(user cap, zone cap), and tighter, the most its limited steps
        # ask (which also shows each level was charged to the right zone). Off: nothing.
        bound: dict[p.Zone | None, int] = {None: 0}
        for s in session.program.steps:
            bound[s.zone_enum] = max(bound.get(s.zone_enum, 0), s.amplitude_ua)
            assert bound[s.zone_enum] <= min(USER_CAP, safety.zone_cap(s.zone_enum))
        # The level the device held as each zone began, and every level it reached after.
        for ms, zone, ua in trace.changes:
            assert ua <= bound[zone], (prog.slug, ms, ua, zone)
        for ms, ua, zone in trace.zones_of(output_log(hub.sim(index))):
            assert ua <= bound[zone], (prog.slug, ms, ua, zone)
        # Limited, not silenced: a step lowered to the cap is delivered at the cap.
        assert hub.firmware(index).max_output_ua == min(
            USER_CAP, max(s.amplitude_ua for s in prog.steps)
        )
        assert steepest_rise_ok(output_log(hub.sim(index)), USER_CAP)


# --- S1 below the scheduler: the supervisor's write guard ----------------------------------------


async def test_a_tampered_streamer_is_stopped_by_the_write_guard(hub: Hub) -> None:
    spy = hub.spies[0]
    session = await hub.start(0, program(step("cheeks", 300, 10)), level=5)
    streamer = session.streamer
    assert streamer is not None
    # Corrupt everything not yet sent, below validation and above the link.
    streamer.segments = tuple(replace(s, amplitude_ua=450) for s in streamer.segments)
    await wait_done(session)

    assert session.state is SessionState.FAILED
    assert "safety supervisor refused a command" in session.reason
    assert "450 µA on cheeks, above its cap of 400 µA" in session.reason
    assert spy.max_amplitude() == 300
    assert hub.firmware(0).max_output_ua <= 300
    assert hub.firmware(0).output_ua == 0
    assert hub.runtime.devices.get(hub.address(0)).supervisor.blocked == 1


async def test_a_direct_write_above_the_cap_never_reaches_the_device(hub: Hub) -> None:
    spy = hub.spies[0]
    session = await hub.start(0, program(step("cheeks", 300, 10)))
    await wait_output(hub.sim(0))
    link = hub.runtime.devices.get(hub.address(0)).require_link()
    rogue = p.QueueSegment(
        segment_id=999,
        zone=p.Zone.CHEEKS,
        waveform=p.Waveform.SQUARE_BIPHASIC,
        frequency_dhz=100,
        amplitude_ua=450,
        pulse_width_us=500,
        duration_ms=1000,
        ramp_ms=1000,
    )
    mark = spy.mark()
    with pytest.raises(SafetyViolation, match="450 µA"):
        await link.send(rogue)
    await wait_done(session)
    assert session.state is SessionState.FAILED
    assert "450 µA" in session.reason
    assert 999 not in [s.segment_id for s in spy.of(p.QueueSegment)]
    sent = spy.since(mark)
    assert any(isinstance(c, p.Stop) for c in sent)
    stop_at = next(i for i, c in enumerate(sent) if isinstance(c, p.Stop))
    # The streamer may have had one of the program's own segments on its way as the rogue
    # write was refused: within the cap. After the stop nothing that makes output went.
    before_stop = [c for c in sent[:stop_at] if not isinstance(c, p.Keepalive)]
    assert all(isinstance(c, p.QueueSegment) and c.amplitude_ua <= 300 for c in before_stop)
    assert [c for c in sent[stop_at:] if not isinstance(c, p.Keepalive | p.Stop)] == []
    assert hub.firmware(0).output_ua == 0
    # With no session holding the device, nothing that makes output passes at all.
    for command in (p.Start(), p.QueueSegment(segment_id=5, zone=p.Zone.CHEEKS)):
        with pytest.raises(SafetyViolation, match="no session"):
            await link.send(command)


# --- S6: faults ----------------------------------------------------------------------------------


async def test_faults_fail_the_session_with_a_reason_and_the_output_is_off(
    start_hub: StartHub,
) -> None:
    hub = await start_hub(6, over_temperature_c=38.0)
    faults: list[tuple[str, Any]] = [
        ("over-current reported by the device", lambda d: d.inject_over_current(600)),
        ("over-current: measured", lambda d: d.inject_over_current(540)),
        ("over-temperature reported by the device", lambda d: d.set_temperature(42.0)),
        ("charging: the device must not run while it charges", lambda d: d.set_charging(True)),
        ("hardware fault reported by the device", lambda d: d.inject_hardware_fault(True)),
        ("over-temperature: 39.", lambda d: d.set_temperature(39.5)),
    ]
    sessions = []
    for index in range(len(faults)):
        # Device 1 runs at its user's cap of 100 µA: 540 µA is under the device's own
        # over-current threshold (550) but far above 100 + 10 %, so only the hub catches it.
        user_cap = 100 if index == 1 else None
        amplitude = 100 if index == 1 else 300
        prog = program(step("cheeks", amplitude, 10))
        sessions.append(await hub.start(index, prog, user_cap_ua=user_cap))
    await asyncio.gather(*(wait_output(hub.sim(i)) for i in range(len(faults))))
    # A one-step spike must show in the sample's mean: inject it at full output.
    await wait_until(lambda: hub.firmware(1).output_ua == 100)
    for index, (_, inject) in enumerate(faults):
        inject(hub.sim(index))
    await asyncio.gather(*(wait_done(s) for s in sessions))

    for index, ((reason, _), session) in enumerate(zip(faults, sessions, strict=True)):
        assert session.state is SessionState.FAILED, reason
        assert session.reason.startswith(reason)
        firmware = hub.firmware(index)
        assert firmware.output_ua == 0
        assert firmware.state not in (p.DeviceState.RUNNING, p.DeviceState.PAUSED)
    assert hub.firmware(0).state is p.DeviceState.FAULT
    assert hub.firmware(3).state is p.DeviceState.CHARGING

    # Once the causes are gone a new session starts: the hub clears the latched fault.
    hub.sim(2).set_temperature(33.0)
    hub.sim(3).set_charging(False)
    hub.sim(4).inject_hardware_fault(False)
    hub.sim(5).set_temperature(33.0)
    await wait_until(lambda: hub.firmware(3).state is p.DeviceState.IDLE)
    for index in range(len(faults)):
        again = await hub.start(index, program(step("cheeks", 100, 10)), user_cap_ua=100)
        assert again.state is SessionState.RUNNING
        await hub.runtime.sessions.stop(again.id, actor="u1")


async def test_no_session_starts_on_a_charging_device(hub: Hub) -> None:
    hub.sim(0).set_charging(True)
    await wait_until(lambda: hub.firmware(0).state is p.DeviceState.CHARGING)
    mark = hub.spies[0].mark()
    with pytest.raises(DeviceUnavailable, match="CHARGING"):
        await hub.start(0)
    assert hub.spies[0].since(mark, p.QueueSegment) == []
    assert hub.firmware(0).max_output_ua == 0
    assert hub.runtime.sessions.active_on(hub.address(0)) is None
    assert hub.runtime.sessions.all() == []


# --- S3: stop wins -------------------------------------------------------------------------------


async def test_stop_during_a_radio_stall_turns_the_output_off(hub: Hub) -> None:
    session = await hub.start(0, program(step("cheeks", 300, 10)))
    await wait_output(hub.sim(0))
    hub.sim(0).stall(500)
    await hub.runtime.sessions.stop(session.id, actor="u1")
    assert session.state is SessionState.STOPPED
    assert session.reason == "stopped by u1"  # confirmed: the stall is shorter than a second
    assert hub.firmware(0).output_ua == 0
    assert hub.firmware(0).state is p.DeviceState.IDLE
    assert hub.spies[0].of(p.Stop)
    assert hub.runtime.devices.get(hub.address(0)).reconnects == 0


async def test_an_unconfirmed_stop_drops_the_link_and_the_output_goes_off(
    start_hub: StartHub,
) -> None:
    hub = await start_hub(3)
    sessions = [await hub.start(i, program(step("cheeks", 300, 10))) for i in range(3)]
    await asyncio.gather(*(wait_output(hub.sim(i)) for i in range(3)))
    hub.sim(0).refuse_commands(1, [p.Opcode.STOP])  # NACKed and not executed
    hub.sim(1).set_radio_latency(1500)  # executed at once, confirmed too late
    hub.sim(2).stall(1200)  # the device hears nothing for longer than the STOP may take
    await asyncio.gather(*(hub.runtime.sessions.stop(s.id, actor="u1") for s in sessions))
    for index, session in enumerate(sessions):
        assert session.state is SessionState.STOPPED
        assert session.reason.startswith("stopped by u1 (STOP unconfirmed, link dropped")
        assert hub.firmware(index).output_ua == 0
        assert (
            not hub.sim(index).is_connected
            or hub.runtime.devices.get(hub.address(index)).reconnects == 1
        )
    hub.sim(1).set_radio_latency(0)
    # The device manager reconnects each one, and it can be used again.
    managed = [hub.runtime.devices.get(hub.address(i)) for i in range(3)]
    await wait_until(lambda: all(m.reconnects == 1 and m.link is not None for m in managed))
    again = await hub.start(0)
    assert again.state is SessionState.RUNNING
    await hub.runtime.sessions.stop(again.id, actor="u1")


# --- S4: the dead man's lease --------------------------------------------------------------------


async def test_the_device_stops_by_itself_when_the_hub_goes_silent(hub: Hub) -> None:
    session = await hub.start(0, program(step("cheeks", 300, 10)))
    bystander = await hub.start(1, program(step("cheeks", 300, 10)))
    await wait_output(hub.sim(0))
    assert session.streamer is not None
    session.streamer.halt()  # the hub stops writing to this device: no keepalive, nothing
    await wait_done(session)

    firmware = hub.firmware(0)
    assert firmware.counters.lease_expiries == 1
    assert firmware.output_ua == 0
    assert session.state is SessionState.FAILED
    assert (
        session.reason
        == "device lease expired: no command reached it in time (the hub or the radio stalled)"
    )
    assert bystander.state is SessionState.RUNNING
    assert hub.firmware(1).counters.lease_expiries == 0
    assert steepest_rise_ok(output_log(hub.sim(0)), 300)
