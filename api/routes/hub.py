"""The hub itself: the limits every user's programs are held to, and (admins) its settings.

``GET /hub`` gives a client what it needs to check a custom program as it is typed (the caps
that refuse a step, the ranges of each field, the session-length cap); the hub still checks
every program itself (``POST /programs`` and ``POST /programs/check``). ``GET /hub/settings``
shows an admin the effective settings with every secret masked, read-only: settings change in
the environment or the config file, never through the API.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.auth import AdminUser, CurrentUser, RuntimeDep
from api.routes.health import api_version
from api.schemas.fields import examples
from gateway.config import public_settings
from gateway.programs import MAX_FREQUENCY_HZ, MAX_STEP_S, MIN_FREQUENCY_HZ, MIN_STEP_S

router = APIRouter(prefix="/hub", tags=["hub"])


class HubPublic(BaseModel):
    model_config = examples(
        {
            "hub_id": "bathroom-pi",
            "version": "0.1.0",
            "hub_cap_ua": 400,
            "zone_caps_ua": {
                "forehead": 400,
                "brow": 250,
                "eye_area": 200,
                "cheeks": 400,
                "jawline": 400,
                "neck": 300,
            },
            "user_cap_ua": None,
            "max_session_min": 20,
            "step_s": [5, 600],
            "frequency_hz": [0.5, 1000.0],
        }
    )

    hub_id: str
    version: str
    hub_cap_ua: int
    zone_caps_ua: dict[str, int] = Field(
        description="min(hub cap, zone cap) per zone: a program step above it is refused (S1)."
    )
    user_cap_ua: int | None = Field(description="Your personal cap: steps above it play lowered.")
    max_session_min: int = Field(description="A program may not be longer (S10).")
    step_s: tuple[int, int] = Field(description="Shortest and longest step, seconds.")
    frequency_hz: tuple[float, float]


@router.get("", summary="This hub's caps and program limits (to check a program as it is typed)")
async def get_hub(user: CurrentUser, runtime: RuntimeDep) -> HubPublic:
    """The caps a custom program's steps are refused above, per zone, and the field ranges."""
    safety = runtime.settings.safety
    return HubPublic(
        hub_id=runtime.settings.hub_id,
        version=api_version(),
        hub_cap_ua=safety.hub_cap_ua,
        zone_caps_ua={
            zone: min(cap, safety.hub_cap_ua) for zone, cap in safety.zone_caps_ua.items()
        },
        user_cap_ua=user.cap_ua,
        max_session_min=safety.max_session_min,
        step_s=(MIN_STEP_S, MAX_STEP_S),
        frequency_hz=(MIN_FREQUENCY_HZ, MAX_FREQUENCY_HZ),
    )


@router.get("/settings", summary="Admin: the effective settings, secrets masked (read-only)")
async def get_settings(_admin: AdminUser, runtime: RuntimeDep) -> dict[str, Any]:
    """As `mcgw config show --json`: every setting by group; secrets and URL passwords masked."""
    return public_settings(runtime.settings)
