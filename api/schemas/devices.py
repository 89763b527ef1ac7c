"""Bodies of the device routes: a device as a user sees it, renaming, claiming, scanning.

This module checks shapes only; what a user may see of a device is ``gateway.access``'s.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.fields import EXAMPLE_NOW, EXAMPLE_SESSION_ID, DbId, Input, Name, examples


class DevicePublic(BaseModel):
    model_config = examples(
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
            "active_session_id": EXAMPLE_SESSION_ID,
            "last_seen": EXAMPLE_NOW,
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
    model_config = examples({"name": "Bathroom toner"})

    name: Name


class OwnerChange(Input):
    """Admin: the user the device belongs to from now on; null releases it (unclaimed)."""

    model_config = examples({"user_id": 2}, {"user_id": None})

    user_id: DbId | None


class ScanRequest(Input):
    model_config = examples({"timeout_s": 2.0})

    timeout_s: float = Field(default=2.0, ge=0.2, le=10.0)
