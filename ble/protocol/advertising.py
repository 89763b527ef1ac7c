"""The manufacturer-specific advertising data of a device (after the company id)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Self

from ble.errors import ProtocolError
from ble.protocol.constants import PROTOCOL_VERSION
from ble.protocol.enums import DeviceState
from ble.protocol.fields import check_percent, enum_field, pack_fields

_ADVERT = struct.Struct("<HBBBB")
MANUFACTURER_DATA_SIZE = _ADVERT.size - 2
"""Bytes after the company id in the manufacturer-specific advertising data."""


@dataclass(frozen=True, slots=True)
class AdvertData:
    """Manufacturer-specific advertising data (after the 2-byte company id)."""

    model: int
    state: DeviceState
    battery_pct: int
    protocol_version: int = PROTOCOL_VERSION

    def __bytes__(self) -> bytes:
        data = pack_fields("<BBBB", self.model, self.state, self.battery_pct, self.protocol_version)
        enum_field(DeviceState, self.state, "device state")
        check_percent(self.battery_pct, "battery")
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        data = bytes(data)
        if len(data) != MANUFACTURER_DATA_SIZE:
            raise ProtocolError(
                f"manufacturer data is {len(data)} bytes, expected {MANUFACTURER_DATA_SIZE}"
            )
        model, state, battery, version = data
        check_percent(battery, "battery")
        return cls(model, enum_field(DeviceState, state, "device state"), battery, version)
