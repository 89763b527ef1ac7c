"""Schedule rules: a plan's phases and repeat rules expanded into due slots, in local time -> UTC.

A plan is a start day, a time-zone timeline and phases run one after the other. Each phase
has a repeat rule modelled on FHIR ``Timing.repeat`` and bounds:

* ``per_week=N`` (FHIR frequency N, period 1 wk): N sessions in each calendar week (Monday to
  Sunday, in the plan's zone), on any days. Slot k of a week of ``L`` days is *due* from the
  start of day ``floor(k * L / n)`` (at the first ``times_of_day`` if given, else midnight) and
  may be done on any day of that week. A week cut by the phase's bounds expects
  ``round_half_up(N * L / 7)`` sessions, so "5 per week for 4 weeks" expects 20 whatever
  weekday it starts on. N is 1-7 (one session a day at most).
* ``days_of_week`` (+ optional ``times_of_day``): one slot per listed weekday and time; it is due
  at that local time (midnight without a time) and may be done at any time of that local day.
* bounds: ``days`` (a duration; weeks are 7 days) or ``start``/``end`` dates (``end``
  inclusive). Phases follow each other; only the last may be open-ended.

Local time, the documented rules (RFC 5545's, which zoneinfo's ``fold=0`` implements):

* a time inside a spring-forward gap (02:30 on 2026-03-29 in Europe/Paris) is read with the
  offset before the gap, so it falls the length of the gap later (03:30 CEST);
* a time that occurs twice (02:30 on 2026-10-25 in Paris) means its first occurrence, once:
  slots are made per local day and time, never per UTC hour, so the repeated hour adds none;
* slots at other times keep their wall-clock time across a switch (20:00 stays 20:00).

Time-zone moves: the plan keeps a timeline of (since, zone). A slot belongs to the zone that
was in effect when its local day began (midnight, in that zone): days that began before a move
keep their old slots, later days follow the new zone. Weeks and days are counted in the zone of
each slot.

Pure: no I/O, no clock (callers pass ``since``/``until``), no storage, no asyncio.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_PER_WEEK = 7
MAX_TIMES_PER_DAY = 4
MAX_PHASE_DAYS = 3660
DAY = timedelta(days=1)
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2199, 1, 1)


class PlanError(ValueError):
    """A plan that cannot be scheduled. ``problems`` lists (field, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{where}: {why}" for where, why in problems))


def zone(name: str, field: str = "time_zone") -> ZoneInfo:
    """The IANA zone called ``name``; PlanError naming ``field`` when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        reason = f"unknown time zone {name!r} (an IANA name, e.g. Europe/Paris)"
        raise PlanError([(field, reason)]) from exc


@dataclass(frozen=True, slots=True)
class Repeat:
    """When sessions are due within a phase (FHIR ``Timing.repeat``, the parts mcgw uses)."""

    per_week: int | None = None
    days_of_week: tuple[int, ...] = ()
    """0 = Monday ... 6 = Sunday."""
    times_of_day: tuple[time, ...] = ()


@dataclass(frozen=True, slots=True)
class Phase:
    """One stretch of a plan: its repeat rule, bounds and what each session should cover."""

    name: str
    repeat: Repeat
    days: int | None = None
    start: date | None = None
    end: date | None = None
    """Last day, inclusive."""
    programs: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    max_level: int | None = None
    """Advice for the session (a gentle start); adherence does not check it."""

    def accepts(self, zones: Sequence[str]) -> bool:
        """Whether a session counts for this phase: any session when the phase names no zones,
        else one that gave output in a named zone. ``programs`` are what the app suggests and
        what planned minutes are counted from; they do not restrict what counts."""
        return not self.zones or any(z in self.zones for z in zones)


@dataclass(frozen=True, slots=True)
class ZoneSpan:
    """The plan's zone from ``since`` (None: from the beginning)."""

    since: datetime | None
    name: str


@dataclass(frozen=True, slots=True)
class Schedule:
    """What expansion needs of a plan."""

    starts_on: date
    phases: tuple[Phase, ...]
    zones: tuple[ZoneSpan, ...]


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    """One expected session: due at ``due_at``, done if credited within its window (UTC)."""

    due_at: datetime
    window_start: datetime
    window_end: datetime
    local_day: date
    phase: int
    tz: str
    flexible: bool
    """A ``per_week`` slot (may be done any day of its week) rather than a fixed day."""


@dataclass(frozen=True, slots=True)
class PhaseSpan:
    """A phase's local days: ``first`` up to ``until`` (exclusive; None: open-ended)."""

    index: int
    first: date
    until: date | None


def local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local day and time (gap: shifted forward; repeated hour: first)."""
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def validate(schedule: Schedule) -> list[PhaseSpan]:
    """Check the whole plan and return each phase's days; PlanError lists every problem."""
    problems: list[tuple[str, str]] = []
    for i, span in enumerate(schedule.zones):
        try:
            zone(span.name, f"time_zone_history[{i}].name")
        except PlanError as exc:
            problems.extend(exc.problems)
    if not schedule.phases:
        problems.append(("phases", "a plan needs at least one phase"))
    if not FIRST_DAY <= schedule.starts_on <= LAST_DAY:
        problems.append(("starts_on", f"must be between {FIRST_DAY} and {LAST_DAY}"))
    spans: list[PhaseSpan] = []
    cursor: date | None = schedule.starts_on
    for i, phase in enumerate(schedule.phases):
        where = f"phases[{i}]"
        problems.extend(_repeat_problems(phase.repeat, f"{where}.repeat"))
        if cursor is None:
            problems.append((where, "follows an open-ended phase; give that one days or an end"))
            break
        first = phase.start or cursor
        if first < cursor:
            problems.append((f"{where}.start", f"{first} is before the end of what precedes it"))
        until: date | None = None
        if phase.days is not None:
            if phase.end is not None:
                problems.append((f"{where}.end", "give a duration or an end date, not both"))
            if not 1 <= phase.days <= MAX_PHASE_DAYS:
                problems.append((f"{where}.days", f"must be 1-{MAX_PHASE_DAYS} days"))
            until = first + timedelta(days=phase.days)
        elif phase.end is not None:
            if phase.end < first:
                problems.append((f"{where}.end", f"{phase.end} is before the phase starts"))
            until = phase.end + DAY
        spans.append(PhaseSpan(index=i, first=first, until=until))
        cursor = until
    if problems:
        raise PlanError(problems)
    return spans


def _repeat_problems(repeat: Repeat, where: str) -> Iterator[tuple[str, str]]:
    if repeat.per_week is not None:
        if not 1 <= repeat.per_week <= MAX_PER_WEEK:
            yield (f"{where}.per_week", f"must be 1-{MAX_PER_WEEK} sessions a week")
        if repeat.days_of_week:
            yield (f"{where}.days_of_week", "give per_week or days_of_week, not both")
    elif not repeat.days_of_week:
        yield (where, "a phase with no session: give per_week or days_of_week")
    if any(not 0 <= d <= 6 for d in repeat.days_of_week):
        yield (f"{where}.days_of_week", "days are 0 (Monday) to 6 (Sunday)")
    if len(set(repeat.days_of_week)) != len(repeat.days_of_week):
        yield (f"{where}.days_of_week", "a day is listed twice")
    if len(set(repeat.times_of_day)) != len(repeat.times_of_day):
        yield (f"{where}.times_of_day", "a time is listed twice")
    if len(repeat.times_of_day) > MAX_TIMES_PER_DAY:
        yield (f"{where}.times_of_day", f"at most {MAX_TIMES_PER_DAY} times a day")
    if repeat.per_week is not None and len(repeat.times_of_day) > 1:
        yield (f"{where}.times_of_day", "per_week takes at most one time (when a slot is due)")


def zone_at(schedule: Schedule, instant: datetime) -> str:
    """The plan's zone at ``instant``."""
    name = schedule.zones[0].name
    for span in schedule.zones[1:]:
        if span.since is not None and span.since <= instant:
            name = span.name
    return name


def expand(schedule: Schedule, since: datetime, until: datetime) -> list[Slot]:
    """Every slot due in [since, until), strictly increasing by ``due_at``."""
    phases = validate(schedule)
    found: dict[datetime, Slot] = {}
    zones = schedule.zones
    for z, span in enumerate(zones):
        seg_from = span.since if z > 0 and span.since is not None else None
        seg_until = zones[z + 1].since if z + 1 < len(zones) else None
        tz = ZoneInfo(span.name)
        lo = max(since, seg_from) if seg_from is not None else since
        hi = min(until, seg_until) if seg_until is not None else until
        if lo >= hi + DAY:
            continue
        first_day = lo.astimezone(tz).date() - DAY
        last_day = hi.astimezone(tz).date() + DAY
        for slot in _slots(schedule, phases, span.name, tz, first_day, last_day):
            day_start = local(slot.local_day, time(0), tz)
            in_segment = (seg_from is None or day_start >= seg_from) and (
                seg_until is None or day_start < seg_until
            )
            if in_segment and since <= slot.due_at < until:
                found.setdefault(slot.due_at, slot)  # earlier zone wins an exact tie
    return [found[key] for key in sorted(found)]


def _slots(
    schedule: Schedule,
    phases: list[PhaseSpan],
    tz_name: str,
    tz: ZoneInfo,
    first_day: date,
    last_day: date,
) -> Iterator[Slot]:
    for span in phases:
        lo = max(first_day, span.first)
        hi = last_day if span.until is None else min(last_day, span.until)
        if lo >= hi:
            continue
        phase = schedule.phases[span.index]
        if phase.repeat.per_week is not None:
            yield from _weekly(phase.repeat, span, tz_name, tz, lo, hi)
        else:
            yield from _daily(phase.repeat, span.index, tz_name, tz, lo, hi)


def _daily(
    repeat: Repeat, index: int, tz_name: str, tz: ZoneInfo, lo: date, hi: date
) -> Iterator[Slot]:
    times = repeat.times_of_day or (time(0),)
    day = lo
    while day < hi:
        if day.weekday() in repeat.days_of_week:
            start, end = local(day, time(0), tz), local(day + DAY, time(0), tz)
            due = sorted({min(local(day, at, tz), end - timedelta(seconds=1)) for at in times})
            for at in due:
                yield Slot(max(at, start), start, end, day, index, tz_name, flexible=False)
        day += DAY


def _weekly(
    repeat: Repeat, span: PhaseSpan, tz_name: str, tz: ZoneInfo, lo: date, hi: date
) -> Iterator[Slot]:
    assert repeat.per_week is not None
    at = repeat.times_of_day[0] if repeat.times_of_day else time(0)
    monday = lo - timedelta(days=lo.weekday())
    while monday < hi:
        first = max(monday, span.first)
        until = monday + timedelta(days=7)
        if span.until is not None:
            until = min(until, span.until)
        length = (until - first).days
        count = min(length, (2 * repeat.per_week * length + 7) // 14)  # round half up
        start, end = local(first, time(0), tz), local(until, time(0), tz)
        for k in range(count):
            day = first + timedelta(days=k * length // count)
            if lo <= day < hi:
                due = min(max(local(day, at, tz), start), end - timedelta(seconds=1))
                yield Slot(due, start, end, day, span.index, tz_name, flexible=True)
        monday += timedelta(days=7)
