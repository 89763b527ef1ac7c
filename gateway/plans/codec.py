"""Plans as stored JSON and back: phases, the time-zone timeline, times of day.

The stored shapes (also the API's, docs/plans.md): a phase is ``{"name", "repeat": {"per_week",
"days_of_week": ["tue", ...], "times_of_day": ["20:00", ...]}, "weeks" | "days" | "start"/"end",
"programs", "zones", "max_level"}``; a zone-history entry is ``{"since": ISO | null, "name"}``.
Pure: no storage, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any

from gateway.plans.schedule import Phase, Repeat, Schedule, ZoneSpan

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def clock(text: str) -> time:
    """``"20:00"`` as a time."""
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def clock_text(at: time) -> str:
    return f"{at.hour:02d}:{at.minute:02d}"


def phase_from_json(data: Mapping[str, Any]) -> Phase:
    repeat = data.get("repeat") or {}
    days = data.get("days")
    if data.get("weeks") is not None:
        days = int(data["weeks"]) * 7
    return Phase(
        name=str(data.get("name", "")),
        repeat=Repeat(
            per_week=repeat.get("per_week"),
            days_of_week=tuple(WEEKDAYS.index(d) for d in repeat.get("days_of_week") or ()),
            times_of_day=tuple(clock(t) for t in repeat.get("times_of_day") or ()),
        ),
        days=days,
        start=date.fromisoformat(data["start"]) if data.get("start") else None,
        end=date.fromisoformat(data["end"]) if data.get("end") else None,
        programs=tuple(data.get("programs") or ()),
        zones=tuple(data.get("zones") or ()),
        max_level=data.get("max_level"),
    )


def phase_to_json(phase: Phase) -> dict[str, Any]:
    days = phase.days
    weeks = days // 7 if days is not None and days % 7 == 0 else None
    return {
        "name": phase.name,
        "repeat": {
            "per_week": phase.repeat.per_week,
            "days_of_week": [WEEKDAYS[d] for d in phase.repeat.days_of_week],
            "times_of_day": [clock_text(t) for t in phase.repeat.times_of_day],
        },
        "weeks": weeks,
        "days": None if weeks is not None else days,
        "start": phase.start.isoformat() if phase.start else None,
        "end": phase.end.isoformat() if phase.end else None,
        "programs": list(phase.programs),
        "zones": list(phase.zones),
        "max_level": phase.max_level,
    }


def zones_from_json(history: Iterable[Mapping[str, Any]]) -> tuple[ZoneSpan, ...]:
    return tuple(
        ZoneSpan(
            since=datetime.fromisoformat(entry["since"]) if entry.get("since") else None,
            name=str(entry["name"]),
        )
        for entry in history
    )


def schedule_of(
    starts_on: date, phases: Sequence[Mapping[str, Any]], zone_history: Sequence[Mapping[str, Any]]
) -> Schedule:
    return Schedule(
        starts_on=starts_on,
        phases=tuple(phase_from_json(p) for p in phases),
        zones=zones_from_json(zone_history),
    )
