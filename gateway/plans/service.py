"""Plans wired to storage: a stored plan's adherence report and the per-user summary.

``report`` reads one plan and the sessions that can credit its slots (one storage call, run on
the writer thread by the caller: ``runtime.db(report, ...)``) and applies the pure rules of
``schedule`` and ``adherence``. ``summary`` is what a bridge (MQTT / Home Assistant, the web
page) reads: is a session due now, and this week's done versus expected.

No HTTP here, and no task: the planner (``gateway.plans.planner``) owns the timing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session

from gateway.plans import adherence as rules
from gateway.plans.codec import schedule_of
from gateway.plans.schedule import Schedule, expand, zone_at
from gateway.programs import Program
from gateway.storage import plans as store
from gateway.storage.models import SessionRecord
from gateway.storage.plans import PlanRecord

LOOKAHEAD = timedelta(days=15)
"""How far ahead "next due" is looked for (past any phase of at most two weeks' gap)."""


@dataclass(frozen=True, slots=True)
class Report:
    """A plan's adherence over [since, until), and what is due at ``now``."""

    plan_id: int
    owner_id: int
    time_zone: str
    since: datetime
    until: datetime
    now: datetime
    slots: list[rules.SlotStatus]
    days: list[rules.DayAdherence]
    weeks: list[rules.WeekAdherence]
    streak: rules.Streak
    due_now: list[rules.SlotStatus]
    next_due: rules.SlotStatus | None
    timeline: list[rules.SlotStatus]
    """Every slot from the plan's start to past ``now`` (for the planner)."""


@dataclass(frozen=True, slots=True)
class Summary:
    """The hook for bridges: one user's state on their newest plan (None: no plan)."""

    user_id: int
    plan_id: int | None
    due: bool
    week_done: int
    week_expected: int
    week_credit: float
    """Credited shares this week (a stopped session counts its share; docs/plans.md)."""

    @property
    def week_ratio(self) -> float | None:
        """Credited shares / expected this week: the ``ratio`` of the week in
        ``GET /me/adherence`` (None when nothing is expected)."""
        if self.week_expected == 0:
            return None
        return round(min(1.0, self.week_credit / self.week_expected), 4)


def zone_seconds(programs: Iterable[Program]) -> dict[str, dict[str, float]]:
    """Each program's seconds per zone (planned minutes are counted from them)."""
    out: dict[str, dict[str, float]] = {}
    for program in programs:
        zones = out.setdefault(program.slug, {})
        for step in program.steps:
            zones[step.zone] = zones.get(step.zone, 0.0) + step.duration_s
    return out


def schedule(plan: PlanRecord) -> Schedule:
    return schedule_of(plan.starts_on, plan.phases, plan.zone_history)


def done_of(record: SessionRecord) -> rules.Done:
    return rules.Done(
        id=record.id,
        at=record.started_at or record.created_at,
        state=record.state,
        program=record.program_slug,
        planned_s=float(record.planned_s),
        delivered_s=float(record.delivered_s),
        seconds_by_zone=dict(record.seconds_by_zone or {}),
        dose_uas_by_zone=dict(record.dose_uas_by_zone or {}),
    )


def compute(
    plan: PlanRecord,
    sessions: list[rules.Done],
    *,
    since: datetime,
    until: datetime,
    now: datetime,
    program_seconds: Mapping[str, Mapping[str, float]],
) -> Report:
    """The pure part of ``report`` (sessions already read)."""
    assert plan.id is not None
    plan_schedule = schedule(plan)
    lo, hi = _span(plan, since, until, now)
    all_slots = rules.statuses(expand(plan_schedule, lo, hi), sessions, plan_schedule, now)
    in_range = [s for s in all_slots if since <= s.slot.due_at < until]
    shown = {s.id for s in sessions if since <= s.at < until}
    upcoming = [s for s in all_slots if s.status == "upcoming"]
    return Report(
        plan_id=plan.id,
        owner_id=plan.owner_id,
        time_zone=plan.time_zone,
        since=since,
        until=until,
        now=now,
        slots=in_range,
        days=rules.by_day(in_range),
        weeks=rules.by_week(
            in_range, [s for s in sessions if s.id in shown], plan_schedule, program_seconds
        ),
        streak=rules.streak(all_slots),
        due_now=[s for s in all_slots if s.status == "open"],
        next_due=upcoming[0] if upcoming else None,
        timeline=all_slots,
    )


def _span(
    plan: PlanRecord, since: datetime, until: datetime, now: datetime
) -> tuple[datetime, datetime]:
    """Slots and sessions are read from the plan's first day (streaks need all of them, and a
    session is credited the same way whatever range is asked) to past ``now`` and ``until``
    (callers bound ``until``: the API cuts a range at 400 days)."""
    start = datetime.combine(plan.starts_on, time(0), tzinfo=UTC) - timedelta(days=1)
    return start, max(until, now + LOOKAHEAD)


def report(
    *,
    session: Session,
    plan_id: int,
    since: datetime,
    until: datetime,
    now: datetime,
    program_seconds: Mapping[str, Mapping[str, float]],
) -> Report:
    """Read the plan and its sessions, then ``compute``."""
    plan = store.get_plan(session=session, plan_id=plan_id)
    lo, hi = _span(plan, since, until, now)
    records = store.ended_sessions(session=session, owner_id=plan.owner_id, since=lo, until=hi)
    sessions = [done_of(r) for r in records]
    return compute(
        plan, sessions, since=since, until=until, now=now, program_seconds=program_seconds
    )


def this_week(plan: PlanRecord, now: datetime) -> tuple[datetime, datetime]:
    """This ISO week's bounds in the plan's zone at ``now``."""
    tz = ZoneInfo(zone_at(schedule(plan), now))
    return rules.week_bounds(now.astimezone(tz).date(), tz)


def summary(
    *,
    session: Session,
    user_id: int,
    now: datetime,
    program_seconds: Mapping[str, Mapping[str, float]],
) -> Summary:
    """``Summary`` of the user's newest plan this week."""
    plans = store.list_plans(session=session, owner_id=user_id)
    if not plans:
        return Summary(
            user_id=user_id, plan_id=None, due=False, week_done=0, week_expected=0, week_credit=0.0
        )
    plan = plans[-1]
    assert plan.id is not None
    since, until = this_week(plan, now)
    got = report(
        session=session,
        plan_id=plan.id,
        since=since,
        until=until,
        now=now,
        program_seconds=program_seconds,
    )
    return Summary(
        user_id=user_id,
        plan_id=plan.id,
        due=bool(got.due_now),
        week_done=sum(s.status == "done" for s in got.slots),
        week_expected=len(got.slots),
        week_credit=round(sum(s.credit for s in got.slots), 4),
    )
