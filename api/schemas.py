"""Request and response bodies of REST v1, apart from the storage tables (XCreate / XPublic).

Inputs forbid unknown fields (a typo is a 422 naming the field, never silently ignored) and are
strict: a level, amplitude or id must be a JSON integer (``"3"``, ``3.0`` and ``true`` are
refused), a flag a JSON boolean. Names refuse control characters (NUL included) and the
invisible bidirectional-override characters that make a name display as something else.
Outputs list every field the server sends, so the OpenAPI schema is the contract a phone app can
be generated from. Times are ISO 8601 in UTC; currents in µA; durations in seconds.

Program steps reuse ``gateway.programs.ProgramStep``: one definition of a step for validation,
storage and the API.
"""

from __future__ import annotations

import unicodedata
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from gateway.programs import ProgramStep
from gateway.states import SessionState


class Input(BaseModel):
    """Base of every request body: unknown fields are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
"""Characters that reorder text on screen (a name could display as another's)."""


def plain_text(value: str, *, newlines: bool = False) -> str:
    """Refuse control characters (NUL included; newline and tab only when ``newlines``), lone
    surrogates and bidirectional controls; the error names the first one found."""
    allowed = "\n\t" if newlines else ""
    for char in value:
        if char in allowed:
            continue
        if char in BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(
                f"must not contain the invisible or control character U+{ord(char):04X}"
            )
    return value


def _plain_name(value: str) -> str:
    return plain_text(value)


def _plain_paragraph(value: str) -> str:
    return plain_text(value, newlines=True)


_REFUSED = "\\u007f-\\u009f\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069"
NAME_PATTERN = (
    f"^[^\\u0000-\\u001f{_REFUSED}]*[^\\s\\u0000-\\u001f{_REFUSED}][^\\u0000-\\u001f{_REFUSED}]*$"
)
"""What ``Name`` accepts, for the schema: something besides spaces, no control or bidi character."""
DESCRIPTION_PATTERN = f"^[^\\u0000-\\u0008\\u000b-\\u001f{_REFUSED}]*$"
"""What ``Description`` accepts, for the schema: newlines and tabs, no other control character."""

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=80),
    AfterValidator(_plain_name),
    Field(json_schema_extra={"pattern": NAME_PATTERN}),
]
Description = Annotated[
    str,
    Field(max_length=500, json_schema_extra={"pattern": DESCRIPTION_PATTERN}),
    AfterValidator(_plain_paragraph),
]
Slug = Annotated[str, Field(pattern="^[a-z0-9][a-z0-9-]{1,47}$", examples=["my-morning"])]
Address = Annotated[
    str,
    Field(
        pattern="^[0-9A-Za-z][0-9A-Za-z:_-]{0,63}$",
        examples=["C0:4D:43:00:00:00"],
        description="The device's Bluetooth address (case-insensitive).",
    ),
]
MAX_DB_ID = 2_147_483_647
"""Ids fit a 32-bit signed integer (PostgreSQL ``integer``; larger ones would overflow SQLite)."""
DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID)]
Level = Annotated[int, Field(ge=1, le=5, description="Intensity level, 1 (gentlest) to 5.")]


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    """A model's examples, shown in /docs and checked against its schema by tests/api."""
    return ConfigDict(json_schema_extra={"examples": list(examples)})


# Examples are one consistent story: user 2 ("Ana") on device C0:4D:43:00:00:00, the first
# device of a simulated radio (`mcgw serve --ble sim:2`), so they work against the simulator.
_NOW = "2026-11-30T08:00:00Z"
_SESSION_ID = "6f9619ff-8b86-4d01-b42d-00c04fc964ff"
_CONSENT_EXAMPLE: dict[str, Any] = {
    "accepted": True,
    "accepted_at": "2026-11-29T19:12:03Z",
    "version": "2026-11",
    "current_version": "2026-11",
    "notice": "Do not use microcurrent if you have a pacemaker or other implanted electronic "
    "device, epilepsy, cancer, or are pregnant; ...",
}
_ME_EXAMPLE: dict[str, Any] = {
    "id": 2,
    "name": "Ana",
    "is_admin": False,
    "cap_ua": 300,
    "consent": _CONSENT_EXAMPLE,
}
_TOKEN_EXAMPLE: dict[str, Any] = {
    "id": 7,
    "user_id": 2,
    "name": "Ana's phone",
    "created_at": "2026-11-29T19:10:44Z",
    "revoked_at": None,
    "last_used_at": _NOW,
}
_STEP_EXAMPLES: list[dict[str, Any]] = [
    {"zone": "forehead", "amplitude_ua": 300, "duration_s": 120},
    {
        "zone": "cheeks",
        "waveform": "square_biphasic",
        "frequency_hz": 10.0,
        "amplitude_ua": 350,
        "duty_pct": 50,
        "duration_s": 180,
        "move_cue_s": 6,
    },
]
_SESSION_EXAMPLE: dict[str, Any] = {
    "id": _SESSION_ID,
    "owner_id": 2,
    "device": "C0:4D:43:00:00:00",
    "program": "quick-lift",
    "level": 3,
    "state": "running",
    "reason": None,
    "created_at": _NOW,
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
_WEEK_EXAMPLE: dict[str, Any] = {
    "iso_year": 2026,
    "iso_week": 48,
    "week_start": "2026-11-23",
    "minutes_by_zone": {"forehead": 6.0, "cheeks": 10.0, "jawline": 6.0},
    "total_minutes": 22.0,
}

# --- health ---------------------------------------------------------------------------------------


class HealthPublic(BaseModel):
    model_config = _examples({"status": "ok", "hub_id": "bathroom-hub", "version": "0.1.0"})

    status: Literal["ok"] = "ok"
    hub_id: str
    version: str


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
    model_config = _examples(_READY_EXAMPLE)

    ready: bool
    checks: dict[str, CheckPublic] = Field(
        description="runtime, radio, storage (takes writes), journal, database (answers a read)"
    )


# --- me, consent, pairing, tokens -----------------------------------------------------------------


class ConsentPublic(BaseModel):
    model_config = _examples(_CONSENT_EXAMPLE)

    accepted: bool
    accepted_at: datetime | None
    version: str | None = Field(description="The notice version the user accepted, if any.")
    current_version: str
    notice: str = Field(description="The contraindication notice to show before accepting.")


class MePublic(BaseModel):
    model_config = _examples(_ME_EXAMPLE)

    id: int
    name: str
    is_admin: bool
    cap_ua: int | None = Field(description="Personal amplitude cap in µA (S1), if set.")
    consent: ConsentPublic


class ConsentAccept(Input):
    model_config = _examples({"version": "2026-11", "accept": True})

    version: str = Field(max_length=32, description="The notice version shown to the user.")
    accept: bool = Field(
        description="Must be true: the user read and accepts it.",
        json_schema_extra={"const": True},
    )

    @field_validator("accept")
    @classmethod
    def _accepted(cls, value: bool) -> bool:
        if value is not True:
            raise ValueError("must be true: the notice is accepted, or nothing is recorded")
        return value


class CapUpdate(Input):
    model_config = _examples({"cap_ua": 300}, {"cap_ua": None})

    cap_ua: Annotated[int, Field(ge=10, le=500)] | None = Field(
        description="A personal cap in µA; null removes it. The hub cap still applies."
    )


class PairRequest(Input):
    model_config = _examples({"code": "482913", "client_name": "Ana's phone"})

    code: str = Field(pattern=r"^\d{6}$", examples=["482913"], description="From `mcgw pair`.")
    client_name: Name = Field(default="phone", description="Names the token (e.g. the phone).")


class UserPublic(BaseModel):
    model_config = _examples(
        {"id": 2, "name": "Ana", "is_admin": False, "consent_accepted": True, "cap_ua": 300}
    )

    id: int
    name: str
    is_admin: bool
    consent_accepted: bool
    cap_ua: int | None


class UserUpdate(Input):
    """Admin: grant or take admin rights."""

    model_config = _examples({"is_admin": True})

    is_admin: bool


class TokenPublic(BaseModel):
    model_config = _examples(_TOKEN_EXAMPLE)

    id: int
    user_id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    model_config = _examples(
        {**_TOKEN_EXAMPLE, "token": "mcgw_3q2-Xy8vL0cT4nR9mKp1sWz6bA7dE5fG2hJ8kQ0uV4o"}
    )

    token: str = Field(description="The bearer token. Shown once; only its hash is stored.")


class PairResult(BaseModel):
    model_config = _examples(
        {
            "token": "mcgw_3q2-Xy8vL0cT4nR9mKp1sWz6bA7dE5fG2hJ8kQ0uV4o",
            "token_id": 7,
            "user": _ME_EXAMPLE,
        }
    )

    token: str = Field(description="The bearer token. Shown once; store it on the phone.")
    token_id: int
    user: MePublic


class TokenCreate(Input):
    """Admin: a token for an existing user (``user_id``) or for a new one (``new_user_name``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "backup script", "new_user_name": "backup"},
                {"name": "Ana's tablet", "user_id": 2},
            ],
            # Exactly one of user_id and new_user_name; is_admin with new_user_name only.
            "oneOf": [
                {
                    "required": ["user_id"],
                    "properties": {
                        "user_id": {"type": "integer"},
                        "new_user_name": {"type": "null"},
                        "is_admin": {"const": False},
                    },
                },
                {
                    "required": ["new_user_name"],
                    "properties": {
                        "new_user_name": {"type": "string"},
                        "user_id": {"type": "null"},
                    },
                },
            ],
        }
    )

    name: Name = Field(description="What the token is for, e.g. 'backup script'.")
    user_id: DbId | None = None
    new_user_name: Name | None = None
    is_admin: bool = Field(default=False, description="Only with new_user_name.")


# --- devices --------------------------------------------------------------------------------------


class DevicePublic(BaseModel):
    model_config = _examples(
        {
            "address": "C0:4D:43:00:00:00",
            "name": "Bathroom toner",
            "state": "bonded",
            "managed": True,
            "claimed": True,
            "owned_by_you": True,
            "bonded": True,
            "rssi": -58,
            "battery_pct": 81,
            "contact_quality": 92,
            "active_session_id": _SESSION_ID,
            "last_seen": _NOW,
        }
    )

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
    model_config = _examples({"name": "Bathroom toner"})

    name: Name


class OwnerChange(Input):
    """Admin: the user the device belongs to from now on; null releases it (unclaimed)."""

    model_config = _examples({"user_id": 2}, {"user_id": None})

    user_id: DbId | None


class ScanRequest(Input):
    model_config = _examples({"timeout_s": 2.0})

    timeout_s: float = Field(default=2.0, ge=0.2, le=10.0)


# --- programs -------------------------------------------------------------------------------------


class ProgramCreate(Input):
    model_config = _examples(
        {
            "slug": "my-morning",
            "name": "My morning",
            "description": "Forehead, then cheeks.",
            "steps": _STEP_EXAMPLES,
        }
    )

    slug: Slug
    name: Name
    description: Description = ""
    steps: list[ProgramStep] = Field(min_length=1, max_length=60)


class ProgramUpdate(Input):
    model_config = _examples(
        {"name": "My morning", "description": "Forehead, then cheeks.", "steps": _STEP_EXAMPLES}
    )

    name: Name
    description: Description = ""
    steps: list[ProgramStep] = Field(min_length=1, max_length=60)


class ProgramPublic(BaseModel):
    model_config = _examples(
        {
            "slug": "my-morning",
            "name": "My morning",
            "description": "Forehead, then cheeks.",
            "builtin": False,
            "owned_by_you": True,
            "duration_s": 300,
            "steps": [
                {
                    "zone": "forehead",
                    "waveform": "square_biphasic",
                    "frequency_hz": 10.0,
                    "amplitude_ua": 300,
                    "duty_pct": 50,
                    "duration_s": 120,
                    "move_cue_s": 5,
                },
                _STEP_EXAMPLES[1],
            ],
        }
    )

    slug: str
    name: str
    description: str
    builtin: bool
    owned_by_you: bool
    duration_s: int
    steps: list[ProgramStep]


# --- sessions -------------------------------------------------------------------------------------


class SessionStart(Input):
    model_config = _examples({"device": "C0:4D:43:00:00:00", "program": "quick-lift", "level": 3})

    device: Address
    program: Slug
    level: Level = 1


class LevelChange(Input):
    model_config = _examples({"level": 4})

    level: Level


class SessionPublic(BaseModel):
    model_config = _examples(_SESSION_EXAMPLE)

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
    model_config = _examples(
        {"ts": _NOW, "kind": "state", "detail": {"state": "running", "reason": "started"}}
    )

    ts: datetime
    kind: str
    detail: dict[str, Any]


class SessionDetail(SessionPublic):
    model_config = _examples(
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
    model_config = _examples(
        {"items": [_SESSION_EXAMPLE], "total": 1, "limit": 50, "offset": 0, "next_offset": None}
    )

    items: list[SessionPublic]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class TelemetryRowPublic(BaseModel):
    model_config = _examples(_TELEMETRY_ROW_EXAMPLE)

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
    model_config = _examples(
        {"session_id": _SESSION_ID, "every_ms": 1000, "rows": [_TELEMETRY_ROW_EXAMPLE]}
    )

    session_id: str
    every_ms: int | None
    rows: list[TelemetryRowPublic]


# --- stats ----------------------------------------------------------------------------------------


class WeekPublic(BaseModel):
    model_config = _examples(_WEEK_EXAMPLE)

    iso_year: int
    iso_week: int
    week_start: date
    minutes_by_zone: dict[str, float]
    total_minutes: float


class StatsPublic(BaseModel):
    model_config = _examples(
        {"streak_current": 4, "streak_best": 9, "last_day": "2026-11-30", "weeks": [_WEEK_EXAMPLE]}
    )

    streak_current: int = Field(description="Consecutive days with a completed session.")
    streak_best: int
    last_day: date | None
    weeks: list[WeekPublic]
