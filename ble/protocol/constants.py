"""Constants of the Microcurrent GATT profile v1: version, UUIDs, field sentinels and units.

Facts of the protocol that are not frames (docs/protocol.md): defined here once, for the
gateway, storage and the simulated device alike. Nothing here encodes or decodes.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1

# 128-bit UUIDs of the microcurrent service: 6d63XXXX-9e57-4c2b-8f6a-1d0c5e3b7a90.
_UUID_TEMPLATE = "6d63{:04x}-9e57-4c2b-8f6a-1d0c5e3b7a90"
SERVICE_UUID = _UUID_TEMPLATE.format(0x0001)
CONTROL_POINT_UUID = _UUID_TEMPLATE.format(0x0002)
RESPONSE_UUID = _UUID_TEMPLATE.format(0x0003)
TELEMETRY_UUID = _UUID_TEMPLATE.format(0x0004)
STATUS_UUID = _UUID_TEMPLATE.format(0x0005)
LIMITS_UUID = _UUID_TEMPLATE.format(0x0006)

DEVICE_INFORMATION_SERVICE_UUID = "0000180a-0000-1000-8000-00805f9b34fb"
MANUFACTURER_NAME_UUID = "00002a29-0000-1000-8000-00805f9b34fb"
MODEL_NUMBER_UUID = "00002a24-0000-1000-8000-00805f9b34fb"
SERIAL_NUMBER_UUID = "00002a25-0000-1000-8000-00805f9b34fb"
FIRMWARE_REVISION_UUID = "00002a26-0000-1000-8000-00805f9b34fb"
BATTERY_SERVICE_UUID = "0000180f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL_UUID = "00002a19-0000-1000-8000-00805f9b34fb"

# Bluetooth SIG company identifier reserved for testing; a production device uses its own.
COMPANY_ID = 0xFFFF

NO_SEGMENT = 0xFFFF
"""Segment id reported in telemetry while nothing is playing."""

IMPEDANCE_OPEN = 0xFFFF
"""Load impedance field value for an open circuit (electrodes off the skin)."""

IMPEDANCE_UNIT_OHM = 10
"""The load impedance field counts in units of 10 Ω."""

FREQUENCY_UNIT_HZ = 0.1

DEVICE_TIME_MOD = 1 << 32
"""A sample's ``device_time_ms`` is a u32 that wraps: differences are taken modulo this."""
