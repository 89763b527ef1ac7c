"""A user's treatment plan as Home Assistant sensors, end to end: a real hub (uvicorn, simulated
devices, SQLite) and the machine's Mosquitto. A plan made over REST appears as a retained
``user/<id>/plan`` state and two components on the hub's discovery config; a changed plan and a
completed session update the state; deleting the plan clears the state and the components.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.mqtt.plans import component_ids
from gateway.mqtt.topics import Topics
from tests.api.hub import serve
from tests.conftest import MQTT_HOST, MQTT_PORT, require_service
from tests.e2e.mqtt_broker import Message, unique_prefixes, watch
from tests.e2e.test_mqtt import HUB_ID, mqtt_settings

pytestmark = pytest.mark.mqtt

QUICK = {
    "slug": "plan-quick",
    "name": "Five seconds of forehead",
    "steps": [{"zone": "forehead", "amplitude_ua": 200, "duration_s": 5, "move_cue_s": 5}],
}


@pytest.fixture(autouse=True)
def _broker() -> None:
    require_service("mosquitto", MQTT_HOST, MQTT_PORT)


def _phases(per_week: int) -> list[dict[str, Any]]:
    return [{"name": "routine", "repeat": {"per_week": per_week}}]


async def test_a_plan_shows_as_sensors_on_the_hub_is_updated_and_cleared_when_deleted(
    tmp_path: Path,
) -> None:
    prefix, ha = unique_prefixes()
    topics = Topics(prefix, HUB_ID, ha)
    hub_config = topics.discovery(topics.hub_node)
    async with (
        watch(MQTT_PORT, f"{prefix}/#", f"{ha}/#") as w,
        serve(mqtt_settings(tmp_path, prefix, ha)) as hub,
    ):
        ana_id, token = await hub.user("ana")
        phone = hub.client(token)
        state_topic = f"{prefix}/{HUB_ID}/user/{ana_id}/plan"
        due_id, adherence_id = component_ids(topics, ana_id)
        await w.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"online")

        def state(accept: Any = lambda _s: True) -> Any:
            return lambda m: m.topic == state_topic and bool(m.payload) and accept(m.json())

        def config_with(present: bool) -> Any:
            def accept(m: Message) -> bool:
                return m.topic == hub_config and (due_id in m.json()["cmps"]) is present

            return accept

        monday = datetime.now(UTC).date() - timedelta(days=datetime.now(UTC).weekday())
        made = await phone.post(
            "/api/v1/plans",
            json={"phases": _phases(3), "time_zone": "UTC", "starts_on": str(monday)},
        )
        assert made.status_code == 201, made.text
        plan_id = made.json()["id"]
        published = (await w.wait_for(state())).json()
        rest = (await phone.get("/api/v1/me/adherence")).json()
        assert published == {
            "plan_id": plan_id,
            "due": rest["due"],
            "week_done": 0,
            "week_expected": 3,
            "week_credit": 0.0,
            "week_ratio": 0.0,
        }
        config = (await w.wait_for(config_with(True))).json()
        due, adherence = config["cmps"][due_id], config["cmps"][adherence_id]
        assert (due["p"], due["name"], due["state_topic"]) == (
            "binary_sensor",
            "Session due (ana)",
            state_topic,
        )
        assert (adherence["p"], adherence["name"], adherence["state_topic"]) == (
            "sensor",
            "Adherence this week (ana)",
            state_topic,
        )
        assert adherence["unit_of_measurement"] == "%"
        assert f"{topics.hub_node}_devices" in config["cmps"]  # the hub's own sensors stay

        # A subscriber arriving now gets the state retained.
        async with watch(MQTT_PORT, state_topic) as late:
            retained = await late.wait_for(state())
            assert retained.retain
            assert retained.json() == published

        # The plan changed: two a week now.
        mark = w.mark()
        patched = await phone.patch(f"/api/v1/plans/{plan_id}", json={"phases": _phases(2)})
        assert patched.status_code == 200, patched.text
        changed = await w.wait_for(state(lambda s: s["week_expected"] == 2), after=mark)
        assert changed.json()["week_done"] == 0

        # A completed session counts: one of two done this week.
        address = await hub.claimed_device(token)
        assert (await phone.post("/api/v1/programs", json=QUICK)).status_code == 201
        started = await phone.post(
            "/api/v1/sessions", json={"device": address, "program": "plan-quick", "level": 1}
        )
        assert started.status_code == 201, started.text
        done = await w.wait_for(state(lambda s: s["week_done"] == 1), after=mark)
        body = done.json()
        assert (body["plan_id"], body["week_expected"], body["week_ratio"]) == (plan_id, 2, 0.5)
        report = (await phone.get("/api/v1/me/adherence")).json()
        week = report["weeks"][0]
        assert (week["credit"], week["ratio"]) == (body["week_credit"], body["week_ratio"])

        # The last plan deleted: the state is cleared and the components leave the hub.
        mark = w.mark()
        assert (await phone.delete(f"/api/v1/plans/{plan_id}")).status_code == 204
        await w.wait_for(lambda m: m.topic == state_topic and not m.payload, after=mark)
        gone = (await w.wait_for(config_with(False), after=mark)).json()
        assert adherence_id not in gone["cmps"]
        assert f"{topics.hub_node}_devices" in gone["cmps"]
        # Nothing is left retained: a new subscriber gets only the marker published after.
        async with watch(MQTT_PORT, state_topic, f"{prefix}/marker") as late:
            await late.publish(f"{prefix}/marker", b"m")
            await late.wait_for(lambda m: m.topic == f"{prefix}/marker")
            assert [m for m in late.messages if m.topic == state_topic] == []
        assert hub.runtime.plan_sensors is not None
        assert hub.runtime.plan_sensors.users == set()
