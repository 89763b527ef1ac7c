"""The MQTT bridge end to end: a real hub (uvicorn, simulated devices, SQLite) and a real broker.

The plain path runs against the machine's Mosquitto on 127.0.0.1:1883; each test uses topic
prefixes of its own and clears what it published. Commands are checked for what they change
(the session's state through REST) and for the ack the broker carries back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.mqtt.topics import node_id
from tests.api.hub import Hub, make_settings, serve
from tests.conftest import MQTT_HOST, MQTT_PORT, require_service
from tests.e2e.mqtt_broker import Message, Watcher, unique_prefixes, watch

pytestmark = pytest.mark.mqtt

HUB_ID = "hub-test"


@pytest.fixture(autouse=True)
def _broker() -> None:
    require_service("mosquitto", MQTT_HOST, MQTT_PORT)


def mqtt_settings(tmp_path: Path, prefix: str, ha: str, **mqtt: Any) -> Any:
    url = mqtt.pop("url", f"mqtt://{MQTT_HOST}:{MQTT_PORT}")
    values = {"url": url, "topic_prefix": prefix, "discovery_prefix": ha, **mqtt}
    return make_settings(tmp_path, mqtt={"reconnect_max_backoff_s": 1.0, **values})


async def start_session(hub: Hub, token: str, address: str) -> dict[str, Any]:
    response = await hub.client(token).post(
        "/api/v1/sessions", json={"device": address, "program": "quick-lift", "level": 1}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def session_state(hub: Hub, token: str, session_id: str) -> dict[str, Any]:
    response = await hub.client(token).get(f"/api/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def command(w: Watcher, prefix: str, body: dict[str, Any] | bytes) -> dict[str, Any]:
    """Publish a command and return the ack that answers it (by id)."""
    mark = w.mark()
    wanted = body.get("id") if isinstance(body, dict) else None
    await w.publish(f"{prefix}/{HUB_ID}/command", body)
    ack = await w.wait_for(
        lambda m: m.topic == f"{prefix}/{HUB_ID}/ack" and m.json()["id"] == wanted, after=mark
    )
    answer: dict[str, Any] = ack.json()
    return answer


def is_state(prefix: str, address: str, accept: Any = lambda _s: True) -> Any:
    topic = f"{prefix}/{HUB_ID}/device/{node_id(address)}/state"
    return lambda m: m.topic == topic and bool(m.payload) and accept(m.json())


async def test_subscribers_see_retained_discovery_state_and_availability_and_a_stop_command_stops(
    tmp_path: Path,
) -> None:
    prefix, ha = unique_prefixes()
    async with watch(MQTT_PORT, f"{prefix}/#", f"{ha}/#") as w:
        async with serve(mqtt_settings(tmp_path, prefix, ha)) as hub:
            _, token = await hub.user("ann")
            await hub.runtime.wait_connected()
            addresses = hub.runtime.devices.addresses()
            assert len(addresses) == 2
            await w.wait_for(lambda m: m.topic == f"{prefix}/{HUB_ID}/availability")
            for address in addresses:
                await w.wait_for(is_state(prefix, address, lambda s: s["connected"]))
                await w.wait_for(lambda m, a=address: m.topic.endswith(f"mcgw_{node_id(a)}/config"))

            # A subscriber arriving now gets all of it retained.
            async with watch(MQTT_PORT, f"{prefix}/#", f"{ha}/#") as late:
                avail = await late.wait_for(lambda m: m.topic.endswith("/availability"))
                assert (avail.payload, avail.retain) == (b"online", True)
                for address in addresses:
                    node = node_id(address)
                    state = await late.wait_for(is_state(prefix, address))
                    assert state.retain
                    assert state.json()["device"] == address
                    config_topic = f"{ha}/device/mcgw_{node}/config"
                    config = await late.wait_for(lambda m, t=config_topic: m.topic == t)
                    assert config.retain
                    check_device_config(config, prefix, address)
                hub_config = await late.wait_for(
                    lambda m: m.topic.endswith("mcgw_hub_hubtest/config")
                )
                assert hub_config.retain
                late.messages.clear()  # the outer watcher clears them

            address = await hub.claimed_device(token)
            session = await start_session(hub, token, address)
            await w.wait_for(is_state(prefix, address, lambda s: s["in_session"]))
            ack = await command(w, prefix, {"id": "c1", "command": "stop", "device": address})
            assert ack["ok"], ack
            assert ack["session"]["state"] == "stopped"
            stored = await session_state(hub, token, session["id"])
            assert (stored["state"], stored["reason"]) == ("stopped", "stopped over MQTT")
            await w.wait_for(is_state(prefix, address, lambda s: not s["in_session"]))
            events = [m.json() for m in w.messages if m.topic == f"{prefix}/{HUB_ID}/events"]
            assert any(
                e.get("session_id") == session["id"] and e.get("state") == "stopped" for e in events
            )
        # A clean shutdown says so itself (the last will is for a crash).
        await w.wait_for(
            lambda m: m.topic == f"{prefix}/{HUB_ID}/availability" and m.payload == b"offline"
        )


def check_device_config(config: Message, prefix: str, address: str) -> None:
    body = config.json()
    node = node_id(address)
    assert body["dev"]["ids"] == [f"mcgw_{node}"]
    assert body["dev"]["via_device"] == "mcgw_hub_hubtest"
    assert body["o"]["name"] == "mcgw"
    assert body["stat_t"] == f"{prefix}/{HUB_ID}/device/{node}/state"
    assert body["avty_t"] == f"{prefix}/{HUB_ID}/availability"
    components = body["cmps"]
    platforms = sorted(c["p"] for c in components.values())
    assert platforms.count("sensor") == 7
    assert platforms.count("binary_sensor") == 3
    assert {"button", "select", "number"} <= set(platforms)
    for unique_id, component in components.items():
        assert component["unique_id"] == unique_id
        assert component["default_entity_id"] == f"{component['p']}.{unique_id}"
        assert "object_id" not in component
    signal = components[f"mcgw_{node}_signal"]
    assert signal["entity_category"] == "diagnostic"
    stop = components[f"mcgw_{node}_stop"]
    assert stop["command_topic"] == f"{prefix}/{HUB_ID}/command"


async def test_malformed_unknown_and_unauthorised_commands_are_refused_and_change_nothing(
    tmp_path: Path,
) -> None:
    prefix, ha = unique_prefixes()
    # User 1 (ann) starts over REST; MQTT acts as user 2 (mq), who has not consented yet.
    settings = mqtt_settings(tmp_path, prefix, ha, allow_start=True, user_id=2)
    async with watch(MQTT_PORT, f"{prefix}/#", f"{ha}/#") as w, serve(settings) as hub:
        _, ann = await hub.user("ann")
        mq_id, mq = await hub.user("mq", consent=False)
        assert mq_id == 2
        ann_device = await hub.claimed_device(ann, 0)
        mq_device = await hub.claimed_device(mq, 1)
        session = await start_session(hub, ann, ann_device)
        await w.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"online")

        refused = await command(w, prefix, b'{"id": "x1", "command": ')
        assert (refused["ok"], refused["error"]["kind"]) == (False, "invalid")
        refused = await command(w, prefix, {"id": "x2", "command": "explode", "device": ann_device})
        assert refused["error"] == {
            "kind": "invalid",
            "field": "command",
            "detail": refused["error"]["detail"],
        }
        refused = await command(w, prefix, {"id": "x3", "command": "level", "device": ann_device})
        assert refused["error"]["field"] == "level"
        # Not started over MQTT and MQTT is not an admin: pause, resume, level are refused.
        for name in ("pause", "resume"):
            refused = await command(w, prefix, {"id": name, "command": name, "device": ann_device})
            assert refused["error"]["kind"] == "forbidden", refused
        refused = await command(
            w, prefix, {"id": "x4", "command": "level", "session_id": session["id"], "level": 5}
        )
        assert refused["error"]["kind"] == "forbidden"
        # S7: the mapped user has not consented; S8: ann's device is not theirs.
        start = {"command": "start", "program": "quick-lift", "device": mq_device}
        refused = await command(w, prefix, {"id": "x5", **start})
        assert refused["error"]["kind"] == "consent-required"
        consent = await hub.client(mq).post(
            "/api/v1/me/consent", json={"version": "2026-11", "accept": True}
        )
        assert consent.status_code in (200, 201), consent.text
        refused = await command(w, prefix, {"id": "x6", **start, "device": ann_device})
        assert refused["error"]["kind"] == "forbidden"

        stored = await session_state(hub, ann, session["id"])
        assert (stored["state"], stored["level"]) == ("running", 1)
        assert hub.runtime.sessions.active_on(mq_device) is None

        # Allowed: a start as the consenting user on their device, then control of it.
        started = await command(w, prefix, {"id": "s1", **start, "level": 2})
        assert started["ok"], started
        mq_session = started["session"]["id"]
        assert (await session_state(hub, mq, mq_session))["state"] == "running"
        again = await command(w, prefix, {"id": "s1", **start, "level": 2})
        assert again["session"]["id"] == mq_session  # the command id made it idempotent
        paused = await command(w, prefix, {"id": "p1", "command": "pause", "device": mq_device})
        assert paused["session"]["state"] == "paused"
        level = await command(
            w, prefix, {"id": "l1", "command": "level", "session_id": mq_session, "level": 1}
        )
        assert level["session"]["level"] == 1
        # Stop is accepted for any session, the REST-started one included.
        for device in (mq_device, ann_device):
            stopped = await command(
                w, prefix, {"id": f"stop-{device}", "command": "stop", "device": device}
            )
            assert stopped["session"]["state"] == "stopped"
        assert (await session_state(hub, ann, session["id"]))["state"] == "stopped"


async def test_a_forgotten_device_is_removed_and_home_assistant_birth_republishes(
    tmp_path: Path,
) -> None:
    prefix, ha = unique_prefixes()
    async with (
        watch(MQTT_PORT, f"{prefix}/#", f"{ha}/#") as w,
        serve(mqtt_settings(tmp_path, prefix, ha)) as hub,
    ):
        _, token = await hub.user("ann")
        address = await hub.claimed_device(token)
        config_topic = f"{ha}/device/mcgw_{node_id(address)}/config"
        await w.wait_for(lambda m: m.topic == config_topic and bool(m.payload))

        mark = w.mark()
        await w.publish(f"{ha}/status", "online")
        again = await w.wait_for(lambda m: m.topic == config_topic, after=mark)
        assert again.json()["dev"]["ids"] == [f"mcgw_{node_id(address)}"]

        forgotten = await hub.client(token).delete(f"/api/v1/devices/{address}")
        assert forgotten.status_code == 204, forgotten.text
        await w.wait_for(lambda m: m.topic == config_topic and m.payload == b"", after=mark)
        await w.wait_for(is_state_cleared(prefix, address), after=mark)
    # Retained messages come at subscription, before anything published after it.
    sentinel = f"{prefix}/sentinel"
    async with watch(MQTT_PORT, config_topic, sentinel) as late:
        await late.publish(sentinel, "end")
        await late.wait_for(lambda m: m.topic == sentinel)
        assert [m for m in late.messages if m.topic == config_topic and m.payload] == []


def is_state_cleared(prefix: str, address: str) -> Any:
    topic = f"{prefix}/{HUB_ID}/device/{node_id(address)}/state"
    return lambda m: m.topic == topic and m.payload == b""
