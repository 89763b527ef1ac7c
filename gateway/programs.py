"""Treatment programs: the built-in library, custom-program validation, cap limiting, levels.

A program is a list of steps (zone, waveform, frequency, amplitude, duration, "move" cue
interval). ``amplitude_ua`` is the step's output at intensity level 5; levels 1-4 scale it
(see ``LEVEL_PERCENT``), so a program that may run can never exceed a cap at any level.

Caps (S1) come in two kinds. The device hard cap, the hub cap and the zone caps *refuse*:
``validate_program`` rejects a step above any of them, naming the step and the field (with the
frequency and pulse ranges and the session-length cap, S10). A person's own cap *limits*:
``limit_program`` lowers every step above it to the cap and says which steps it lowered, so every
program still plays, only quieter. A session runs the limited program under ``Caps`` that still
include the user cap, which the scheduler and the safety supervisor check again.

This module does no I/O; compiling steps into device segments is the scheduler's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ble.protocol import DeviceLimits, Waveform, Zone
from gateway.config import SafetySettings
from gateway.errors import InvalidProgram

LEVEL_PERCENT: dict[int, int] = {1: 20, 2: 40, 3: 60, 4: 80, 5: 100}
"""Intensity level -> percent of each step's amplitude (sent to the device as SET_INTENSITY)."""

MIN_FREQUENCY_HZ = 0.5
MAX_FREQUENCY_HZ = 1000.0
MIN_STEP_S = 5
MAX_STEP_S = 600

ZoneName = Annotated[str, Field(pattern="^(forehead|brow|eye_area|cheeks|jawline|neck)$")]
WaveformName = Annotated[str, Field(pattern="^(square_biphasic|square_monophasic|sine|triangle)$")]


class ProgramStep(BaseModel):
    """One step of a program: a zone treated for a while with one waveform.

    Strict: an amplitude or a duration is an integer, never a string or a bool coerced to one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    zone: ZoneName
    waveform: WaveformName = "square_biphasic"
    frequency_hz: Annotated[float, Field(ge=MIN_FREQUENCY_HZ, le=MAX_FREQUENCY_HZ)] = 10.0
    amplitude_ua: Annotated[int, Field(ge=10, le=500)]
    """Output at intensity level 5, in µA."""
    duty_pct: Annotated[int, Field(ge=5, le=95)] = 50
    duration_s: Annotated[int, Field(ge=MIN_STEP_S, le=MAX_STEP_S)]
    move_cue_s: Annotated[int, Field(ge=0, le=120)] = MIN_STEP_S
    """Seconds between "move" cues (0: no cues). At most the step's duration; the default is
    the shortest step, so a step that leaves it out is always valid."""

    @property
    def zone_enum(self) -> Zone:
        return Zone[self.zone.upper()]

    @property
    def waveform_enum(self) -> Waveform:
        return Waveform[self.waveform.upper()]


class Program(BaseModel):
    """A named list of steps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: Annotated[str, Field(pattern="^[a-z0-9][a-z0-9-]{1,47}$")]
    name: Annotated[str, Field(min_length=1, max_length=80)]
    description: Annotated[str, Field(max_length=500)] = ""
    steps: Annotated[tuple[ProgramStep, ...], Field(min_length=1, max_length=60)]
    builtin: bool = False

    @property
    def duration_s(self) -> int:
        return sum(step.duration_s for step in self.steps)


@dataclass(frozen=True, slots=True)
class Caps:
    """Every cap that applies to one session on one device (S1).

    ``for_zone`` is the lowest of them all, the user cap included: what may go on air (the
    write guard and the over-current check use it). ``refusing_for_zone`` leaves the user cap
    out: what a program step may never ask for (``validate_program`` uses it).
    """

    safety: SafetySettings
    device_hard_cap_ua: int | None = None
    user_cap_ua: int | None = None

    def refusing_for_zone(self, zone: Zone) -> int:
        """min(device hard cap, hub cap, zone cap): a step above it makes the program invalid."""
        cap = self.safety.zone_cap(zone)
        if self.device_hard_cap_ua is not None:
            cap = min(cap, self.device_hard_cap_ua)
        return cap

    def for_zone(self, zone: Zone) -> int:
        """min(device hard cap, hub cap, zone cap, user cap): the most that may go on air."""
        cap = self.refusing_for_zone(zone)
        if self.user_cap_ua is not None:
            cap = min(cap, self.user_cap_ua)
        return cap


def validate_program(program: Program, caps: Caps, limits: DeviceLimits | None = None) -> Program:
    """Return the program if it may run under ``caps``; raise InvalidProgram naming each problem.

    Amplitudes are checked against the caps that refuse (device hard cap, hub cap, zone cap),
    not the user cap: a step above the user cap is lowered by ``limit_program`` instead.
    """
    problems: list[tuple[str, str]] = []
    for index, step in enumerate(program.steps):
        where = f"steps[{index}]"
        cap = caps.refusing_for_zone(step.zone_enum)
        if step.amplitude_ua > cap:
            problems.append(
                (
                    f"{where}.amplitude_ua",
                    f"{step.amplitude_ua} µA is above the {step.zone} cap of {cap} µA",
                )
            )
        if limits is not None:
            dhz = round(step.frequency_hz * 10)
            if not limits.frequency_min_dhz <= dhz <= limits.frequency_max_dhz:
                problems.append(
                    (
                        f"{where}.frequency_hz",
                        f"{step.frequency_hz} Hz is outside the device's range "
                        f"{limits.frequency_min_dhz / 10}-{limits.frequency_max_dhz / 10} Hz",
                    )
                )
        if step.move_cue_s > step.duration_s:
            problems.append(
                (f"{where}.move_cue_s", "the cue interval is longer than the step itself")
            )
    max_s = caps.safety.max_session_min * 60
    if program.duration_s > max_s:
        problems.append(
            (
                "steps",
                f"the program lasts {program.duration_s} s, above the session cap of {max_s} s",
            )
        )
    if problems:
        raise InvalidProgram(problems)
    return program


def limit_program(program: Program, user_cap_ua: int | None) -> tuple[Program, list[int]]:
    """Lower every step above ``user_cap_ua`` to it; return the program and the lowered indexes.

    The one place a personal cap acts on a program: a lowered step's amplitude becomes exactly
    the cap, every other field and step stays as it was, and the level percentage still applies
    on top when it plays. With no cap, or none of the steps above it, the same program object
    comes back with no indexes. Call it after ``validate_program`` (which refuses steps above the
    hub, zone and device caps), so each step ends at or under every cap of its zone.

    A lowered step may fall under the 10 µA a custom step must ask for: lowering is always
    allowed, so the copy is made without re-validating the step.
    """
    if user_cap_ua is None:
        return program, []
    if user_cap_ua < 1:
        raise ValueError(f"a personal cap must be positive, got {user_cap_ua} µA")
    lowered = [i for i, step in enumerate(program.steps) if step.amplitude_ua > user_cap_ua]
    if not lowered:
        return program, []
    steps = tuple(
        step.model_copy(update={"amplitude_ua": user_cap_ua}) if i in lowered else step
        for i, step in enumerate(program.steps)
    )
    return program.model_copy(update={"steps": steps}), lowered


def _step(zone: str, amplitude: int, seconds: int, hz: float = 10.0, **kw: object) -> ProgramStep:
    return ProgramStep.model_validate(
        {"zone": zone, "amplitude_ua": amplitude, "duration_s": seconds, "frequency_hz": hz, **kw}
    )


def builtin_programs() -> tuple[Program, ...]:
    """The built-in library: every default-capped zone, 1 to 15 minutes."""
    return (
        Program(
            slug="quick-lift",
            name="Quick lift",
            description="Five minutes over forehead, cheeks and jawline.",
            builtin=True,
            steps=(
                _step("forehead", 300, 90),
                _step("cheeks", 350, 120),
                _step("jawline", 350, 90),
            ),
        ),
        Program(
            slug="full-face",
            name="Full face",
            description="Ten minutes over every zone, gentlest around the eyes.",
            builtin=True,
            steps=(
                _step("forehead", 350, 90),
                _step("brow", 220, 60),
                _step("eye_area", 150, 60, hz=5.0, waveform="sine"),
                _step("cheeks", 380, 150),
                _step("jawline", 380, 120),
                _step("neck", 250, 120),
            ),
        ),
        Program(
            slug="jawline-contour",
            name="Jawline contour",
            description="Six minutes along the jaw and under the chin.",
            builtin=True,
            steps=(
                _step("jawline", 350, 180, hz=30.0),
                _step("neck", 250, 120),
                _step("jawline", 380, 60, hz=10.0),
            ),
        ),
        Program(
            slug="eye-refresh",
            name="Eye refresh",
            description="Four gentle minutes for the brow and the eye area.",
            builtin=True,
            steps=(
                _step("brow", 200, 90, hz=5.0),
                _step("eye_area", 120, 120, hz=2.0, waveform="sine"),
                _step("brow", 200, 30, hz=5.0),
            ),
        ),
        Program(
            slug="forehead-smooth",
            name="Forehead smooth",
            description="Five minutes across the forehead and brow.",
            builtin=True,
            steps=(_step("forehead", 380, 210, hz=20.0), _step("brow", 220, 90)),
        ),
        Program(
            slug="neck-tone",
            name="Neck tone",
            description="Five minutes for the neck and jawline.",
            builtin=True,
            steps=(_step("neck", 280, 210, hz=10.0), _step("jawline", 350, 90)),
        ),
        Program(
            slug="deep-sculpt",
            name="Deep sculpt",
            description="Fifteen minutes, longer on cheeks and jawline.",
            builtin=True,
            steps=(
                _step("forehead", 380, 150),
                _step("brow", 230, 90),
                _step("eye_area", 160, 90, hz=5.0, waveform="sine"),
                _step("cheeks", 400, 240, hz=30.0),
                _step("jawline", 400, 180, hz=30.0),
                _step("neck", 280, 150),
            ),
        ),
    )


def level_percent(level: int) -> int:
    """Device intensity (percent) for a level 1-5; raise ValueError otherwise."""
    try:
        return LEVEL_PERCENT[level]
    except KeyError:
        raise ValueError(f"intensity level must be 1-5, got {level}") from None
