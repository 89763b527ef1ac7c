"""Plans on MQTT: the pure payload and component builders, and ``PlanSensors`` on real storage
(SQLite through the storage writer, the real planner's ``summary``) with storage down at start.

The bridge is stood in for by a recorder of its three extension calls (``publish_retained``,
``add_hub_components``, ``remove_hub_components``); tests/e2e/test_mqtt_plans.py runs the same
through the real bridge and broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from gateway.access import Principal
from gateway.config import DatabaseSettings
from gateway.events import AdherenceChanged, EventBus
from gateway.mqtt.plans import PlanSensors, component_ids, plan_components, plan_payload
from gateway.mqtt.topics import Topics
from gateway.plans.planner import Planner
from gateway.plans.service import Summary
from gateway.storage import plans as store
from gateway.storage import repo
from gateway.storage.engine import create_engine_from_settings, upgrade
from gateway.storage.writer import StorageWriter
from gateway.tasks import TaskOwner

HANG_S = 10.0
TOPICS = Topics("mcgw", "room-1", "homeassistant")


def test_the_payload_carries_the_summary_and_its_ratio() -> None:
    # One session done and a stopped one that delivered half: the ratio counts shares, as
    # the week's ``ratio`` in GET /me/adherence does.
    summary = Summary(user_id=3, plan_id=7, due=True, week_done=1, week_expected=3, week_credit=1.5)
    assert plan_payload(summary) == {
        "plan_id": 7,
        "due": True,
        "week_done": 1,
        "week_expected": 3,
        "week_credit": 1.5,
        "week_ratio": 0.5,
    }
    nothing = Summary(
        user_id=3, plan_id=7, due=False, week_done=0, week_expected=0, week_credit=0.0
    )
    assert plan_payload(nothing)["week_ratio"] is None  # the sensor is then unknown


def test_the_components_read_the_users_state_topic_and_follow_the_discovery_ids() -> None:
    components = plan_components(TOPICS, user_id=3, user_name="ana")
    due_id, adherence_id = component_ids(TOPICS, 3)
    assert (due_id, adherence_id) == (
        "mcgw_hub_room1_user_3_plan_due",
        "mcgw_hub_room1_user_3_plan_adherence",
    )
    assert list(components) == [due_id, adherence_id]
    for unique_id, component in components.items():
        assert component["unique_id"] == unique_id
        assert component["default_entity_id"] == f"{component['p']}.{unique_id}"
        assert component["state_topic"] == "mcgw/room-1/user/3/plan"
        assert "object_id" not in component
    due, adherence = components[due_id], components[adherence_id]
    assert (due["p"], due["name"]) == ("binary_sensor", "Session due (ana)")
    assert (adherence["p"], adherence["name"]) == ("sensor", "Adherence this week (ana)")
    assert adherence["unit_of_measurement"] == "%"
    assert adherence["json_attributes_topic"] == "mcgw/room-1/user/3/plan"
    assert "week_done" in adherence["json_attributes_template"]
    assert "week_expected" in adherence["json_attributes_template"]
    assert plan_components(TOPICS, user_id=4, user_name="ben").keys().isdisjoint(components)


class Recorder:
    """The bridge's extension calls, as the outbox would hold them."""

    def __init__(self) -> None:
        self.topics = TOPICS
        self.retained: dict[str, dict[str, Any] | None] = {}
        self.components: dict[str, dict[str, Any]] = {}
        self.config_changes = 0

    def publish_retained(self, suffix: str, payload: dict[str, Any] | None) -> None:
        self.retained[suffix] = payload

    def add_hub_components(self, components: dict[str, dict[str, Any]]) -> None:
        self.components.update(components)
        self.config_changes += 1

    def remove_hub_components(self, unique_ids: Iterable[str]) -> None:
        for unique_id in unique_ids:
            self.components.pop(unique_id, None)
        self.config_changes += 1


def _two_plans(*, session: Session) -> tuple[int, int, int]:
    """Ana with a plan, Ben with a plan, Cleo without: (ana, ben, ana's plan)."""
    ids = []
    for name in ("ana", "ben", "cleo"):
        user = repo.create_user(session=session, name=name)
        assert user.id is not None
        ids.append(user.id)
    plan_ids = [
        store.create_plan(
            session=session,
            owner_id=owner,
            name="p",
            starts_on=date(2026, 6, 1),
            time_zone="UTC",
            zone_history=[{"since": None, "name": "UTC"}],
            phases=[{"name": "p", "repeat": {"per_week": 3}}],
        ).id
        for owner in ids[:2]
    ]
    assert plan_ids[0] is not None
    return ids[0], ids[1], plan_ids[0]


async def _until(condition: Any) -> None:
    async with asyncio.timeout(HANG_S):
        while not condition():
            await asyncio.sleep(0.01)


async def test_storage_down_at_start_is_retried_and_an_event_meanwhile_wins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine_from_settings(DatabaseSettings(url=f"sqlite:///{tmp_path / 'p.db'}"))
    upgrade(engine)
    with Session(engine) as session:
        ana, ben, ana_plan = _two_plans(session=session)
        session.commit()
    assert (ana, ben) == (1, 2)
    writer = StorageWriter(engine, flush_s=0.05)  # not started yet: storage is "down"

    async def db(fn: Any, /, **kwargs: Any) -> Any:
        return await writer.run(lambda s: fn(session=s, **kwargs))

    bus, tasks, bridge = EventBus(), TaskOwner("test"), Recorder()
    now = datetime(2026, 6, 3, 12, tzinfo=UTC)  # a Wednesday
    planner = Planner(db=db, bus=bus, tasks=tasks, program_seconds={}, now=lambda: now)
    names = {
        1: Principal(1, "ana", False, None, None, None),
        2: Principal(2, "ben", False, None, None, None),
    }
    sensors = PlanSensors(
        bridge, bus=bus, planner=planner, db=db, user=names.get, retry_start_s=0.05
    )
    caplog.set_level(logging.WARNING, logger="gateway.mqtt.plans")
    runner = tasks.spawn(sensors.run(), name="plan-sensors")
    try:
        await _until(lambda: "could not read plans" in caplog.text)
        assert bridge.retained == {}
        # The planner read storage and published Ben's summary: it is shown at once, and the
        # start read, once storage is back, does not replace it with what it reads for him.
        bus.publish(
            AdherenceChanged(
                user_id=2, plan_id=9, due=True, week_done=2, week_expected=5, week_credit=2.0
            )
        )
        assert bridge.retained["user/2/plan"] == {
            "plan_id": 9,
            "due": True,
            "week_done": 2,
            "week_expected": 5,
            "week_credit": 2.0,
            "week_ratio": 0.4,
        }
        await writer.start()
        async with asyncio.timeout(HANG_S):
            await sensors.started.wait()
        assert runner.done() is False  # it keeps listening
        assert bridge.retained["user/1/plan"] == plan_payload(await planner.summary(ana))
        assert bridge.retained["user/1/plan"]["plan_id"] == ana_plan  # type: ignore[index]
        assert bridge.retained["user/2/plan"]["week_expected"] == 5  # type: ignore[index]
        assert "user/3/plan" not in bridge.retained  # Cleo has no plan
        assert sensors.users == {1, 2}
        ana_ids = component_ids(TOPICS, 1)
        assert set(bridge.components) == {*ana_ids, *component_ids(TOPICS, 2)}
        assert bridge.components[ana_ids[0]]["name"] == "Session due (ana)"

        # A change re-publishes the state; the components stay as they were.
        changes = bridge.config_changes
        bus.publish(
            AdherenceChanged(
                user_id=1,
                plan_id=ana_plan,
                due=False,
                week_done=3,
                week_expected=3,
                week_credit=3.0,
            )
        )
        assert bridge.retained["user/1/plan"]["week_ratio"] == 1.0  # type: ignore[index]
        assert bridge.config_changes == changes
        # Ana's last plan deleted: her state is cleared and her components removed.
        bus.publish(
            AdherenceChanged(
                user_id=1, plan_id=None, due=False, week_done=0, week_expected=0, week_credit=0.0
            )
        )
        assert bridge.retained["user/1/plan"] is None
        assert set(bridge.components) == set(component_ids(TOPICS, 2))
        assert sensors.users == {2}
    finally:
        runner.cancel()
        await tasks.close()
        await writer.close()
        engine.dispose()
    assert "could not read plans" in caplog.text
    assert caplog.text.count("could not read plans") == 1  # logged once, not per retry
