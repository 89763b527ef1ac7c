"""Bodies of the hub route: the caps and limits a program is held to on this hub.

This module checks shapes only; the caps themselves are ``gateway.config``'s.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from api.schemas.fields import examples


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
            "step_min_s": 5,
            "step_max_s": 600,
            "frequency_min_hz": 0.5,
            "frequency_max_hz": 1000.0,
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
    step_min_s: int = Field(description="The shortest step, seconds.")
    step_max_s: int
    frequency_min_hz: float
    frequency_max_hz: float
