"""Properties of the simulated firmware: what no input may ever do, and reproducibility.

Hypothesis drives the firmware with arbitrary command sequences, radio bytes and scenario
changes; the output log must then show no amplitude above the caps and no step up (S1, S2),
output only while RUNNING with contact (S5), and STOP always winning (S3).
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ble import protocol as p
from ble.sim.firmware import DEFAULT_LIMITS, Firmware
from ble.sim.output import MIN_RAMP_MS

CAP = DEFAULT_LIMITS.hard_cap_ua
STATE = p.DeviceState


def segment(segment_id: int, /, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "segment_id": segment_id,
        "frequency_dhz": 100,
        "amplitude_ua": 300,
        "pulse_width_us": 200,
        "duration_ms": 2_000,
        "ramp_ms": 500,
    }
    values.update(fields)
    return values


def assert_no_step_up(fw: Firmware) -> None:
    """S2: between any two logged points the output rises no faster than cap per MIN_RAMP_MS."""
    for (t1, a1), (t2, a2) in itertools.pairwise(fw.output_log):
        assert a2 - a1 <= CAP * (t2 - t1) / MIN_RAMP_MS + 1, (t1, a1, t2, a2)


def script(fw: Firmware) -> list[bytes]:
    """A fixed session; returns every byte string the device sent."""
    sent: list[bytes] = []
    commands: list[tuple[int, p.Command]] = [
        (0, p.SetTelemetryRate(100, 3, seq=1)),
        (5, p.QueueSegment(**segment(1, amplitude_ua=350), seq=2)),
        (9, p.Start(seq=3)),
        (800, p.SetIntensity(60, 300, seq=4)),
        (1_500, p.Pause(seq=5)),
        (1_700, p.Resume(400, seq=6)),
        (2_400, p.Stop(seq=7)),
    ]
    for t in range(0, 3_000, 10):
        for when, command in commands:
            if t <= when < t + 10:
                response = fw.handle(bytes(command), encrypted=True, now_ms=when)
                assert response is not None
                sent.append(bytes(response))
        if t == 1_000:
            fw.physics.dry_gel(15)
        fw.tick(t + 10)
        sent.extend(bytes(frame) for frame in fw.drain_outbox())
    return sent


def test_same_seed_and_inputs_give_identical_bytes() -> None:
    first, second = script(Firmware(seed=42)), script(Firmware(seed=42))
    assert first == second
    assert len(first) > 100
    assert script(Firmware(seed=43)) != first


# -- properties ------------------------------------------------------------------------------------

_QUEUE = st.builds(
    lambda sid, amp, dur, ramp: p.QueueSegment(
        **segment(sid, amplitude_ua=amp, duration_ms=dur, ramp_ms=ramp), seq=0
    ),
    st.integers(0, 5),
    st.integers(0, CAP + 100),
    st.integers(1, 3_000),
    st.one_of(st.just(0), st.integers(0, 2_000)),
)
_RAMP = st.one_of(st.just(0), st.integers(0, 2_000))
# Weighted towards queue + start so that most examples actually produce output to check.
_ACTIONS = st.one_of(
    _QUEUE,
    _QUEUE,
    st.just(p.Start(seq=0)),
    st.just(p.Start(seq=0)),
    st.just(p.Pause(seq=0)),
    st.builds(lambda r: p.Resume(r, seq=0), _RAMP),
    st.just(p.Stop(seq=0)),
    st.just(p.Keepalive(seq=0)),
    st.builds(lambda pct, r: p.SetIntensity(pct, r, seq=0), st.integers(0, 120), _RAMP),
    st.just(p.ClearFault(seq=0)),
    st.sampled_from(["off_skin", "on_skin", "charge", "unplug", "over_current", "dry", "heat"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(_ACTIONS, st.integers(0, 700), st.sampled_from([True] * 9 + [False])),
        min_size=1,
        max_size=40,
    ),
    prelude=st.lists(st.tuples(_QUEUE, st.just(0), st.just(True)), max_size=3),
    seed=st.integers(0, 2**16),
)
def test_no_input_makes_output_exceed_the_cap_or_step_up(
    steps: list[tuple[p.Command | str, int, bool]],
    prelude: list[tuple[p.Command, int, bool]],
    seed: int,
) -> None:
    fw = Firmware(seed=seed)
    now = 0
    # Most examples start with a queue and START, so that they exercise output at all.
    start: list[tuple[p.Command | str, int, bool]] = [(p.Start(seq=0), 0, True)] if prelude else []
    for action, gap, encrypted in [*prelude, *start, *steps]:
        if isinstance(action, str):
            scenario = {
                "off_skin": lambda: fw.physics.set_on_skin(False),
                "on_skin": lambda: fw.physics.set_on_skin(True),
                "charge": lambda: fw.physics.set_charging(True),
                "unplug": lambda: fw.physics.set_charging(False),
                "over_current": lambda: fw.physics.inject_over_current(CAP * 2),
                "dry": lambda: fw.physics.dry_gel(60),
                "heat": lambda: fw.physics.set_temperature(42 if fw.physics.ambient_c < 40 else 33),
            }
            scenario[action]()
        else:
            response = fw.handle(bytes(action), encrypted=encrypted, now_ms=now)
            assert response is not None
            if isinstance(action, p.Stop):
                assert response.ok
                assert fw.output_ua == 0
                assert fw.queue == ()
        for _ in range(gap // 10):
            now += 10
            fw.tick(now)
            head = fw.current_segment
            if fw.output_ua > 0:
                assert fw.state is STATE.RUNNING
                assert fw.contact
                assert head is not None
            assert fw.output_ua <= (head.amplitude_ua if head is not None else 0)
    assert fw.max_output_ua <= CAP
    assert_no_step_up(fw)
    event(f"output reached: {fw.max_output_ua > 0}")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=40), encrypted=st.booleans())
def test_arbitrary_bytes_never_break_the_firmware(data: bytes, encrypted: bool) -> None:
    fw = Firmware()
    response = fw.handle(data, encrypted=encrypted, now_ms=0)
    if response is not None:
        assert p.Response.from_bytes(bytes(response)) == response
    fw.tick(100)
    assert fw.max_output_ua == 0
