"""Bodies of the plan and adherence routes (docs/plans.md).

A phase's shape is the stored one (``gateway.plans.codec``): a repeat rule modelled on FHIR
``Timing.repeat`` (``per_week``, or ``days_of_week`` with ``times_of_day``), bounds (``weeks``,
``days`` or ``start``/``end``) and what each session should cover. Shapes and ranges are checked
here (422 naming the field); whether the phases make a plan (order, bounds, time zone) is
checked by ``gateway.plans.schedule.validate`` (422 ``invalid-plan``, naming the field too).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.fields import DbId, Input, Level, Name, Slug, examples
from api.strict import time_zone_names
from gateway.programs import ZoneName

Clock = Annotated[
    str, Field(pattern="^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["20:00"], description="HH:MM")
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
TimeZoneName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="IANA time zone",
        json_schema_extra=time_zone_names,
    ),
]
TemplateSlug = Literal["loading-maintenance", "neck-routine", "gentle-start"]
"""``gateway.plans.templates.BY_SLUG``'s keys (a test holds them equal)."""
Day = Annotated[date, Field(strict=False)]

_NECK_PHASE: dict[str, Any] = {
    "name": "routine",
    "repeat": {"per_week": None, "days_of_week": ["tue", "thu", "sat"], "times_of_day": ["20:00"]},
    "weeks": None,
    "days": None,
    "start": None,
    "end": None,
    "programs": ["neck-tone"],
    "zones": ["neck"],
    "max_level": None,
}
_LOADING_PHASE: dict[str, Any] = {
    "name": "loading",
    "repeat": {"per_week": 5, "days_of_week": [], "times_of_day": []},
    "weeks": 4,
    "days": None,
    "start": None,
    "end": None,
    "programs": ["full-face"],
    "zones": [],
    "max_level": None,
}


class RepeatRule(Input):
    """``per_week`` N (any days), or ``days_of_week`` at ``times_of_day`` (FHIR Timing.repeat)."""

    model_config = examples(_NECK_PHASE["repeat"], _LOADING_PHASE["repeat"])

    per_week: Annotated[int, Field(ge=1, le=7)] | None = Field(
        default=None, description="Sessions per calendar week (Monday-Sunday), 1-7"
    )
    days_of_week: list[Weekday] = Field(default_factory=list, max_length=7)
    times_of_day: list[Clock] = Field(default_factory=list, max_length=4)


class PhaseBody(Input):
    model_config = examples(_NECK_PHASE, _LOADING_PHASE)

    name: Name
    repeat: RepeatRule
    weeks: Annotated[int, Field(ge=1, le=520)] | None = None
    days: Annotated[int, Field(ge=1, le=3660)] | None = None
    start: Day | None = None
    end: Day | None = Field(default=None, description="Last day of the phase (inclusive)")
    programs: list[Slug] = Field(default_factory=list, max_length=10)
    zones: list[ZoneName] = Field(default_factory=list, max_length=6)
    max_level: Level | None = Field(default=None, description="Advice: keep sessions at or below")


class QuietHoursBody(Input):
    """No reminder between ``start`` and ``end`` (local time; may span midnight)."""

    model_config = examples({"start": "22:00", "end": "07:00"})

    start: Clock
    end: Clock


class PlanCreate(Input):
    """A template, or phases (given both, the phases are the plan and ``template`` is kept as
    where they came from)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "template": "neck-routine",
                    "time_zone": "Europe/Paris",
                    "starts_on": "2026-11-30",
                },
                {
                    "name": "My loading month",
                    "time_zone": "Europe/Paris",
                    "phases": [_LOADING_PHASE],
                    "quiet_hours": {"start": "22:00", "end": "07:00"},
                },
            ],
            "anyOf": [
                {"required": ["template"], "properties": {"template": {"type": "string"}}},
                {"required": ["phases"], "properties": {"phases": {"type": "array"}}},
            ],
        }
    )

    template: TemplateSlug | None = Field(default=None, description="A built-in template")
    name: Name | None = Field(default=None, description="Default: the template's name")
    phases: list[PhaseBody] | None = Field(default=None, min_length=1, max_length=10)
    time_zone: TimeZoneName
    starts_on: Day | None = Field(default=None, description="Default: today in time_zone")
    quiet_hours: QuietHoursBody | None = None
    owner_id: DbId | None = Field(default=None, description="Admins only: another user's plan")


class PlanUpdate(Input):
    """Fields given replace the plan's. A new ``time_zone`` applies from now on: days that began
    before keep their slots."""

    model_config = examples({"time_zone": "America/New_York"}, {"name": "Evenings"})

    name: Name | None = None
    phases: list[PhaseBody] | None = Field(default=None, min_length=1, max_length=10)
    time_zone: TimeZoneName | None = None
    starts_on: Day | None = None
    quiet_hours: QuietHoursBody | None = None
    clear_quiet_hours: bool = False


class ZoneSince(BaseModel):
    since: datetime | None
    name: str


_PLAN_EXAMPLE: dict[str, Any] = {
    "id": 1,
    "owner_id": 2,
    "name": "Neck routine",
    "template": "neck-routine",
    "starts_on": "2026-11-30",
    "time_zone": "Europe/Paris",
    "zone_history": [{"since": None, "name": "Europe/Paris"}],
    "phases": [_NECK_PHASE],
    "quiet_hours": None,
    "created_at": "2026-11-30T08:00:00Z",
    "updated_at": "2026-11-30T08:00:00Z",
}


class PlanPublic(BaseModel):
    model_config = examples(_PLAN_EXAMPLE)

    id: int
    owner_id: int
    name: str
    template: str | None
    starts_on: date
    time_zone: str
    zone_history: list[ZoneSince]
    phases: list[PhaseBody]
    quiet_hours: QuietHoursBody | None
    created_at: datetime
    updated_at: datetime


class TemplatePublic(BaseModel):
    model_config = examples(
        {
            "slug": "neck-routine",
            "name": "Neck routine",
            "description": "Neck and jawline on Tuesday, Thursday and Saturday evenings at 20:00.",
            "phases": [_NECK_PHASE],
        }
    )

    slug: str
    name: str
    description: str
    phases: list[PhaseBody]


_SLOT: dict[str, Any] = {
    "due_at": "2026-12-01T19:00:00Z",
    "window_start": "2026-11-30T23:00:00Z",
    "window_end": "2026-12-01T23:00:00Z",
    "local_day": "2026-12-01",
    "time_zone": "Europe/Paris",
    "phase": 0,
    "flexible": False,
    "status": "upcoming",
    "credit": 0.0,
    "sessions": [],
}


class SlotPublic(BaseModel):
    model_config = examples(_SLOT)

    due_at: datetime
    window_start: datetime = Field(description="A session from here ...")
    window_end: datetime = Field(description="... to here counts for this slot")
    local_day: date
    time_zone: str
    phase: int
    flexible: bool = Field(description="A per-week slot: any day of its week counts")
    status: Literal["done", "missed", "open", "upcoming"]
    credit: float = Field(ge=0, le=1, description="Shares credited so far; done at 1")
    sessions: list[str]


class DayPublic(BaseModel):
    model_config = examples({"day": "2026-12-01", "expected": 1, "done": 0, "credit": 0.5})

    day: date
    expected: int
    done: int
    credit: float


class WeekAdherencePublic(BaseModel):
    model_config = examples(
        {
            "iso_year": 2026,
            "iso_week": 49,
            "week_start": "2026-11-30",
            "expected": 3,
            "done": 1,
            "credit": 1.5,
            "ratio": 0.5,
            "minutes_by_zone": {"neck": 7.0, "jawline": 3.0},
            "planned_minutes_by_zone": {"neck": 10.5, "jawline": 4.5},
            "dose_uas_by_zone": {"neck": 58800.0, "jawline": 31500.0},
        }
    )

    iso_year: int
    iso_week: int
    week_start: date
    expected: int
    done: int
    credit: float
    ratio: float | None = Field(description="credit / expected, 0-1")
    minutes_by_zone: dict[str, float]
    planned_minutes_by_zone: dict[str, float]
    dose_uas_by_zone: dict[str, float]


class AdherencePublic(BaseModel):
    model_config = examples(
        {
            "plan_id": 1,
            "time_zone": "Europe/Paris",
            "since": "2026-11-29T23:00:00Z",
            "until": "2026-12-06T23:00:00Z",
            "now": "2026-12-01T08:00:00Z",
            "due": False,
            "due_now": [],
            "next_due": _SLOT,
            "streak_current": 0,
            "streak_best": 0,
            "days": [{"day": "2026-12-01", "expected": 1, "done": 0, "credit": 0.0}],
            "weeks": [],
            "slots": [_SLOT],
        }
    )

    plan_id: int
    time_zone: str
    since: datetime
    until: datetime
    now: datetime
    due: bool = Field(description="A session is due now (an open slot)")
    due_now: list[SlotPublic]
    next_due: SlotPublic | None
    streak_current: int = Field(description="Kept scheduled days in a row (rest days skipped)")
    streak_best: int
    days: list[DayPublic]
    weeks: list[WeekAdherencePublic]
    slots: list[SlotPublic]
