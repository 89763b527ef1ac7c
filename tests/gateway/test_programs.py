"""Programs: the built-in library, step validation, caps (S1), session length (S10), levels.

Pure: no radio, no runtime. Validation must name the step and the field of every problem. The
hub, zone and device caps refuse a program; a person's own cap limits it (``limit_program``).
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
    limit_program,
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
    # A user cap refuses nothing: the same steps are refused, named with the caps that refuse.
    assert problems(prog, Caps(safety, user_cap_ua=100)) == [
        "steps[2].amplitude_ua",
        "steps[3].amplitude_ua",
        "steps[4].amplitude_ua",
    ]
    with pytest.raises(InvalidProgram) as refused:
        validate_program(prog, Caps(safety, user_cap_ua=100))
    assert "cap of 100" not in str(refused.value)
    assert "steps[2].amplitude_ua: 260 µA is above the neck cap of 250 µA" in str(refused.value)
    assert validate_program(program(step("brow", 250)), Caps(SafetySettings()))


def test_a_user_cap_never_refuses_a_program_the_other_caps_allow() -> None:
    caps = Caps(SafetySettings(), device_hard_cap_ua=400, user_cap_ua=10)
    for prog in builtin_programs():
        assert validate_program(prog, caps, LIMITS) is prog


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
def test_validation_refuses_exactly_the_steps_above_the_lowest_refusing_cap(
    amplitude: int, zone: p.Zone, hub_cap: int, hard_cap: int | None, user_cap: int | None
) -> None:
    safety = SafetySettings(hub_cap_ua=hub_cap)
    caps = Caps(safety, device_hard_cap_ua=hard_cap, user_cap_ua=user_cap)
    refusing = min(hub_cap, safety.zone_caps_ua[zone.name.lower()], hard_cap or 500)
    assert caps.refusing_for_zone(zone) == refusing
    assert caps.for_zone(zone) == min(refusing, user_cap or 500)
    prog = program(step(zone.name.lower(), amplitude))
    if amplitude <= refusing:
        assert validate_program(prog, caps)
    else:
        assert problems(prog, caps, None) == ["steps[0].amplitude_ua"]


# --- a personal cap limits ------------------------------------------------------------------------


def test_a_user_cap_of_250_limits_six_builtin_programs_and_leaves_eye_refresh_alone() -> None:
    for prog in builtin_programs():
        limited, lowered = limit_program(prog, 250)
        assert lowered == [i for i, s in enumerate(prog.steps) if s.amplitude_ua > 250]
        assert [s.amplitude_ua for s in limited.steps] == [
            min(s.amplitude_ua, 250) for s in prog.steps
        ]
        if prog.slug == "eye-refresh":
            assert (limited, lowered) == (prog, [])
        else:
            assert lowered
        # Only the amplitude of a lowered step changes; the program keeps its identity.
        assert (limited.slug, limited.name, limited.builtin) == (prog.slug, prog.name, True)
        for before, after in zip(prog.steps, limited.steps, strict=True):
            assert before.model_dump(exclude={"amplitude_ua"}) == after.model_dump(
                exclude={"amplitude_ua"}
            )
    deep = next(prog for prog in builtin_programs() if prog.slug == "deep-sculpt")
    assert limit_program(deep, 250)[1] == [0, 3, 4, 5]


def test_without_a_cap_or_with_one_above_every_step_nothing_changes() -> None:
    for prog in builtin_programs():
        assert limit_program(prog, None) == (prog, [])
        assert limit_program(prog, 400)[0] is prog
        highest = max(s.amplitude_ua for s in prog.steps)
        assert limit_program(prog, highest) == (prog, [])
        limited, lowered = limit_program(prog, highest - 1)
        assert lowered == [i for i, s in enumerate(prog.steps) if s.amplitude_ua == highest]
        assert max(s.amplitude_ua for s in limited.steps) == highest - 1


def test_a_cap_below_the_step_floor_still_limits_and_a_non_positive_cap_is_an_error() -> None:
    # Custom steps must ask for 10 µA or more, but lowering is always allowed.
    limited, lowered = limit_program(program(step("cheeks", 300), step("brow", 10)), 5)
    assert [s.amplitude_ua for s in limited.steps] == [5, 5]
    assert lowered == [0, 1]
    for bad in (0, -1):
        with pytest.raises(ValueError, match="positive"):
            limit_program(program(), bad)


@settings(max_examples=300, deadline=None)
@given(
    amplitudes=st.lists(st.integers(10, 500), min_size=1, max_size=8),
    zones=st.lists(st.sampled_from(list(p.Zone)), min_size=8, max_size=8),
    hub_cap=st.integers(10, 500),
    hard_cap=st.none() | st.integers(10, 500),
    user_cap=st.integers(1, 600),
)
def test_limiting_gives_exactly_min_of_step_and_cap_and_never_exceeds_any_cap(
    amplitudes: list[int], zones: list[p.Zone], hub_cap: int, hard_cap: int | None, user_cap: int
) -> None:
    prog = program(
        *(step(zone.name.lower(), a) for a, zone in zip(amplitudes, zones, strict=False))
    )
    caps = Caps(
        SafetySettings(hub_cap_ua=hub_cap), device_hard_cap_ua=hard_cap, user_cap_ua=user_cap
    )
    limited, lowered = limit_program(prog, user_cap)
    assert [s.amplitude_ua for s in limited.steps] == [min(a, user_cap) for a in amplitudes]
    assert lowered == [i for i, a in enumerate(amplitudes) if a > user_cap]
    assert limit_program(limited, user_cap) == (limited, [])  # limiting twice changes nothing
    try:
        validate_program(prog, caps, LIMITS)
    except InvalidProgram:
        # Refused only for the caps that refuse, never for the user's.
        assert any(s.amplitude_ua > caps.refusing_for_zone(s.zone_enum) for s in prog.steps)
        return
    for before, after in zip(prog.steps, limited.steps, strict=True):
        assert after.amplitude_ua <= before.amplitude_ua
        assert after.amplitude_ua <= caps.for_zone(after.zone_enum)
