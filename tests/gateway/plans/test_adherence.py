"""Adherence rules: shares of stopped sessions, crediting, streaks on scheduled days, quiet hours,
and properties (every ratio and credit in [0, 1]; a session credits one slot at most)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.plans import adherence as rules
from gateway.plans.quiet import QuietHours
from gateway.plans.schedule import Phase, Repeat, Schedule, ZoneSpan, expand

PARIS = ZoneInfo("Europe/Paris")
ROUTINE = Phase("r", Repeat(days_of_week=(1, 3, 5), times_of_day=(time(20, 0),)), zones=("neck",))
SCHEDULE = Schedule(date(2026, 6, 1), (ROUTINE,), (ZoneSpan(None, "Europe/Paris"),))


def paris(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 6, day, hour, minute, tzinfo=PARIS).astimezone(UTC)


def done(sid: str, at: datetime, state: str = "completed", delivered: float = 300.0) -> rules.Done:
    return rules.Done(sid, at, state, "neck-tone", 300.0, delivered, {"neck": delivered})


def test_shares_follow_the_documented_rule() -> None:
    assert done("a", paris(2, 9)).share == 1.0
    assert done("b", paris(2, 9), "stopped", 150.0).share == 0.5
    assert done("c", paris(2, 9), "interrupted", 900.0).share == 1.0  # capped
    assert done("d", paris(2, 9), "running", 300.0).share == 0.0


def test_two_halves_make_a_slot_and_a_rest_day_breaks_no_streak() -> None:
    slots = expand(SCHEDULE, paris(1, 0), paris(15, 0))  # Tue 2, Thu 4, Sat 6, 9, 11, 13
    sessions = [
        done("tue", paris(2, 8)),
        done("thu-1", paris(4, 7), "stopped", 150.0),
        done("thu-2", paris(4, 21), "interrupted", 150.0),
        done("sat", paris(6, 20, 30)),
        # Tuesday 9: nothing. Thursday 11 and Saturday 13 kept.
        done("thu", paris(11, 19)),
        done("sat2", paris(13, 10)),
        done("wed-extra", paris(10, 10)),  # a rest day: credits nothing, breaks nothing
    ]
    now = paris(13, 21)
    items = rules.statuses(slots, sessions, SCHEDULE, now)
    assert [i.status for i in items] == ["done", "done", "done", "missed", "done", "done"]
    assert items[1].sessions == ("thu-1", "thu-2")
    assert rules.streak(items) == rules.Streak(current=2, best=3)
    weeks = rules.by_week(items, sessions, SCHEDULE, {"neck-tone": {"neck": 210, "jawline": 90}})
    assert [(w.expected, w.done, w.ratio) for w in weeks] == [(3, 3, 1.0), (3, 2, 0.6667)]
    assert weeks[0].planned_minutes_by_zone == {}  # the phase names zones, not a program
    assert weeks[1].minutes_by_zone == {"neck": 15.0}


def test_a_session_for_another_zone_does_not_count_for_a_neck_routine() -> None:
    slots = expand(SCHEDULE, paris(1, 0), paris(3, 0))
    cheeks = rules.Done("x", paris(2, 9), "completed", "quick-lift", 300, 300, {"cheeks": 300})
    [item] = rules.statuses(slots, [cheeks], SCHEDULE, paris(2, 21))
    assert item.status == "open"
    assert item.credit == 0


def test_quiet_hours_across_midnight() -> None:
    quiet = QuietHours(start=time(22, 0), end=time(7, 0))
    assert quiet.contains(paris(2, 23), PARIS)
    assert quiet.contains(paris(3, 6, 59), PARIS)
    assert not quiet.contains(paris(3, 7), PARIS)
    assert quiet.release(paris(2, 23), PARIS) == paris(3, 7)
    assert quiet.release(paris(3, 5), PARIS) == paris(3, 7)
    assert quiet.release(paris(3, 12), PARIS) == paris(3, 12)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 14 * 24 * 60),
            st.sampled_from(["completed", "stopped", "interrupted", "failed", "running"]),
            st.floats(0, 2000),
        ),
        max_size=30,
    ),
    st.integers(0, 20 * 24 * 60),
)
def test_credits_and_ratios_stay_in_0_1(
    raw: list[tuple[int, str, float]], now_minutes: int
) -> None:
    start = paris(1, 0)
    five = Schedule(date(2026, 6, 3), (Phase("p", Repeat(per_week=5)),), SCHEDULE.zones)
    sessions = [
        rules.Done(f"s{i}", start + timedelta(minutes=m), state, "p", 600.0, d, {"neck": d})
        for i, (m, state, d) in enumerate(raw)
    ]
    slots = expand(five, start, start + timedelta(days=14))
    now = start + timedelta(minutes=now_minutes)
    items = rules.statuses(slots, sessions, five, now)
    for item in items:
        assert 0 <= item.credit <= 1
        assert item.status in ("done", "missed", "open", "upcoming")
    used = [sid for item in items for sid in item.sessions]
    assert len(used) == len(set(used)), "a session credits one slot at most"
    for week in rules.by_week(items, sessions, five, {}):
        assert week.ratio is not None
        assert 0 <= week.ratio <= 1
        assert 0 <= week.done <= week.expected
    streak = rules.streak(items)
    assert 0 <= streak.current <= streak.best
