"""The fleet: every hub on the broker, read back from their retained MQTT state.

Each hub's bridge keeps ``<prefix>/<hub_id>/availability`` (``online``, or ``offline`` from its
clean shutdown or its last will when it died), ``<prefix>/<hub_id>/hub`` (its devices and live
sessions) and one state per device retained on the broker. ``read_fleet`` subscribes to those
of every hub, waits until the broker has delivered what it retains (a marker message published
after the subscriptions arrives after them), and returns one :class:`HubView` per hub, sorted by
hub id. ``mcgw fleet`` and ``GET /api/v1/fleet`` show it.

The broker is the only source: a hub that never reached it is not listed, and nothing here
reads the shared database or talks to another hub directly.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import aiomqtt
import orjson

from gateway.config import MqttSettings
from gateway.errors import GatewayError
from gateway.mqtt.connect import broker_address, make_client
from gateway.mqtt.topics import fleet_filters

READ_TIMEOUT_S = 5.0


class FleetUnavailable(GatewayError):
    """The broker could not be read; the text says which and why."""


@dataclass
class HubView:
    hub_id: str
    availability: str = "unknown"
    """``online``, ``offline`` (shut down, or its last will), ``unknown`` (never said)."""
    version: str | None = None
    devices: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def read_fleet(settings: MqttSettings, *, timeout_s: float = READ_TIMEOUT_S) -> list[HubView]:
    """Every hub under ``settings.topic_prefix`` on the broker; ``FleetUnavailable`` if the
    broker cannot be reached or does not answer within ``timeout_s``."""
    if not settings.url:
        raise FleetUnavailable("MQTT is off: set MCGW_MQTT__URL to the fleet's broker")
    marker = f"{settings.topic_prefix}/_fleet/{uuid.uuid4().hex}"
    retained: dict[str, bytes] = {}
    client = make_client(settings, identifier=f"mcgw-fleet-{uuid.uuid4().hex[:12]}")
    try:
        async with asyncio.timeout(timeout_s), client:
            for topic in (*fleet_filters(settings.topic_prefix), marker):
                await client.subscribe(topic, qos=1)
            await client.publish(marker, b"end", qos=1)
            async for message in client.messages:
                topic = message.topic.value
                if topic == marker:
                    break
                payload = message.payload if isinstance(message.payload, bytes) else b""
                retained[topic] = payload
    except TimeoutError as exc:
        raise FleetUnavailable(
            f"the MQTT broker {broker_address(settings)} did not answer in {timeout_s:g} s"
        ) from exc
    except (aiomqtt.MqttError, OSError) as exc:
        raise FleetUnavailable(
            f"cannot read the fleet from the MQTT broker {broker_address(settings)}: {exc}"
        ) from exc
    return hubs_from(settings.topic_prefix, retained)


def hubs_from(prefix: str, retained: dict[str, bytes]) -> list[HubView]:
    """The hubs that ``retained`` (topic -> payload) describes. Pure."""
    hubs: dict[str, HubView] = {}
    start = len(prefix) + 1
    for topic, payload in sorted(retained.items()):
        if not payload or not topic.startswith(prefix + "/"):
            continue
        levels = topic[start:].split("/")
        hub = hubs.setdefault(levels[0], HubView(hub_id=levels[0]))
        if levels[1:] == ["availability"]:
            hub.availability = payload.decode(errors="replace")
            continue
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if levels[1:] == ["hub"] and isinstance(body, dict):
            hub.hub_id = str(body.get("hub_id", hub.hub_id))
            hub.version = body.get("version")
            hub.sessions = list(body.get("sessions", []))
        elif len(levels) == 4 and levels[1] == "device" and isinstance(body, dict):
            hub.devices.append(
                {
                    key: body.get(key)
                    for key in ("device", "name", "connection", "battery_pct", "in_session")
                }
            )
    return [hubs[key] for key in sorted(hubs)]
