"""Bodies of the statistics route: streaks, minutes and dose per zone, week by week.

This module computes nothing (``gateway.storage.history`` does).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, Field

from api.schemas.fields import examples

_WEEK_EXAMPLE: dict[str, Any] = {
    "iso_year": 2026,
    "iso_week": 48,
    "week_start": "2026-11-23",
    "minutes_by_zone": {"forehead": 6.0, "cheeks": 10.0, "jawline": 6.0},
    "total_minutes": 22.0,
    "dose_uas_by_zone": {"forehead": 108000.0, "cheeks": 210000.0, "jawline": 90000.0},
}


class WeekPublic(BaseModel):
    model_config = examples(_WEEK_EXAMPLE)

    iso_year: int
    iso_week: int
    week_start: date
    minutes_by_zone: dict[str, float]
    total_minutes: float
    dose_uas_by_zone: dict[str, float] = Field(
        description="Delivered charge per zone in µA·s (the sessions' dose, S9)."
    )


class StatsPublic(BaseModel):
    model_config = examples(
        {"streak_current": 4, "streak_best": 9, "last_day": "2026-11-30", "weeks": [_WEEK_EXAMPLE]}
    )

    streak_current: int = Field(description="Consecutive days with a completed session.")
    streak_best: int
    last_day: date | None
    weeks: list[WeekPublic]
