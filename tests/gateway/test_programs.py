"""Programs: the built-in library, step validation, caps (S1), session length (S10), levels.

Pure: no radio, no runtime. Validation must name the step and the field of every problem.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ble import protocol as p
from gateway.config import SafetySettings
from gateway.errors import InvalidProgram
from gateway.programs import (
    LEVEL_PERCENT,
    Caps,
    Program,
    ProgramStep,
    builtin_programs,
    level_percent,
    validate_program,
)
from tests.gateway.conftest import program, step

LIMITS = p.DeviceLimits(1, 500, 1, 10_000, 20, 10_000, 8, 1000, 60_000, 100)


def problems(prog: Program, caps: Caps, limits: p.DeviceLimits | None = LIMITS) -> list[str]:
    with pytest.raises(InvalidProgram) as refused:
        validate_program(prog, caps, limits)
    return [where for where, _ in refused.value.problems]


def test_every_builtin_program_is_valid_under_the_default_caps() -> None:
    library = builtin_programs()
    assert len({p.slug for p in library}) == len(library)
    caps = Caps(SafetySettings(), device_hard_cap_ua=400)
    for prog in library:
        assert prog.builtin
        assert validate_program(prog, caps, LIMITS) is prog
        assert 60 <= prog.duration_s <= 20 * 60
        zones = {s.zone for s in prog.steps}
        assert zones <= {"forehead", "brow", "eye_area", "cheeks", "jawline", "neck"}


def test_each_cap_is_named_with_the_step_and_the_field() -> None:
    safety = SafetySettings(hub_cap_ua=350, zone_caps_ua={"neck": 250})
    prog = program(
        step("forehead", 340),  # under every cap
        step("forehead", 348),  # above the device's hard cap (345) only
        step("neck", 260),  # above the neck cap (250)
        step("eye_area", 201),  # above the default eye-area cap (200)
        step("cheeks", 351),  # above the hub cap (350)
    )
    caps = Caps(safety, device_hard_cap_ua=345)
    with pytest.raises(InvalidProgram) as refused:
        validate_program(prog, caps, LIMITS)
    assert refused.value.problems == [
        ("steps[1].amplitude_ua", "348 µA is above the forehead cap of 345 µA"),
        ("steps[2].amplitude_ua", "260 µA is above the neck cap of 250 µA"),
        ("steps[3].amplitude_ua", "201 µA is above the eye_area cap of 200 µA"),
        ("steps[4].amplitude_ua", "351 µA is above the cheeks cap of 345 µA"),
    ]
    with pytest.raises(InvalidProgram) as refused:
        validate_program(prog, Caps(safety, user_cap_ua=100))
    assert "steps[1].amplitude_ua: 348 µA is above the forehead cap of 100 µA" in str(refused.value)
    assert validate_program(program(step("brow", 250)), Caps(SafetySettings()))


def test_frequency_outside_the_device_range_and_cue_longer_than_the_step() -> None:
    narrow = p.DeviceLimits(1, 500, 20, 1000, 20, 10_000, 8, 1000, 60_000, 100)
    prog = program(
        step("cheeks", 200, 5, frequency_hz=1.0),
        step("cheeks", 200, 10, frequency_hz=150.0),
        step("cheeks", 200, 6, move_cue_s=7),
    )
    assert problems(prog, Caps(SafetySettings()), narrow) == [
        "steps[0].frequency_hz",
        "steps[1].frequency_hz",
        "steps[2].move_cue_s",
    ]
    # Without device limits only what the hub knows is checked.
    assert problems(prog, Caps(SafetySettings()), None) == ["steps[2].move_cue_s"]


def test_a_step_without_a_cue_interval_is_valid_at_the_shortest_duration() -> None:
    shortest = ProgramStep(zone="cheeks", amplitude_ua=200, duration_s=5)
    assert validate_program(program(shortest), Caps(SafetySettings()), LIMITS)


def test_the_session_length_cap_bounds_the_whole_program() -> None:
    safety = SafetySettings(max_session_min=1)
    exactly = program(step("cheeks", 200, 30), step("jawline", 200, 30))
    assert validate_program(exactly, Caps(safety), LIMITS)
    over = program(step("cheeks", 200, 30), step("jawline", 200, 31))
    with pytest.raises(InvalidProgram) as refused:
        validate_program(over, Caps(safety), LIMITS)
    assert refused.value.problems == [
        ("steps", "the program lasts 61 s, above the session cap of 60 s")
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("zone", "nose"),
        ("amplitude_ua", 501),
        ("amplitude_ua", 9),
        ("duration_s", 4),
        ("duration_s", 601),
        ("frequency_hz", 0.4),
        ("duty_pct", 96),
        ("waveform", "sawtooth"),
        ("move_cue_s", -1),
    ],
)
def test_a_step_out_of_range_is_refused_on_construction(field: str, value: Any) -> None:
    fields: dict[str, Any] = {"zone": "cheeks", "amplitude_ua": 200, "duration_s": 10}
    with pytest.raises(ValidationError, match=field):
        ProgramStep.model_validate(fields | {field: value})


def test_programs_need_steps_and_a_slug() -> None:
    with pytest.raises(ValidationError, match="steps"):
        Program(slug="empty", name="Empty", steps=())
    with pytest.raises(ValidationError, match="slug"):
        Program(slug="Not A Slug", name="x", steps=(step(),))
    with pytest.raises(ValidationError, match="extra"):
        ProgramStep.model_validate({"zone": "cheeks", "amplitude_ua": 200, "duration_s": 5, "x": 1})


def test_levels_scale_the_amplitude_and_nothing_else_is_a_level() -> None:
    assert [level_percent(level) for level in range(1, 6)] == [20, 40, 60, 80, 100]
    assert LEVEL_PERCENT[5] == 100
    for bad in (0, 6, -1):
        with pytest.raises(ValueError, match="1-5"):
            level_percent(bad)


@settings(max_examples=200, deadline=None)
@given(
    amplitude=st.integers(10, 500),
    zone=st.sampled_from(list(p.Zone)),
    hub_cap=st.integers(10, 500),
    hard_cap=st.none() | st.integers(10, 500),
    user_cap=st.none() | st.integers(10, 500),
)
def test_validation_refuses_exactly_the_steps_above_the_lowest_cap(
    amplitude: int, zone: p.Zone, hub_cap: int, hard_cap: int | None, user_cap: int | None
) -> None:
    safety = SafetySettings(hub_cap_ua=hub_cap)
    caps = Caps(safety, device_hard_cap_ua=hard_cap, user_cap_ua=user_cap)
    lowest = min(hub_cap, safety.zone_caps_ua[zone.name.lower()], hard_cap or 500, user_cap or 500)
    assert caps.for_zone(zone) == lowest
    prog = program(step(zone.name.lower(), amplitude))
    if amplitude <= lowest:
        assert validate_program(prog, caps)
    else:
        assert problems(prog, caps, None) == ["steps[0].amplitude_ua"]
