"""Schedule rules: repeat rules, bounds, DST switches in Europe/Paris, time-zone moves, and
properties (no negative, duplicate or out-of-bounds slot; strictly increasing)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.plans.schedule import (
    Phase,
    PlanError,
    Repeat,
    Schedule,
    ZoneSpan,
    expand,
    validate,
)
from gateway.plans.templates import TEMPLATES

PARIS = ZoneInfo("Europe/Paris")
TUE_THU_SAT_20 = Repeat(days_of_week=(1, 3, 5), times_of_day=(time(20, 0),))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def plan(*phases: Phase, starts_on: date = date(2026, 3, 1), tz: str = "Europe/Paris") -> Schedule:
    return Schedule(starts_on=starts_on, phases=phases, zones=(ZoneSpan(None, tz),))


def test_a_20h_slot_stays_20h_local_across_both_dst_switches() -> None:
    every_day = Phase("p", Repeat(days_of_week=tuple(range(7)), times_of_day=(time(20, 0),)))
    slots = expand(plan(every_day), utc(2026, 3, 27), utc(2026, 3, 31))
    assert [s.due_at.astimezone(PARIS).time() for s in slots] == [time(20, 0)] * 4
    # Before the switch 20:00 is 19:00 UTC, after it 18:00 UTC: the wall clock wins.
    assert [s.due_at.hour for s in slots] == [19, 19, 18, 18]
    autumn = expand(plan(every_day), utc(2026, 10, 24), utc(2026, 10, 27))
    assert [s.due_at.astimezone(PARIS).time() for s in autumn] == [time(20, 0)] * 3
    assert [s.due_at.hour for s in autumn] == [18, 19, 19]


def test_a_slot_in_the_skipped_hour_moves_forward_by_the_gap() -> None:
    sunday_0230 = Phase("p", Repeat(days_of_week=(6,), times_of_day=(time(2, 30),)))
    slots = expand(plan(sunday_0230), utc(2026, 3, 22), utc(2026, 4, 6))
    local = [s.due_at.astimezone(PARIS) for s in slots]
    assert [d.date() for d in local] == [date(2026, 3, 22), date(2026, 3, 29), date(2026, 4, 5)]
    # 02:30 does not exist on 29 March: read with the offset before the gap, it is 03:30 CEST.
    assert [d.time() for d in local] == [time(2, 30), time(3, 30), time(2, 30)]
    assert slots[1].due_at == utc(2026, 3, 29, 1, 30)
    # The day of the switch is 23 hours long.
    assert slots[1].window_end - slots[1].window_start == timedelta(hours=23)


def test_the_repeated_hour_yields_one_slot_not_two() -> None:
    sunday_0230 = Phase("p", Repeat(days_of_week=(6,), times_of_day=(time(2, 30), time(3, 0))))
    slots = expand(plan(sunday_0230), utc(2026, 10, 24), utc(2026, 10, 26))
    # 02:30 happens twice on 25 October: its first occurrence (CEST, 00:30 UTC) only.
    assert [s.due_at for s in slots] == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 0)]
    assert slots[0].window_end - slots[0].window_start == timedelta(hours=25)


def test_slots_in_the_skipped_hour_and_after_it_do_not_collide() -> None:
    both = Phase("p", Repeat(days_of_week=(6,), times_of_day=(time(2, 30), time(3, 30))))
    slots = expand(plan(both), utc(2026, 3, 28), utc(2026, 3, 30))
    assert [s.due_at for s in slots] == [utc(2026, 3, 29, 1, 30)]  # one slot, not two


def test_a_week_spanning_the_spring_switch_counts_in_local_days() -> None:
    five = Phase("loading", Repeat(per_week=5), days=28)
    slots = expand(plan(five, starts_on=date(2026, 3, 23)), utc(2026, 3, 22), utc(2026, 3, 29, 22))
    assert [s.local_day for s in slots] == [
        date(2026, 3, 23),
        date(2026, 3, 24),
        date(2026, 3, 25),
        date(2026, 3, 27),
        date(2026, 3, 28),
    ]
    week = slots[0]
    assert week.window_start == utc(2026, 3, 22, 23)  # Monday 00:00 CET
    assert week.window_end == utc(2026, 3, 29, 22)  # next Monday 00:00 CEST
    assert all(s.flexible for s in slots)


def test_loading_then_maintenance_expects_20_then_2_a_week_from_any_weekday() -> None:
    template = TEMPLATES[0]
    start = date(2026, 3, 26)  # a Thursday
    schedule = plan(*template.phases, starts_on=start)
    slots = expand(schedule, utc(2026, 3, 1), utc(2026, 6, 1))
    loading = [s for s in slots if s.phase == 0]
    assert len(loading) == 20
    assert loading[0].local_day == start
    assert max(s.local_day for s in loading) < start + timedelta(days=28)
    maintenance = [s for s in slots if s.phase == 1]
    weeks = {s.local_day.isocalendar()[:2] for s in maintenance}
    assert all(
        sum(1 for s in maintenance if s.local_day.isocalendar()[:2] == w) <= 2 for w in weeks
    )


def test_a_move_keeps_past_slots_and_moves_future_ones() -> None:
    routine = Phase("r", TUE_THU_SAT_20)
    moved_at = utc(2026, 6, 11, 12)  # Thursday noon UTC: the person lands in New York
    schedule = Schedule(
        starts_on=date(2026, 6, 1),
        phases=(routine,),
        zones=(ZoneSpan(None, "Europe/Paris"), ZoneSpan(moved_at, "America/New_York")),
    )
    slots = expand(schedule, utc(2026, 6, 8), utc(2026, 6, 15))
    # Tuesday 9 and Thursday 11 began in Paris: 20:00 Paris. Saturday 13 follows New York.
    assert [(s.local_day, s.tz) for s in slots] == [
        (date(2026, 6, 9), "Europe/Paris"),
        (date(2026, 6, 11), "Europe/Paris"),
        (date(2026, 6, 13), "America/New_York"),
    ]
    assert slots[1].due_at == utc(2026, 6, 11, 18)
    assert slots[2].due_at == utc(2026, 6, 14, 0)  # 20:00 EDT
    unmoved = expand(plan(routine, starts_on=date(2026, 6, 1)), utc(2026, 6, 8), utc(2026, 6, 15))
    assert unmoved[:2] == slots[:2]  # days that began before the move did not change


@pytest.mark.parametrize(
    ("phase", "field"),
    [
        (Phase("p", Repeat()), "phases[0].repeat"),
        (Phase("p", Repeat(per_week=0)), "phases[0].repeat.per_week"),
        (Phase("p", Repeat(per_week=8)), "phases[0].repeat.per_week"),
        (Phase("p", Repeat(per_week=2), days=0), "phases[0].days"),
        (Phase("p", Repeat(days_of_week=(1, 1))), "phases[0].repeat.days_of_week"),
    ],
)
def test_bad_phases_are_refused_naming_the_field(phase: Phase, field: str) -> None:
    with pytest.raises(PlanError) as refused:
        validate(plan(phase))
    assert field in [where for where, _ in refused.value.problems]


def test_only_the_last_phase_may_be_open_ended_and_zones_must_exist() -> None:
    open_first = plan(Phase("a", Repeat(per_week=2)), Phase("b", Repeat(per_week=3)))
    with pytest.raises(PlanError, match="open-ended"):
        validate(open_first)
    with pytest.raises(PlanError, match="unknown time zone"):
        validate(plan(Phase("a", Repeat(per_week=2)), tz="Mars/Olympus"))


# --- properties ---------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
         "America/Santiago", "Pacific/Chatham", "Africa/Casablanca"]  # fmt: skip

repeats = st.one_of(
    st.builds(Repeat, per_week=st.integers(1, 7)),
    st.builds(
        Repeat,
        per_week=st.integers(1, 7),
        times_of_day=st.lists(st.times(), max_size=1).map(tuple),
    ),
    st.builds(
        Repeat,
        days_of_week=st.lists(st.integers(0, 6), min_size=1, max_size=7, unique=True).map(tuple),
        times_of_day=st.lists(
            st.times().map(lambda t: t.replace(second=0, microsecond=0)), max_size=4, unique=True
        ).map(tuple),
    ),
)
phases = st.builds(Phase, name=st.just("p"), repeat=repeats, days=st.integers(1, 60))
schedules = st.builds(
    lambda ps, last, start, zones, moves: Schedule(
        starts_on=start,
        phases=(*ps, last),
        zones=(
            ZoneSpan(None, zones[0]),
            *(
                ZoneSpan(utc(2026, 1, 1) + timedelta(hours=h), z)
                for h, z in zip(sorted(moves), zones[1:], strict=False)
            ),
        ),
    ),
    st.lists(phases, max_size=2),
    st.builds(Phase, name=st.just("last"), repeat=repeats),
    st.dates(date(2025, 11, 1), date(2026, 12, 1)),
    st.lists(st.sampled_from(ZONES), min_size=1, max_size=3),
    st.lists(st.integers(0, 24 * 400), min_size=2, max_size=2, unique=True),
)


@settings(max_examples=150, deadline=None)
@given(schedules, st.dates(date(2025, 10, 1), date(2027, 1, 1)), st.integers(1, 60))
def test_no_schedule_yields_a_duplicate_negative_or_out_of_bounds_slot(
    schedule: Schedule, first: date, days: int
) -> None:
    since = datetime.combine(first, time(0), tzinfo=UTC)
    until = since + timedelta(days=days)
    slots = expand(schedule, since, until)
    dues = [s.due_at for s in slots]
    assert dues == sorted(set(dues)), "due slots strictly increase (so none is repeated)"
    spans = validate(schedule)
    for slot in slots:
        assert since <= slot.due_at < until
        assert slot.window_start <= slot.due_at < slot.window_end
        span = spans[slot.phase]
        assert span.first <= slot.local_day
        assert span.until is None or slot.local_day < span.until
        assert slot.local_day >= schedule.starts_on
    # Cutting the range in two gives the same slots (no slot depends on the range asked).
    middle = since + (until - since) / 2
    assert expand(schedule, since, middle) + expand(schedule, middle, until) == slots
