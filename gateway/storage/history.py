"""History reads: paged session lists, one session in full, its telemetry, streaks, weekly use.

* ``list_sessions``: filter by owner, device, hub, state and a ``created_at`` range; newest
  first; limit/offset paging with the total count.
* ``get_session_detail``: the session row with its events in time order (dose included).
* ``read_telemetry`` / ``telemetry_rows`` / ``telemetry_csv``: a session's stored samples,
  whole or downsampled to one averaged row per ``every_ms`` (see ``gateway.storage.samples``
  for the row fields and the CSV header).
* ``streaks``: consecutive days with at least one completed session, current and best.
* ``weekly_minutes``: minutes of output per zone per ISO week (every ended session counts).

Days and weeks are calendar days in ``tz`` (UTC unless the caller passes the user's zone). A
current streak is still alive on a day with no session yet, as long as yesterday had one.

Reads only; nothing here writes, and reads are not scoped to a hub (an admin on a shared
database sees every hub); who may read what is the API's decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from gateway.errors import NotFound
from gateway.states import TERMINAL_STATES, SessionState
from gateway.storage.models import TELEMETRY_TABLE, SessionEventRecord, SessionRecord
from gateway.storage.samples import (
    LAYOUT_RAW,
    TelemetryRow,
    TimedSample,
    timed_samples,
    to_csv,
    to_rows,
)

T = TypeVar("T")
MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of results and how many there are in all."""

    items: list[T]
    total: int
    limit: int
    offset: int

    @property
    def next_offset(self) -> int | None:
        """Offset of the next page, or None on the last one."""
        following = self.offset + len(self.items)
        return following if following < self.total else None


@dataclass(frozen=True, slots=True)
class SessionDetail:
    """A session and its events, oldest first."""

    session: SessionRecord
    events: list[SessionEventRecord]


@dataclass(frozen=True, slots=True)
class Streaks:
    """Consecutive days with a completed session."""

    current: int
    best: int
    last_day: date | None


@dataclass(frozen=True, slots=True)
class WeekMinutes:
    """Minutes of output and delivered dose (µA·s) per zone in one ISO week."""

    iso_year: int
    iso_week: int
    week_start: date
    minutes_by_zone: dict[str, float] = field(default_factory=dict)
    dose_uas_by_zone: dict[str, float] = field(default_factory=dict)

    @property
    def total_minutes(self) -> float:
        return round(sum(self.minutes_by_zone.values()), 2)


def list_sessions(
    *,
    session: Session,
    owner_id: int | None = None,
    device_address: str | None = None,
    hub_id: str | None = None,
    states: Iterable[SessionState | str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[SessionRecord]:
    """Sessions matching every filter given, newest first; ``since`` <= created_at < ``until``."""
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise ValueError(f"limit must be 1-{MAX_PAGE} and offset >= 0 (got {limit}, {offset})")
    conditions: list[Any] = []
    if owner_id is not None:
        conditions.append(col(SessionRecord.owner_id) == owner_id)
    if device_address is not None:
        conditions.append(col(SessionRecord.device_address) == device_address)
    if hub_id is not None:
        conditions.append(col(SessionRecord.hub_id) == hub_id)
    if states is not None:
        conditions.append(col(SessionRecord.state).in_([SessionState(s).value for s in states]))
    if since is not None:
        conditions.append(col(SessionRecord.created_at) >= since)
    if until is not None:
        conditions.append(col(SessionRecord.created_at) < until)
    total = session.exec(select(func.count()).select_from(SessionRecord).where(*conditions)).one()
    items = session.exec(
        select(SessionRecord)
        .where(*conditions)
        .order_by(col(SessionRecord.created_at).desc(), col(SessionRecord.id).desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return Page(items=list(items), total=total, limit=limit, offset=offset)


def get_session_detail(*, session: Session, session_id: str) -> SessionDetail:
    record = session.get(SessionRecord, session_id)
    if record is None:
        raise NotFound(f"session {session_id} does not exist")
    events = session.exec(
        select(SessionEventRecord)
        .where(SessionEventRecord.session_id == session_id)
        .order_by(col(SessionEventRecord.ts), col(SessionEventRecord.id))
    ).all()
    return SessionDetail(session=record, events=list(events))


def read_telemetry(*, session: Session, session_id: str) -> list[TimedSample]:
    """Every stored sample of a session, in order, with its wall-clock time (Unix ms)."""
    table = TELEMETRY_TABLE
    result = session.connection().execute(
        sa.select(table.c.t0_ms, table.c.layout, table.c.data)
        .where(table.c.session_id == session_id)
        .order_by(table.c.seq)
    )
    samples: list[TimedSample] = []
    for t0_ms, layout, data in result:
        if layout != LAYOUT_RAW:
            raise ValueError(f"telemetry layout {layout} is unknown to this version of mcgw")
        samples.extend(timed_samples(t0_ms, data))
    return samples


def telemetry_rows(
    *, session: Session, session_id: str, every_ms: int | None = None
) -> list[TelemetryRow]:
    """A session's telemetry as rows: every sample, or one averaged row per ``every_ms``."""
    return to_rows(read_telemetry(session=session, session_id=session_id), every_ms=every_ms)


def telemetry_csv(*, session: Session, session_id: str, every_ms: int | None = None) -> str:
    """``telemetry_rows`` as CSV text (header in ``gateway.storage.samples``)."""
    return to_csv(telemetry_rows(session=session, session_id=session_id, every_ms=every_ms))


def _day(started_at: datetime | None, created_at: datetime, tz: tzinfo) -> date:
    return (started_at or created_at).astimezone(tz).date()


def _runs(days: Sequence[date]) -> list[tuple[date, int]]:
    """(last day, length) of each run of consecutive days in sorted, distinct ``days``."""
    runs: list[tuple[date, int]] = []
    for day in days:
        if runs and runs[-1][0] + timedelta(days=1) == day:
            runs[-1] = (day, runs[-1][1] + 1)
        else:
            runs.append((day, 1))
    return runs


def streaks(
    *, session: Session, user_id: int, today: date | None = None, tz: tzinfo = UTC
) -> Streaks:
    """The user's current and best streaks of days with a completed session."""
    rows = session.exec(
        select(SessionRecord.started_at, SessionRecord.created_at).where(
            SessionRecord.owner_id == user_id,
            SessionRecord.state == SessionState.COMPLETED.value,
        )
    ).all()
    days = sorted({_day(started, created, tz) for started, created in rows})
    if not days:
        return Streaks(current=0, best=0, last_day=None)
    runs = _runs(days)
    today = today or datetime.now(tz).date()
    last_day, last_run = runs[-1]
    current = last_run if last_day >= today - timedelta(days=1) else 0
    return Streaks(current=current, best=max(n for _, n in runs), last_day=last_day)


def weekly_minutes(
    *,
    session: Session,
    user_id: int,
    since: datetime | None = None,
    until: datetime | None = None,
    tz: tzinfo = UTC,
) -> list[WeekMinutes]:
    """Minutes of output and delivered dose per zone for each ISO week with a session, oldest
    week first."""
    query = select(
        SessionRecord.started_at,
        SessionRecord.created_at,
        SessionRecord.seconds_by_zone,
        SessionRecord.dose_uas_by_zone,
    ).where(
        SessionRecord.owner_id == user_id,
        col(SessionRecord.state).in_([state.value for state in TERMINAL_STATES]),
    )
    if since is not None:
        query = query.where(col(SessionRecord.created_at) >= since)
    if until is not None:
        query = query.where(col(SessionRecord.created_at) < until)
    seconds: dict[tuple[int, int], dict[str, float]] = {}
    doses: dict[tuple[int, int], dict[str, float]] = {}
    for started, created, by_zone, dose_by_zone in session.exec(query).all():
        year, week, _ = _day(started, created, tz).isocalendar()
        zones = seconds.setdefault((year, week), {})
        for zone, value in (by_zone or {}).items():
            zones[zone] = zones.get(zone, 0.0) + float(value)
        dose = doses.setdefault((year, week), {})
        for zone, value in (dose_by_zone or {}).items():
            dose[zone] = dose.get(zone, 0.0) + float(value)
    return [
        WeekMinutes(
            iso_year=year,
            iso_week=week,
            week_start=date.fromisocalendar(year, week, 1),
            minutes_by_zone={zone: round(s / 60, 2) for zone, s in sorted(zones.items())},
            dose_uas_by_zone={zone: round(d, 1) for zone, d in sorted(doses[(year, week)].items())},
        )
        for (year, week), zones in sorted(seconds.items())
    ]
