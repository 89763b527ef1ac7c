"""Request and response bodies of REST v1, apart from the storage tables (XCreate / XPublic).

Inputs forbid unknown fields (a typo is a 422 naming the field, never silently ignored).
Outputs list every field the server sends, so the OpenAPI schema is the contract a phone app can
be generated from. Times are ISO 8601 in UTC; currents in µA; durations in seconds.

Program steps reuse ``gateway.programs.ProgramStep``: one definition of a step for validation,
storage and the API.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from gateway.programs import ProgramStep


class Input(BaseModel):
    """Base of every request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
Slug = Annotated[str, Field(pattern="^[a-z0-9][a-z0-9-]{1,47}$", examples=["my-morning"])]
Address = Annotated[
    str,
    Field(
        pattern="^[0-9A-Za-z][0-9A-Za-z:_-]{0,63}$",
        examples=["F0:00:00:00:00:01"],
        description="The device's Bluetooth address (case-insensitive).",
    ),
]
MAX_DB_ID = 2_147_483_647
"""Ids fit a 32-bit signed integer (PostgreSQL ``integer``; larger ones would overflow SQLite)."""
DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID)]
Level = Annotated[int, Field(ge=1, le=5, description="Intensity level, 1 (gentlest) to 5.")]

# --- health ---------------------------------------------------------------------------------------


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"
    hub_id: str
    version: str


class ReadyPublic(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(examples=[{"runtime": "ok", "storage": "ok"}])


# --- me, consent, pairing, tokens -----------------------------------------------------------------


class ConsentPublic(BaseModel):
    accepted: bool
    accepted_at: datetime | None
    version: str | None = Field(description="The notice version the user accepted, if any.")
    current_version: str
    notice: str = Field(description="The contraindication notice to show before accepting.")


class MePublic(BaseModel):
    id: int
    name: str
    is_admin: bool
    cap_ua: int | None = Field(description="Personal amplitude cap in µA (S1), if set.")
    consent: ConsentPublic


class ConsentAccept(Input):
    version: str = Field(max_length=32, description="The notice version shown to the user.")
    accept: Literal[True] = Field(description="Must be true: the user read and accepts it.")


class CapUpdate(Input):
    cap_ua: Annotated[int, Field(ge=10, le=500)] | None = Field(
        description="A personal cap in µA; null removes it. The hub cap still applies."
    )


class PairRequest(Input):
    code: str = Field(pattern=r"^\d{6}$", examples=["482913"], description="From `mcgw pair`.")
    client_name: Name = Field(default="phone", description="Names the token (e.g. the phone).")


class TokenPublic(BaseModel):
    id: int
    user_id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The bearer token. Shown once; only its hash is stored.")


class PairResult(BaseModel):
    token: str = Field(description="The bearer token. Shown once; store it on the phone.")
    token_id: int
    user: MePublic


class TokenCreate(Input):
    """Admin: a token for an existing user (``user_id``) or for a new one (``new_user_name``)."""

    name: Name = Field(description="What the token is for, e.g. 'backup script'.")
    user_id: DbId | None = None
    new_user_name: Name | None = None
    is_admin: bool = Field(default=False, description="Only with new_user_name.")


# --- devices --------------------------------------------------------------------------------------


class DevicePublic(BaseModel):
    address: str
    name: str
    state: str = Field(
        description="discovered | connecting | connected | bonded | lost | known (not in range)"
    )
    managed: bool = Field(description="The hub keeps a connection to it (claimed devices).")
    claimed: bool
    owned_by_you: bool
    bonded: bool
    rssi: int | None
    battery_pct: int | None
    contact_quality: int | None = Field(description="0 (no skin contact) to 100.")
    active_session_id: str | None = Field(description="Set to your session only.")
    last_seen: datetime | None


class DeviceUpdate(Input):
    name: Name


class ScanRequest(Input):
    timeout_s: float = Field(default=2.0, ge=0.2, le=10.0)


# --- programs -------------------------------------------------------------------------------------


class ProgramCreate(Input):
    slug: Slug
    name: Name
    description: str = Field(default="", max_length=500)
    steps: list[ProgramStep] = Field(min_length=1, max_length=60)


class ProgramUpdate(Input):
    name: Name
    description: str = Field(default="", max_length=500)
    steps: list[ProgramStep] = Field(min_length=1, max_length=60)


class ProgramPublic(BaseModel):
    slug: str
    name: str
    description: str
    builtin: bool
    owned_by_you: bool
    duration_s: int
    steps: list[ProgramStep]


# --- sessions -------------------------------------------------------------------------------------


class SessionStart(Input):
    device: Address
    program: Slug
    level: Level = 1


class LevelChange(Input):
    level: Level


class SessionPublic(BaseModel):
    id: str
    owner_id: int
    device: str
    program: str
    level: int
    state: Literal["pending", "running", "paused", "completed", "stopped", "failed", "interrupted"]
    reason: str | None = Field(description="Why the session is in this state (S9).")
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    planned_s: int
    position_s: float | None = Field(description="Program position; live sessions only.")
    delivered_s: float
    dose_uas_by_zone: dict[str, float] = Field(description="Delivered charge, µA·s per zone.")
    live: bool = Field(description="Held by this hub's session manager right now.")


class SessionEventPublic(BaseModel):
    ts: datetime
    kind: str
    detail: dict[str, Any]


class SessionDetail(SessionPublic):
    events: list[SessionEventPublic]


class SessionPage(BaseModel):
    items: list[SessionPublic]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class TelemetryRowPublic(BaseModel):
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
    session_id: str
    every_ms: int | None
    rows: list[TelemetryRowPublic]


# --- stats ----------------------------------------------------------------------------------------


class WeekPublic(BaseModel):
    iso_year: int
    iso_week: int
    week_start: date
    minutes_by_zone: dict[str, float]
    total_minutes: float


class StatsPublic(BaseModel):
    streak_current: int = Field(description="Consecutive days with a completed session.")
    streak_best: int
    last_day: date | None
    weeks: list[WeekPublic]
