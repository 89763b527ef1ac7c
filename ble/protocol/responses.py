"""What a device answers: command responses, its status and its limits.

:class:`Response` (ACK/NACK by indication), :class:`DeviceStatus` (read and notified),
:class:`DeviceLimits` (read once at connect), and :func:`decode_notification`, which decodes any
device -> gateway frame (telemetry included) by its opcode.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Self

from ble.errors import ProtocolError
from ble.protocol.constants import NO_SEGMENT, PROTOCOL_VERSION
from ble.protocol.enums import DeviceState, FaultFlags, Opcode, Status
from ble.protocol.fields import (
    check_percent,
    check_version,
    enum_field,
    pack_fields,
    unpack_frame,
)
from ble.protocol.telemetry import Telemetry

_RESPONSE = struct.Struct("<BBHBBB")


@dataclass(frozen=True, slots=True)
class Response:
    """ACK (status OK) or NACK of one command, sent by indication on the response characteristic."""

    seq: int
    request_opcode: int
    status: Status
    queue_free: int = 0
    """Free places in the play queue after the command."""

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def __bytes__(self) -> bytes:
        data = pack_fields(
            _RESPONSE.format,
            PROTOCOL_VERSION,
            Opcode.RESPONSE,
            self.seq,
            self.request_opcode,
            self.status,
            self.queue_free,
        )
        enum_field(Status, self.status, "status")
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        _, _, seq, request, status, free = unpack_frame(data, Opcode.RESPONSE, _RESPONSE)
        return cls(seq, request, enum_field(Status, status, "status"), free)


_STATUS = struct.Struct("<BBBBBBBH")


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """Value of the status characteristic (read, and notified on every state change)."""

    state: DeviceState
    faults: FaultFlags
    battery_pct: int
    queue_length: int
    intensity_pct: int
    current_segment: int = NO_SEGMENT

    def _validate(self) -> None:
        enum_field(DeviceState, self.state, "device state")
        check_percent(self.battery_pct, "battery")
        check_percent(self.intensity_pct, "intensity")

    def __bytes__(self) -> bytes:
        data = pack_fields(
            _STATUS.format,
            PROTOCOL_VERSION,
            Opcode.STATUS,
            self.state,
            self.faults,
            self.battery_pct,
            self.queue_length,
            self.intensity_pct,
            self.current_segment,
        )
        self._validate()
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        _, _, state, faults, battery, queue, intensity, segment = unpack_frame(
            data, Opcode.STATUS, _STATUS
        )
        check_percent(battery, "battery")
        check_percent(intensity, "intensity")
        return cls(
            enum_field(DeviceState, state, "device state"),
            FaultFlags(faults),
            battery,
            queue,
            intensity,
            segment,
        )


_LIMITS = struct.Struct("<BBBHHHHHBHHB")


@dataclass(frozen=True, slots=True)
class DeviceLimits:
    """Value of the limits characteristic: what the firmware will accept."""

    protocol_version: int
    hard_cap_ua: int
    frequency_min_dhz: int
    frequency_max_dhz: int
    pulse_width_min_us: int
    pulse_width_max_us: int
    queue_depth: int
    lease_ms: int
    max_segment_ms: int
    telemetry_max_hz: int

    def _validate(self) -> None:
        if self.frequency_min_dhz > self.frequency_max_dhz:
            raise ProtocolError("LIMITS frequency range is inverted")
        if self.pulse_width_min_us > self.pulse_width_max_us:
            raise ProtocolError("LIMITS pulse-width range is inverted")
        if self.queue_depth == 0 or self.lease_ms == 0:
            raise ProtocolError("LIMITS queue depth and lease must be positive")

    def __bytes__(self) -> bytes:
        data = pack_fields(
            _LIMITS.format,
            PROTOCOL_VERSION,
            Opcode.LIMITS,
            self.protocol_version,
            self.hard_cap_ua,
            self.frequency_min_dhz,
            self.frequency_max_dhz,
            self.pulse_width_min_us,
            self.pulse_width_max_us,
            self.queue_depth,
            self.lease_ms,
            self.max_segment_ms,
            self.telemetry_max_hz,
        )
        self._validate()
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        values = unpack_frame(data, Opcode.LIMITS, _LIMITS)[2:]
        limits = cls(*values)
        limits._validate()
        return limits


Frame = Response | Telemetry | DeviceStatus | DeviceLimits


def decode_notification(data: bytes) -> Frame:
    """Decode any device -> gateway frame by its opcode."""
    data = bytes(data)
    check_version(data)
    opcode = data[1]
    decoder: type[Response] | type[Telemetry] | type[DeviceStatus] | type[DeviceLimits]
    if opcode == Opcode.RESPONSE:
        decoder = Response
    elif opcode == Opcode.TELEMETRY:
        decoder = Telemetry
    elif opcode == Opcode.STATUS:
        decoder = DeviceStatus
    elif opcode == Opcode.LIMITS:
        decoder = DeviceLimits
    else:
        raise ProtocolError(f"unknown notification opcode 0x{opcode:02x}")
    return decoder.from_bytes(data)
