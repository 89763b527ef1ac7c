"""Bodies of the radios route: the Bluetooth health view, per radio and per device link.

The figures are ``gateway.radio_report``'s (one snapshot for the route, /metrics and the web
page), read field by field (``model_validate(report, from_attributes=True)``); this module only
describes them for the API. It decides nothing about a radio's health.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.fields import examples
from gateway.states import DeviceState

RadioStateText = Literal["up", "down", "reopening", "unknown"]


class RadioPublic(BaseModel):
    """One radio of the hub."""

    name: str = Field(description="radio0, radio1... in the order of the --ble list")
    mode: str = Field(description="As configured: hci:tcp-client:127.0.0.1:9100, bluez:hci0, sim:2")
    address: str | None = Field(
        description="The radio's own Bluetooth address when known (null for BlueZ's adapter)"
    )
    state: RadioStateText = Field(
        description="up; down (lost, waiting to reopen); reopening; unknown (BlueZ owns it)"
    )
    slots: int = Field(description="Connection slots configured for this radio")
    slots_used: int = Field(
        description="Slots held now: from a connect attempt until that link is gone"
    )
    slots_free: int
    adverts_per_s: float = Field(description="Advertisements heard per second, lately")
    connect_attempts: int = Field(description="Connect attempts since the hub started")
    connect_failures: int = Field(description="Connect attempts that failed since the hub started")
    reopens: int = Field(description="Times its transport was reopened after a loss")
    last_error: str | None = Field(description="Why it last went down or failed to reopen")


class DeviceLinkPublic(BaseModel):
    """One managed device's link."""

    address: str
    name: str
    state: DeviceState
    radio: str | None = Field(
        description="The radio its link or connect attempt uses (a radio's name); null while none"
    )
    signal_dbm: int | None = Field(
        description="Last signal strength heard, from the link or adverts"
    )
    mtu: int | None = Field(description="The link's ATT MTU, while connected and known")
    reconnects: int = Field(description="Links to it lost and made again since the hub started")
    last_disconnect_reason: str | None


_EXAMPLE = {
    "radios": [
        {
            "name": "radio0",
            "mode": "hci:tcp-client:127.0.0.1:9100",
            "address": "F0:F1:F2:F3:F4:F5",
            "state": "up",
            "slots": 7,
            "slots_used": 2,
            "slots_free": 5,
            "adverts_per_s": 98.5,
            "connect_attempts": 3,
            "connect_failures": 1,
            "reopens": 0,
            "last_error": None,
        }
    ],
    "devices": [
        {
            "address": "C0:4D:43:00:00:00",
            "name": "MC-0",
            "state": "bonded",
            "radio": "radio0",
            "signal_dbm": -58,
            "mtu": 247,
            "reconnects": 1,
            "last_disconnect_reason": "link lost: radio1 went down",
        }
    ],
}


class RadiosPublic(BaseModel):
    model_config = examples(_EXAMPLE)

    radios: list[RadioPublic]
    devices: list[DeviceLinkPublic] = Field(description="Every device the hub looks after")
