"""The planner on real storage (SQLite) with an injected clock: "due" and "missed" events,
the adherence summary, and reminders through apprise to a real local HTTP server, held back
during quiet hours."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session

from gateway.config import DatabaseSettings
from gateway.events import AdherenceChanged, Event, EventBus, PlanDue, PlanMissed
from gateway.plans.planner import Planner, look
from gateway.plans.reminders import AppriseReminders
from gateway.storage import plans as store
from gateway.storage import repo
from gateway.storage.engine import create_engine_from_settings, upgrade
from gateway.storage.writer import StorageWriter
from gateway.tasks import TaskOwner

PARIS = ZoneInfo("Europe/Paris")
TUESDAY_20H = {
    "name": "routine",
    "repeat": {"days_of_week": ["tue"], "times_of_day": ["20:00"]},
    "zones": ["neck"],
}


def paris(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 6, day, hour, minute, tzinfo=PARIS).astimezone(UTC)


class Inbox(BaseHTTPRequestHandler):
    """Records every POST (what apprise's json:// sends)."""

    received: list[dict[str, Any]]
    arrived: threading.Event

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).received.append(json.loads(self.rfile.read(length)))
        type(self).arrived.set()
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def inbox() -> Iterator[tuple[str, type[Inbox]]]:
    handler = type("TestInbox", (Inbox,), {"received": [], "arrived": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_address[1]}/reminders", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[StorageWriter]:
    engine = create_engine_from_settings(DatabaseSettings(url=f"sqlite:///{tmp_path / 'p.db'}"))
    upgrade(engine)
    started = StorageWriter(engine, flush_s=0.05)
    await started.start()
    try:
        yield started
    finally:
        await started.close()
        engine.dispose()


def _plan(*, session: Session) -> tuple[int, int]:
    user = repo.create_user(session=session, name="ana")
    assert user.id is not None
    plan = store.create_plan(
        session=session,
        owner_id=user.id,
        name="Neck evenings",
        starts_on=date(2026, 6, 1),
        time_zone="Europe/Paris",
        zone_history=[{"since": None, "name": "Europe/Paris"}],
        phases=[TUESDAY_20H],
        quiet_hours={"start": "19:30", "end": "20:30"},
    )
    assert plan.id is not None
    return user.id, plan.id


async def test_due_missed_summary_and_a_reminder_after_quiet_hours(
    writer: StorageWriter, inbox: tuple[str, type[Inbox]]
) -> None:
    url, handler = inbox
    user_id, plan_id = await writer.run(lambda s: _plan(session=s))
    clock = {"now": paris(2, 19)}
    bus, tasks, seen = EventBus(), TaskOwner("test"), list[Event]()
    bus.add_listener(seen.append)

    async def db(fn: Any, /, **kwargs: Any) -> Any:
        return await writer.run(lambda s: fn(session=s, **kwargs))

    found = await db(look, last=paris(2, 18), now=clock["now"], program_seconds={})
    assert found.deadline == paris(2, 20)  # it sleeps until the slot is due
    reminders = AppriseReminders([url], timeout_s=10.0)
    planner = Planner(
        db=db,
        bus=bus,
        tasks=tasks,
        program_seconds={},
        send=reminders.send,
        now=lambda: clock["now"],
    )

    async def look_at(instant: datetime) -> None:
        looks = planner.looks
        clock["now"] = instant
        planner.changed()
        async with asyncio.timeout(10):
            while planner.looks == looks:
                await asyncio.sleep(0.01)

    runner = tasks.spawn(planner.run(), name="planner")
    try:
        async with asyncio.timeout(10):
            while planner.looks == 0:
                await asyncio.sleep(0.01)
        assert [e for e in seen if isinstance(e, AdherenceChanged)] == [
            AdherenceChanged(
                user_id=user_id,
                plan_id=plan_id,
                due=False,
                week_done=0,
                week_expected=1,
                week_credit=0.0,
                ts=seen[0].ts,
            )
        ]
        await look_at(paris(2, 20, 1))
        [due] = [e for e in seen if isinstance(e, PlanDue)]
        assert (due.user_id, due.plan_id, due.local_day) == (user_id, plan_id, "2026-06-02")
        assert datetime.fromisoformat(due.due_at) == paris(2, 20)
        assert seen[-1] == AdherenceChanged(
            user_id=user_id,
            plan_id=plan_id,
            due=True,
            week_done=0,
            week_expected=1,
            week_credit=0.0,
            ts=seen[-1].ts,
        )
        await asyncio.sleep(0.2)  # a reminder sent now would be inside the quiet hours
        assert handler.received == []
        await look_at(paris(2, 20, 31))
        assert await asyncio.to_thread(handler.arrived.wait, 10)
        [message] = handler.received
        assert "Neck evenings" in message["message"]
        assert "Tue 20:00" in message["message"]
        async with asyncio.timeout(10):  # the POST is answered, then the send is counted
            while reminders.sent + reminders.failed == 0:
                await asyncio.sleep(0.01)
        assert (reminders.sent, reminders.failed) == (1, 0)
        await look_at(paris(3, 0, 1))
        [missed] = [e for e in seen if isinstance(e, PlanMissed)]
        assert missed.local_day == "2026-06-02"
        assert missed.credit == 0
        assert len([e for e in seen if isinstance(e, PlanDue)]) == 1  # announced once
        summary = await planner.summary(user_id)
        assert (summary.due, summary.week_done, summary.week_expected) == (False, 0, 1)
        # The user's last plan deleted: one event without a plan (bridges clear what they show).
        await writer.run(lambda s: store.delete_plan(session=s, plan_id=plan_id))
        await look_at(paris(3, 0, 2))
        assert seen[-1] == AdherenceChanged(
            user_id=user_id,
            plan_id=None,
            due=False,
            week_done=0,
            week_expected=0,
            week_credit=0.0,
            ts=seen[-1].ts,
        )
        await look_at(paris(3, 0, 3))
        assert len([e for e in seen if isinstance(e, AdherenceChanged) and not e.plan_id]) == 1
    finally:
        runner.cancel()
        await tasks.close()
    assert handler.received == [message]  # one reminder, after the quiet hours


async def test_a_failing_target_is_counted_not_raised() -> None:
    reminders = AppriseReminders(["json://127.0.0.1:9/nowhere"], timeout_s=10.0)
    from gateway.plans.planner import Reminder

    await reminders.send(Reminder(1, 1, "plan", paris(2, 20), "Tue 20:00"))
    assert (reminders.sent, reminders.failed) == (0, 1)
