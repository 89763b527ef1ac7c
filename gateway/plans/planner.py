"""The planner: one owned task that publishes plan events and sends reminders on time.

It sleeps until the next deadline the pure rules give (a slot becoming due, a slot's window
ending, a reminder released from quiet hours), or until woken: by a plan change
(``changed()``, called by the API) or by a session ending (it listens on the event bus, and
lets storage settle before it reads). Then it reads every plan once (one storage call) and
publishes on the ``EventBus``, for the plan's owner (and admins; ``AccessPolicy.may_see_event``):

* ``PlanDue`` when a slot's due time passed since the last look and the slot is open;
* ``PlanMissed`` when a slot's window ended since the last look without it being done;
* ``AdherenceChanged`` when a user's summary (due now, this week done/expected) changed, and
  with ``plan_id`` None when their last plan was deleted.

Reminders go through ``gateway.plans.reminders`` when configured: at the due time, or at the
end of the plan's quiet hours when it falls in them (skipped if the slot is done or over by
then). A reminder is sent from an owned task; sending never blocks this loop.

Deadlines are wall-clock instants (plans are in people's time); the sleep is capped at
``MAX_SLEEP_S`` so a clock change is noticed. The clock is injected (tests move it).

``summary(user_id)`` is the hook for bridges (MQTT / Home Assistant sensors "session due" and
"adherence this week", the web page): it reads the user's newest plan now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session

from gateway.errors import GatewayError
from gateway.events import (
    AdherenceChanged,
    Event,
    EventBus,
    PlanDue,
    PlanMissed,
    SessionStateChanged,
)
from gateway.plans import service
from gateway.plans.codec import clock
from gateway.plans.quiet import QuietHours
from gateway.states import TERMINAL_STATES
from gateway.storage import plans as store
from gateway.tasks import TaskOwner

log = logging.getLogger(__name__)

MAX_SLEEP_S = 300.0
RETRY_S = 60.0
"""After a failed look (storage down), look again this much later."""

Db = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Reminder:
    user_id: int
    plan_id: int
    plan_name: str
    due_at: datetime
    local: str
    """The due time as the person reads it, e.g. ``Tue 20:00``."""


@dataclass(slots=True)
class Look:
    """What one look at every plan found."""

    events: list[Event] = field(default_factory=list)
    reminders: list[Reminder] = field(default_factory=list)
    summaries: dict[int, service.Summary] = field(default_factory=dict)
    deadline: datetime | None = None

    def due_by(self, instant: datetime) -> None:
        if self.deadline is None or instant < self.deadline:
            self.deadline = instant


def look(
    *,
    session: Session,
    last: datetime,
    now: datetime,
    program_seconds: Mapping[str, Mapping[str, float]],
) -> Look:
    """Events, reminders and summaries for (last, now], and the next deadline after ``now``."""
    found = Look()
    newest: dict[int, store.PlanRecord] = {}
    for plan in store.list_plans(session=session):
        newest[plan.owner_id] = plan
    for plan in newest.values():  # the newest plan of each user drives events and summaries
        assert plan.id is not None
        since, until = service.this_week(plan, now)
        report = service.report(
            session=session,
            plan_id=plan.id,
            since=since,
            until=until,
            now=now,
            program_seconds=program_seconds,
        )
        hours = plan.quiet_hours
        quiet = QuietHours(clock(hours["start"]), clock(hours["end"])) if hours else None
        for item in report.timeline:
            slot = item.slot
            ids = {"user_id": plan.owner_id, "plan_id": plan.id}
            if item.status == "open" and last < slot.due_at <= now:
                found.events.append(
                    PlanDue(
                        **ids,
                        due_at=slot.due_at.isoformat(),
                        window_end=slot.window_end.isoformat(),
                        local_day=slot.local_day.isoformat(),
                    )
                )
            if item.status == "missed" and last < slot.window_end <= now:
                found.events.append(
                    PlanMissed(
                        **ids,
                        due_at=slot.due_at.isoformat(),
                        local_day=slot.local_day.isoformat(),
                        credit=item.credit,
                    )
                )
            if item.status == "done":
                continue
            tz = ZoneInfo(slot.tz)
            remind = quiet.release(slot.due_at, tz) if quiet else slot.due_at
            if item.status == "open" and last < remind <= now and remind < slot.window_end:
                local = slot.due_at.astimezone(tz).strftime("%a %H:%M")
                found.reminders.append(Reminder(plan.owner_id, plan.id, plan.name, remind, local))
            for instant in (slot.due_at, slot.window_end, remind):
                if instant > now:
                    found.due_by(instant)
        found.summaries[plan.owner_id] = service.Summary(
            user_id=plan.owner_id,
            plan_id=plan.id,
            due=bool(report.due_now),
            week_done=sum(s.status == "done" for s in report.slots),
            week_expected=len(report.slots),
            week_credit=round(sum(s.credit for s in report.slots), 4),
        )
    return found


Send = Callable[[Reminder], Coroutine[Any, Any, None]]


class Planner:
    """See the module docstring. ``run()`` is the task; ``changed()`` wakes it."""

    def __init__(
        self,
        *,
        db: Db,
        bus: EventBus,
        tasks: TaskOwner,
        program_seconds: Mapping[str, Mapping[str, float]],
        settle: Callable[[], Awaitable[None]] | None = None,
        send: Send | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._bus = bus
        self._tasks = tasks
        self._program_seconds = program_seconds
        self._settle = settle
        self._send = send
        self._now = now
        self._wake = asyncio.Event()
        self._session_ended = False
        self._summaries: dict[int, service.Summary] = {}
        self.looks = 0
        """How many times it looked (for tests and metrics)."""

    def changed(self) -> None:
        """A plan was created, changed or deleted: look again now."""
        self._wake.set()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, SessionStateChanged) and event.state in TERMINAL_STATES:
            self._session_ended = True
            self._wake.set()

    async def summary(self, user_id: int) -> service.Summary:
        """The hook for bridges: is a session due for this user now, and this week's done
        versus expected on their newest plan (``Summary.week_ratio``)."""
        result: service.Summary = await self._db(
            service.summary,
            user_id=user_id,
            now=self._now(),
            program_seconds=self._program_seconds,
        )
        return result

    async def run(self) -> None:
        unlisten = self._bus.add_listener(self._on_event)
        last = self._now()
        try:
            while True:
                self._wake.clear()
                if self._session_ended and self._settle is not None:
                    self._session_ended = False
                    with contextlib.suppress(GatewayError):  # read what is there
                        await self._settle()
                now = self._now()
                deadline = now + timedelta(seconds=RETRY_S)
                try:
                    found: Look = await self._db(
                        look, last=last, now=now, program_seconds=self._program_seconds
                    )
                except GatewayError as exc:
                    log.warning("planner: could not read plans (retrying): %s", exc)
                else:
                    last = now
                    self.looks += 1
                    self._publish(found)
                    deadline = found.deadline or now + timedelta(seconds=MAX_SLEEP_S)
                delay = min(MAX_SLEEP_S, max(0.0, (deadline - self._now()).total_seconds()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            unlisten()

    def _publish(self, found: Look) -> None:
        for event in found.events:
            self._bus.publish(event)
        for user_id, summary in found.summaries.items():
            if self._summaries.get(user_id) != summary:
                assert summary.plan_id is not None
                self._bus.publish(
                    AdherenceChanged(
                        user_id=user_id,
                        plan_id=summary.plan_id,
                        due=summary.due,
                        week_done=summary.week_done,
                        week_expected=summary.week_expected,
                        week_credit=summary.week_credit,
                    )
                )
        for user_id in self._summaries.keys() - found.summaries.keys():
            self._bus.publish(  # their last plan was deleted
                AdherenceChanged(
                    user_id=user_id,
                    plan_id=None,
                    due=False,
                    week_done=0,
                    week_expected=0,
                    week_credit=0.0,
                )
            )
        self._summaries = found.summaries
        if self._send is not None:
            for reminder in found.reminders:
                self._tasks.spawn(self._send(reminder), name=f"reminder:{reminder.user_id}")
