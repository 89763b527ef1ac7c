"""The fleet (admins): every hub on the MQTT broker, from their retained state.

Hubs sharing a broker (and usually a PostgreSQL database) each publish their availability,
devices and live sessions retained (docs/mqtt.md); this route reads them back through
``gateway.mqtt.fleet``. It answers 409 ``mqtt-off`` when this hub has no broker configured and
503 ``mqtt-unavailable`` when the broker cannot be read. Nothing here reads the database.

``gateway.mqtt.fleet`` (and with it the MQTT client libraries) is imported when the route is
first asked: a hub with MQTT off never needs them resident.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.auth import AdminUser, RuntimeDep
from api.errors import ApiProblem
from api.schemas.fields import examples

router = APIRouter(prefix="/fleet", tags=["fleet"])


class FleetHubPublic(BaseModel):
    model_config = examples(
        {
            "hub_id": "spa-room-2",
            "availability": "online",
            "version": "0.1.0",
            "devices": [
                {
                    "device": "C0:4D:43:00:00:01",
                    "name": "MC-1",
                    "connection": "bonded",
                    "battery_pct": 81,
                    "in_session": True,
                }
            ],
            "sessions": [
                {
                    "id": "5b0c…",
                    "device": "C0:4D:43:00:00:01",
                    "state": "running",
                    "program": "quick-lift",
                }
            ],
        }
    )

    hub_id: str
    availability: str = Field(description="online, offline (shut down or its last will), unknown")
    version: str | None
    devices: list[dict[str, Any]]
    sessions: list[dict[str, Any]] = Field(description="Live sessions (pending, running, paused)")


@router.get(
    "",
    summary="Admins: every hub on the MQTT broker with its availability, devices and sessions",
    responses={
        409: {"description": "MQTT is off on this hub (mqtt-off)"},
        503: {"description": "The broker cannot be read (mqtt-unavailable)"},
    },
)
async def list_fleet(user: AdminUser, runtime: RuntimeDep) -> list[FleetHubPublic]:
    """From the broker's retained messages; a hub killed outright shows ``offline`` through
    its last will."""
    settings = runtime.settings.mqtt
    if not settings.url:
        raise ApiProblem(409, "MQTT is off on this hub; set MCGW_MQTT__URL", kind="mqtt-off")
    from gateway.mqtt.fleet import FleetUnavailable, read_fleet

    try:
        hubs = await read_fleet(settings)
    except FleetUnavailable as exc:
        raise ApiProblem(503, str(exc), kind="mqtt-unavailable") from exc
    return [FleetHubPublic(**hub.as_dict()) for hub in hubs]
