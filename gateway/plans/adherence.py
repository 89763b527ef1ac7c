"""Adherence rules: recorded sessions credited to a plan's slots, and what that adds up to.

The documented rules (docs/plans.md):

* **Share.** A completed session counts 1. A stopped, interrupted or failed one counts the
  share it delivered: ``delivered_s / planned_s``, capped at 1 (0 when nothing was planned).
  A session still running or paused counts nothing yet.
* **Crediting.** Sessions are taken in the order they started. Each credits its share to one
  slot: among the slots not yet done whose window contains the session's start and whose phase
  accepts it (``Phase.accepts``), the one whose window ends first (then the one due first). A
  slot's credit is capped at 1; what a session gives beyond that is not carried to another slot.
* **Done, missed, open, upcoming.** A slot is done when its credit reaches 1; otherwise missed
  once its window has ended, open (due now) from its due time to the end of its window, and
  upcoming before it is due.
* **Days and weeks** are the slots' local days and ISO weeks (in the zone of each slot);
  ``ratio`` is credited shares / expected slots, in [0, 1] (None when nothing was expected).
  Minutes and dose per zone are those of the sessions that started in the week.
* **Streaks** run over scheduled days only: a day with slots is kept when all are done, broken
  when one is missed, and neither while still open. Rest days are not counted and break nothing.

Pure: no I/O and no clock (``now`` is an argument).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.plans.schedule import Schedule, Slot, zone_at

EPSILON = 1e-9
Status = Literal["done", "missed", "open", "upcoming"]


@dataclass(frozen=True, slots=True)
class Done:
    """A recorded session, as adherence needs it."""

    id: str
    at: datetime
    """When it started (UTC)."""
    state: str
    program: str
    planned_s: float
    delivered_s: float
    seconds_by_zone: Mapping[str, float] = field(default_factory=dict)
    dose_uas_by_zone: Mapping[str, float] = field(default_factory=dict)

    @property
    def share(self) -> float:
        """What this session counts for (see the module docstring)."""
        if self.state == "completed":
            return 1.0
        if self.state not in ("stopped", "interrupted", "failed") or self.planned_s <= 0:
            return 0.0
        return max(0.0, min(1.0, self.delivered_s / self.planned_s))


@dataclass(frozen=True, slots=True)
class SlotStatus:
    slot: Slot
    credit: float
    status: Status
    sessions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DayAdherence:
    day: date
    expected: int
    done: int
    credit: float


@dataclass(frozen=True, slots=True)
class WeekAdherence:
    iso_year: int
    iso_week: int
    week_start: date
    expected: int
    done: int
    credit: float
    ratio: float | None
    minutes_by_zone: dict[str, float]
    planned_minutes_by_zone: dict[str, float]
    dose_uas_by_zone: dict[str, float]


@dataclass(frozen=True, slots=True)
class Streak:
    current: int
    best: int


def credit(
    slots: Sequence[Slot], sessions: Sequence[Done], schedule: Schedule
) -> list[tuple[float, tuple[str, ...]]]:
    """Each slot's credit and the sessions that gave it, in the order of ``slots``."""
    credits = [0.0] * len(slots)
    given: list[list[str]] = [[] for _ in slots]
    for done in sorted(sessions, key=lambda d: (d.at, d.id)):
        share = done.share
        if share <= 0:
            continue
        zones = [z for z, s in done.seconds_by_zone.items() if s > 0]
        best: int | None = None
        for i, slot in enumerate(slots):
            if credits[i] >= 1 - EPSILON or not slot.window_start <= done.at < slot.window_end:
                continue
            if not schedule.phases[slot.phase].accepts(zones):
                continue
            key = (slot.window_end, slot.due_at)
            if best is None or key < (slots[best].window_end, slots[best].due_at):
                best = i
        if best is not None:
            credits[best] = min(1.0, credits[best] + share)
            given[best].append(done.id)
    return [(c, tuple(g)) for c, g in zip(credits, given, strict=True)]


def statuses(
    slots: Sequence[Slot], sessions: Sequence[Done], schedule: Schedule, now: datetime
) -> list[SlotStatus]:
    """Every slot with its credit and status at ``now``."""
    out = []
    for slot, (value, ids) in zip(slots, credit(slots, sessions, schedule), strict=True):
        status: Status
        if value >= 1 - EPSILON:
            status = "done"
        elif slot.window_end <= now:
            status = "missed"
        elif slot.due_at <= now:
            status = "open"
        else:
            status = "upcoming"
        out.append(SlotStatus(slot=slot, credit=round(value, 4), status=status, sessions=ids))
    return out


def by_day(items: Sequence[SlotStatus]) -> list[DayAdherence]:
    days: dict[date, list[SlotStatus]] = {}
    for item in items:
        days.setdefault(item.slot.local_day, []).append(item)
    return [
        DayAdherence(
            day=day,
            expected=len(group),
            done=sum(1 for s in group if s.status == "done"),
            credit=round(sum(s.credit for s in group), 4),
        )
        for day, group in sorted(days.items())
    ]


def _add(into: dict[str, float], values: Mapping[str, float], scale: float = 1.0) -> None:
    for key, value in values.items():
        into[key] = into.get(key, 0.0) + float(value) * scale


def by_week(
    items: Sequence[SlotStatus],
    sessions: Sequence[Done],
    schedule: Schedule,
    program_seconds: Mapping[str, Mapping[str, float]],
) -> list[WeekAdherence]:
    """Per ISO week of the slots' local days; ``program_seconds`` gives each program's seconds
    per zone (for the planned minutes)."""
    slots_of: dict[tuple[int, int], list[SlotStatus]] = {}
    for item in items:
        year, week, _ = item.slot.local_day.isocalendar()
        slots_of.setdefault((year, week), []).append(item)
    seconds: dict[tuple[int, int], dict[str, float]] = {}
    dose: dict[tuple[int, int], dict[str, float]] = {}
    for done in sessions:
        day = done.at.astimezone(ZoneInfo(zone_at(schedule, done.at))).date()
        year, week, _ = day.isocalendar()
        if (year, week) in slots_of:
            _add(seconds.setdefault((year, week), {}), done.seconds_by_zone)
            _add(dose.setdefault((year, week), {}), done.dose_uas_by_zone)
    weeks = []
    for (year, week), group in sorted(slots_of.items()):
        planned: dict[str, float] = {}
        for item in group:
            for slug in schedule.phases[item.slot.phase].programs[:1]:
                _add(planned, program_seconds.get(slug, {}))
        total = sum(s.credit for s in group)
        weeks.append(
            WeekAdherence(
                iso_year=year,
                iso_week=week,
                week_start=date.fromisocalendar(year, week, 1),
                expected=len(group),
                done=sum(1 for s in group if s.status == "done"),
                credit=round(total, 4),
                ratio=round(min(1.0, total / len(group)), 4),
                minutes_by_zone=_minutes(seconds.get((year, week), {})),
                planned_minutes_by_zone=_minutes(planned),
                dose_uas_by_zone={
                    k: round(v, 1) for k, v in sorted(dose.get((year, week), {}).items())
                },
            )
        )
    return weeks


def _minutes(seconds: Mapping[str, float]) -> dict[str, float]:
    return {zone: round(s / 60, 2) for zone, s in sorted(seconds.items())}


def streak(items: Sequence[SlotStatus]) -> Streak:
    """Current and best runs of kept scheduled days (see the module docstring)."""
    days: dict[date, list[str]] = {}
    for item in items:
        days.setdefault(item.slot.local_day, []).append(item.status)
    run = best = 0
    for _day, group in sorted(days.items()):
        if "missed" in group:
            run = 0
        elif all(s == "done" for s in group):
            run += 1
            best = max(best, run)
    return Streak(current=run, best=best)


def week_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants of the start of ``day``'s ISO week and of the next one, in ``tz``."""
    monday = day - timedelta(days=day.weekday())
    start = datetime.combine(monday, datetime.min.time(), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(monday + timedelta(days=7), datetime.min.time(), tzinfo=tz)
    return start, end.astimezone(UTC)
