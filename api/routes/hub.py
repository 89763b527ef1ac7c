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

from api.auth import AdminUser, CurrentUser, RuntimeDep
from api.routes.health import api_version
from api.schemas.hub import HubPublic
from gateway.config import public_settings
from gateway.programs import MAX_FREQUENCY_HZ, MAX_STEP_S, MIN_FREQUENCY_HZ, MIN_STEP_S

router = APIRouter(prefix="/hub", tags=["hub"])


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
        step_min_s=MIN_STEP_S,
        step_max_s=MAX_STEP_S,
        frequency_min_hz=MIN_FREQUENCY_HZ,
        frequency_max_hz=MAX_FREQUENCY_HZ,
    )


_SETTINGS_EXAMPLE: dict[str, Any] = {
    "hub_id": "bathroom-pi",
    "token_pepper": "***",
    "ble": {"mode": "sim:2", "connection_slots": 7, "telemetry_hz": 50},
    "safety": {"hub_cap_ua": 400, "max_session_min": 20},
    "api": {"host": "0.0.0.0", "port": 8420},  # noqa: S104 - an example of the setting
}


@router.get(
    "/settings",
    summary="Admin: the effective settings, secrets masked (read-only)",
    responses={200: {"content": {"application/json": {"example": _SETTINGS_EXAMPLE}}}},
)
async def get_settings(_admin: AdminUser, runtime: RuntimeDep) -> dict[str, Any]:
    """As `mcgw config show --json`: every setting by group; secrets and URL passwords masked."""
    return public_settings(runtime.settings)
