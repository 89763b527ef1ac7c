"""Bodies of the health routes: liveness and readiness with its checks.

This module decides nothing about health (``gateway.health`` does); it only shapes the answer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.fields import examples


class MqttPublic(BaseModel):
    """The MQTT bridge's broker connection (informational: the hub serves without it)."""

    state: Literal["connecting", "up", "down"]
    detail: str
    since: float = Field(description="UNIX time the state began")
    dropped: int = Field(description="Telemetry, events and acks dropped while slow or away")


class HealthPublic(BaseModel):
    model_config = examples({"status": "ok", "hub_id": "bathroom-hub", "version": "0.1.0"})

    status: Literal["ok"] = "ok"
    hub_id: str
    version: str
    mqtt: MqttPublic | None = Field(
        default=None, description="The MQTT bridge, when MCGW_MQTT__URL is set (docs/mqtt.md)"
    )


class CheckPublic(BaseModel):
    ok: bool
    detail: str = Field(description="What a person needs to know, e.g. why it fails.")


_READY_EXAMPLE = {
    "ready": True,
    "checks": {
        "runtime": {"ok": True, "detail": "running"},
        "radio": {"ok": True, "detail": "tcp-client:127.0.0.1:9100 up"},
        "storage": {"ok": True, "detail": "writable"},
        "journal": {"ok": True, "detail": "0 records not yet applied"},
        "database": {"ok": True, "detail": "answers"},
    },
}


class ReadyPublic(BaseModel):
    model_config = examples(_READY_EXAMPLE)

    ready: bool
    checks: dict[str, CheckPublic] = Field(
        description="runtime, radio, storage (takes writes), journal, database (answers a read)"
    )
