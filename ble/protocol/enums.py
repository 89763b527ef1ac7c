"""The enumerations of the profile v1: opcodes, statuses, device states, zones, waveforms, faults.

Each is an ``IntEnum``/``IntFlag`` whose values are the bytes on the air. Nothing here encodes
or decodes a frame; :func:`fault_names` is the one spelling of fault flags outside the codec
(lower-case names, as the API, storage exports and live telemetry show them).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class Opcode(IntEnum):
    """The first byte after the version: what a frame is."""

    HELLO = 0x01
    QUEUE_SEGMENT = 0x02
    START = 0x03
    PAUSE = 0x04
    RESUME = 0x05
    STOP = 0x06
    SET_INTENSITY = 0x07
    KEEPALIVE = 0x08
    SET_TELEMETRY_RATE = 0x09
    CLEAR_FAULT = 0x0A
    RESPONSE = 0x80
    TELEMETRY = 0x90
    STATUS = 0xA0
    LIMITS = 0xB0


class Status(IntEnum):
    """Result code of a command, carried in a :class:`Response`."""

    OK = 0x00
    UNSUPPORTED_VERSION = 0x01
    UNKNOWN_OPCODE = 0x02
    MALFORMED = 0x03
    ABOVE_HARD_CAP = 0x04
    OUT_OF_RANGE = 0x05
    QUEUE_FULL = 0x06
    BAD_STATE = 0x07
    FAULT_ACTIVE = 0x08
    CHARGING = 0x09
    REFUSED = 0x0A
    DUPLICATE_SEGMENT = 0x0B


class DeviceState(IntEnum):
    """The device state machine (docs/protocol.md, "State machine")."""

    IDLE = 0
    RUNNING = 1
    PAUSED = 2
    FAULT = 3
    CHARGING = 4


class Zone(IntEnum):
    """Face zones, in the order the protocol numbers them."""

    FOREHEAD = 1
    BROW = 2
    EYE_AREA = 3
    CHEEKS = 4
    JAWLINE = 5
    NECK = 6


class Waveform(IntEnum):
    """Output waveforms a device may play."""

    SQUARE_BIPHASIC = 1
    SQUARE_MONOPHASIC = 2
    SINE = 3
    TRIANGLE = 4


class FaultFlags(IntFlag):
    """Bit field of active fault and warning conditions."""

    NONE = 0
    OVER_CURRENT = 0x01
    OVER_TEMPERATURE = 0x02
    HARDWARE = 0x04
    CHARGING = 0x08
    LOW_BATTERY = 0x10
    LEASE_EXPIRED = 0x20


STOPPING_FAULTS = (
    FaultFlags.OVER_CURRENT
    | FaultFlags.OVER_TEMPERATURE
    | FaultFlags.HARDWARE
    | FaultFlags.CHARGING
)
"""Flags that put the device into FAULT or CHARGING and hold output off."""


_FAULT_NAMES = tuple((flag, (flag.name or "").lower()) for flag in FaultFlags if flag)


def fault_names(faults: int) -> tuple[str, ...]:
    """The lower-case names of the known flags set in ``faults``, in bit order."""
    return tuple(name for flag, name in _FAULT_NAMES if flag & faults)
