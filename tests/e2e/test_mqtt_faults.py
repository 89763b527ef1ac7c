"""The MQTT bridge under broker faults, against a Mosquitto of the test's own.

The broker is started late, killed and restarted (losing every retained message: persistence
is off) and frozen with SIGSTOP. The hub must serve throughout, get its retained state and
discovery back on the broker by itself, leave running sessions alone, and stop a session at
once while the broker is frozen. Waits are hang guards, never measurements.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.mqtt.topics import node_id
from tests.api.hub import Hub, serve
from tests.e2e.mqtt_broker import HANG_S, Broker, unique_prefixes, watch
from tests.e2e.test_mqtt import HUB_ID, is_state, mqtt_settings, session_state, start_session

pytestmark = [pytest.mark.mqtt, pytest.mark.faults]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    made = Broker(tmp_path)
    try:
        yield made
    finally:
        made.kill()


async def health(hub: Hub) -> dict[str, Any]:
    response = await hub.client().get("/api/v1/health")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def wait_mqtt(hub: Hub, state: str) -> None:
    async with asyncio.timeout(HANG_S):
        while (await health(hub))["mqtt"]["state"] != state:
            await asyncio.sleep(0.05)


async def settled(hub: Hub) -> None:
    """Until the bridge has nothing waiting: every retained topic it holds was acknowledged by
    the broker, so a subscriber arriving now gets them as retained messages. (Before that, a
    publish still on its way reaches a new subscriber live, without the retain flag.)"""
    bridge = hub.runtime.mqtt
    assert bridge is not None
    async with asyncio.timeout(HANG_S):
        while bridge.backlog:
            await asyncio.sleep(0.01)


async def test_broker_down_at_start_the_hub_serves_and_connects_once_it_is_up(
    tmp_path: Path, broker: Broker
) -> None:
    prefix, ha = unique_prefixes()
    async with serve(mqtt_settings(tmp_path, prefix, ha, url=broker.url)) as hub:
        _, token = await hub.user("ann")
        listed = await hub.client(token).get("/api/v1/devices")
        assert listed.status_code == 200
        assert (await health(hub))["mqtt"]["state"] in ("connecting", "down")
        address = await hub.claimed_device(token)

        broker.start()
        await wait_mqtt(hub, "up")
        await settled(hub)
        async with watch(broker.port, f"{prefix}/#", f"{ha}/#") as w:
            online = await w.wait_for(lambda m: m.topic.endswith("/availability"))
            assert (online.payload, online.retain) == (b"online", True)
            state = await w.wait_for(is_state(prefix, address))
            assert state.retain
            await w.wait_for(lambda m: m.topic == f"{ha}/device/mcgw_{node_id(address)}/config")
        metrics = (await hub.client().get("/metrics")).text
        assert "mcgw_mqtt_up 1.0" in metrics


async def test_broker_restarted_mid_session_state_and_discovery_come_back_session_runs_on(
    tmp_path: Path, broker: Broker
) -> None:
    broker.start()
    prefix, ha = unique_prefixes()
    settings = mqtt_settings(tmp_path, prefix, ha, url=broker.url, telemetry_hz=10)
    async with serve(settings) as hub:
        _, token = await hub.user("ann")
        address = await hub.claimed_device(token)
        await wait_mqtt(hub, "up")
        session = await start_session(hub, token, address)

        broker.kill()
        await wait_mqtt(hub, "down")
        broker.start()
        await wait_mqtt(hub, "up")
        await settled(hub)
        async with watch(broker.port, f"{prefix}/#", f"{ha}/#") as w:
            state = await w.wait_for(is_state(prefix, address, lambda s: s["session"] is not None))
            assert state.retain
            assert state.json()["session"]["id"] == session["id"]
            config = await w.wait_for(
                lambda m: m.topic == f"{ha}/device/mcgw_{node_id(address)}/config"
            )
            assert config.retain
            await w.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"online")
        stored = await session_state(hub, token, session["id"])
        assert stored["state"] == "running", stored
        assert stored["reason"] == session["reason"]  # nothing happened to it
        # Telemetry while the broker was away was dropped and counted, not queued.
        assert hub.runtime.mqtt is not None
        assert hub.runtime.mqtt.status.dropped > 0


async def test_a_frozen_broker_delays_no_rest_stop_and_a_held_mqtt_stop_lands_on_thaw(
    tmp_path: Path, broker: Broker
) -> None:
    broker.start()
    prefix, ha = unique_prefixes()
    settings = mqtt_settings(tmp_path, prefix, ha, url=broker.url)
    async with serve(settings) as hub, watch(broker.port, f"{prefix}/{HUB_ID}/ack") as w:
        _, token = await hub.user("ann")
        first = await hub.claimed_device(token, 0)
        second = await hub.claimed_device(token, 1)
        await wait_mqtt(hub, "up")
        by_rest = await start_session(hub, token, first)
        by_mqtt = await start_session(hub, token, second)

        broker.freeze()
        try:
            # The stop goes out over MQTT now; the frozen broker holds it.
            await w.client.publish(
                f"{prefix}/{HUB_ID}/command",
                b'{"id": "frozen-stop", "command": "stop", "device": "%s"}' % second.encode(),
                qos=0,
            )
            stopped = await hub.client(token).post(f"/api/v1/sessions/{by_rest['id']}/stop")
            assert stopped.status_code == 200
            assert stopped.json()["state"] == "stopped"
            # The hub's own publishing of that change is stuck behind the frozen broker.
            assert hub.runtime.mqtt is not None
            assert hub.runtime.mqtt.backlog > 0
            assert (await health(hub))["status"] == "ok"
        finally:
            broker.thaw()
        ack = await w.wait_for(lambda m: m.json()["id"] == "frozen-stop")
        assert ack.json()["ok"], ack.json()
        assert (await session_state(hub, token, by_mqtt["id"]))["state"] == "stopped"
        assert (await session_state(hub, token, by_rest["id"]))["state"] == "stopped"
