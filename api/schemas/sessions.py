"""Bodies of the session routes: starting, the level, a session and its events, its telemetry.

This module checks shapes only; the state machine is ``gateway.sessions``'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.schemas.fields import (
    EXAMPLE_NOW,
    EXAMPLE_SESSION_ID,
    Address,
    Input,
    Level,
    Slug,
    examples,
)
from gateway.states import SessionState

_SESSION_EXAMPLE: dict[str, Any] = {
    "id": EXAMPLE_SESSION_ID,
    "owner_id": 2,
    "device": "C0:4D:43:00:00:00",
    "program": "quick-lift",
    "level": 3,
    "state": "running",
    "reason": None,
    "created_at": EXAMPLE_NOW,
    "started_at": "2026-11-30T08:00:01Z",
    "ended_at": None,
    "planned_s": 300,
    "position_s": 42.5,
    "delivered_s": 41.2,
    "dose_uas_by_zone": {"forehead": 7416.0},
    "limited_by_cap": False,
    "live": True,
}
_TELEMETRY_ROW_EXAMPLE: dict[str, Any] = {
    "t_ms": 1796025601000,
    "n": 50,
    "frame": 1200,
    "state": "running",
    "segment_id": 0,
    "current_mean_ua": 178.4,
    "current_peak_ua": 181,
    "impedance_ohm": 5210.0,
    "contact_quality": 92.0,
    "battery_pct": 81,
    "temperature_c": 31.5,
    "faults": [],
}


class SessionStart(Input):
    model_config = examples({"device": "C0:4D:43:00:00:00", "program": "quick-lift", "level": 3})

    device: Address
    program: Slug
    level: Level = 1


class LevelChange(Input):
    model_config = examples({"level": 4})

    level: Level


class SessionPublic(BaseModel):
    model_config = examples(_SESSION_EXAMPLE)

    id: str
    owner_id: int
    device: str
    program: str
    level: int
    state: SessionState
    reason: str | None = Field(description="Why the session is in this state (S9).")
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    planned_s: int
    position_s: float | None = Field(description="Program position; live sessions only.")
    delivered_s: float
    dose_uas_by_zone: dict[str, float] = Field(description="Delivered charge, µA·s per zone.")
    limited_by_cap: bool = Field(
        description="Your personal cap lowered at least one step of the program (it plays "
        "quieter than written; the limited_by_cap event says which steps)."
    )
    live: bool = Field(description="Held by this hub's session manager right now.")


class SessionEventPublic(BaseModel):
    model_config = examples(
        {"ts": EXAMPLE_NOW, "kind": "state", "detail": {"state": "running", "reason": "started"}}
    )

    ts: datetime
    kind: str
    detail: dict[str, Any]


class SessionDetail(SessionPublic):
    model_config = examples(
        {
            **_SESSION_EXAMPLE,
            "events": [
                {
                    "ts": "2026-11-30T08:00:01Z",
                    "kind": "state",
                    "detail": {"state": "running", "reason": "started"},
                },
                {
                    "ts": "2026-11-30T08:00:07Z",
                    "kind": "move",
                    "detail": {"step": 0, "zone": "forehead", "cue": "glide"},
                },
            ],
        }
    )

    events: list[SessionEventPublic]


class SessionPage(BaseModel):
    model_config = examples(
        {"items": [_SESSION_EXAMPLE], "total": 1, "limit": 50, "offset": 0, "next_offset": None}
    )

    items: list[SessionPublic]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class TelemetryRowPublic(BaseModel):
    model_config = examples(_TELEMETRY_ROW_EXAMPLE)

    t_ms: int = Field(description="Unix time in ms (a bucket's start when downsampled).")
    n: int = Field(description="Samples this row stands for.")
    frame: int
    state: str
    segment_id: int | None
    current_mean_ua: float
    current_peak_ua: int
    impedance_ohm: float | None
    contact_quality: float
    battery_pct: int
    temperature_c: float
    faults: list[str]


class TelemetryPublic(BaseModel):
    model_config = examples(
        {"session_id": EXAMPLE_SESSION_ID, "every_ms": 1000, "rows": [_TELEMETRY_ROW_EXAMPLE]}
    )

    session_id: str
    every_ms: int | None
    rows: list[TelemetryRowPublic]
