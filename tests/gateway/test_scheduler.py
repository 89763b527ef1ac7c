"""The pulse scheduler: compiling programs into segments, and streaming them to real devices.

Compilation is pure and tested on its own. Streaming is judged at the simulated device: the
segments its firmware accepted, its queue and its output log, through radio stalls. "No gap"
means the output never fell to zero between the first onset and the end of the program.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ble import protocol as p
from gateway.programs import Program, ProgramStep
from gateway.scheduler import LOOKAHEAD_MS, SEGMENT_MS, compile_program
from gateway.states import SessionState
from tests.gateway.conftest import (
    Hub,
    StartHub,
    has_gap,
    output_log,
    program,
    steepest_rise_ok,
    step,
    wait_position,
    wait_state,
    wait_until,
)

LIMITS = p.DeviceLimits(1, 500, 10, 5000, 50, 5000, 8, 1000, 60_000, 100)
"""1-500 Hz, pulses of 50-5000 µs."""


# --- compiling -----------------------------------------------------------------------------------


def test_a_program_is_cut_into_contiguous_segments_of_at_most_a_second() -> None:
    prog = program(
        step("forehead", 300, 5, frequency_hz=10.0, duty_pct=50),
        step("eye_area", 150, 6, frequency_hz=2.0, waveform="sine"),
    )
    segments = compile_program(prog, LIMITS)
    assert [s.index for s in segments] == list(range(11))
    assert [s.duration_ms for s in segments] == [1000] * 11
    assert [s.start_ms for s in segments] == [i * 1000 for i in range(11)]
    assert [s.step for s in segments] == [0] * 5 + [1] * 6
    first, last = segments[0], segments[-1]
    assert (first.zone, first.waveform, first.amplitude_ua) == (
        p.Zone.FOREHEAD,
        p.Waveform.SQUARE_BIPHASIC,
        300,
    )
    # 10 Hz at 50 % duty is a 50 ms pulse: held to the device's longest, 5 ms.
    assert (first.frequency_dhz, first.pulse_width_us) == (100, 5000)
    assert (last.zone, last.waveform, last.frequency_dhz) == (p.Zone.EYE_AREA, p.Waveform.SINE, 20)


def test_frequency_and_pulse_width_are_kept_inside_the_device_limits() -> None:
    prog = program(
        step("cheeks", 300, 5, frequency_hz=0.5, duty_pct=95),  # 1.9 s pulses
        step("cheeks", 300, 5, frequency_hz=1000.0, duty_pct=5),  # 50 µs pulses
    )
    segments = compile_program(prog, LIMITS)
    slow, fast = segments[0], segments[-1]
    assert (slow.frequency_dhz, slow.pulse_width_us) == (10, 5000)
    assert (fast.frequency_dhz, fast.pulse_width_us) == (5000, 50)


def test_segments_follow_a_shorter_device_maximum() -> None:
    short = p.DeviceLimits(1, 500, 1, 10_000, 20, 10_000, 8, 1000, 400, 100)
    segments = compile_program(program(step("neck", 200, 5)), short)
    assert {s.duration_ms for s in segments} == {400, 200}
    assert sum(s.duration_ms for s in segments) == 5000


@settings(max_examples=100, deadline=None)
@given(
    durations=st.lists(st.integers(5, 90), min_size=1, max_size=6),
    max_segment_ms=st.integers(250, 60_000),
)
def test_compiled_segments_cover_the_program_exactly(
    durations: list[int], max_segment_ms: int
) -> None:
    prog = Program(
        slug="prop",
        name="prop",
        steps=tuple(ProgramStep(zone="jawline", amplitude_ua=200, duration_s=d) for d in durations),
    )
    limits = p.DeviceLimits(1, 500, 1, 10_000, 20, 10_000, 8, 1000, max_segment_ms, 100)
    segments = compile_program(prog, limits)
    assert sum(s.duration_ms for s in segments) == prog.duration_s * 1000
    assert all(0 < s.duration_ms <= min(SEGMENT_MS, max_segment_ms) for s in segments)
    offsets = [s.start_ms for s in segments]
    ends = [s.start_ms + s.duration_ms for s in segments]
    assert offsets[0] == 0
    assert offsets[1:] == ends[:-1]
    for index, duration in enumerate(durations):
        assert sum(s.duration_ms for s in segments if s.step == index) == duration * 1000


# --- streaming to devices ------------------------------------------------------------------------


async def test_no_output_gap_through_radio_stalls(start_hub: StartHub) -> None:
    stalls = [100, 300, 500]
    hub = await start_hub(len(stalls))
    sessions = [await hub.start(i, program(step("cheeks", 300, 5)), level=5) for i in range(3)]
    depths: list[int] = []

    def progressed(seconds: float) -> bool:
        depths.extend(len(hub.firmware(i).queue) for i in range(3))
        return all(s.position_s >= seconds for s in sessions)

    await wait_until(lambda: progressed(1.2))
    for index, stall_ms in enumerate(stalls):
        hub.sim(index).stall(stall_ms)
    await wait_until(lambda: progressed(3.0))
    for index, stall_ms in enumerate(stalls):
        hub.sim(index).stall(stall_ms)  # and once more, mid-step, after a refill
    await wait_until(lambda: progressed(5.0) and all(s.done.is_set() for s in sessions))

    for index, session in enumerate(sessions):
        firmware = hub.firmware(index)
        assert (session.state, session.reason) == (SessionState.COMPLETED, "program complete")
        log = output_log(hub.sim(index))
        assert not has_gap(log), f"output gap through a {stalls[index]} ms stall"
        assert max(ua for _, ua in log) == 300
        assert steepest_rise_ok(log, 300)
        assert firmware.counters.lease_expiries == 0
        assert firmware.counters.nacks == 0  # never overfilled the device's queue
        queued = hub.spies[index].of(p.QueueSegment)
        assert sum(s.duration_ms for s in queued) == 5000  # every segment exactly once
        assert len(hub.spies[index].of(p.Start)) == 1
        assert hub.runtime.devices.get(hub.address(index)).reconnects == 0
    # The scheduler keeps a few seconds queued on the device and never more.
    assert max(depths) <= LOOKAHEAD_MS // SEGMENT_MS + 1


async def test_a_stall_longer_than_the_lease_stops_the_device_and_the_session_resumes(
    hub: Hub,
) -> None:
    sim = hub.sim(0)
    session = await hub.start(0, program(step("cheeks", 300, 6)))
    await wait_position(session, 1.2)
    mark = hub.spies[0].mark()
    sim.stall(1500)
    await wait_state(session, SessionState.PAUSED, "link lost")
    lost_at = session.position_s
    await wait_state(session, SessionState.RUNNING, "link restored; resumed")
    await wait_until(lambda: hub.firmware(0).output_ua == 300)

    firmware = hub.firmware(0)
    assert firmware.counters.lease_expiries == 1  # the device stopped by itself (S4)
    states = [state for state, _ in hub.events.states(session)]
    assert states == ["running", "paused", "running"]
    log = output_log(sim)
    assert has_gap(log)
    assert steepest_rise_ok(log, 300)  # the restart after the stall ramps from zero (S2)
    # Re-primed on the new link from where the device had got to, and started once.
    assert len(hub.spies[0].since(mark, p.Start)) == 1
    assert session.position_s >= lost_at
    await hub.runtime.sessions.stop(session.id, actor="u1")
