"""Checks every frame of the codec shares: fields that fit, known enum values, percentages, version.

Used by the frame modules of this package only; not part of the codec's public names.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import TypeVar

from ble.errors import ProtocolError
from ble.protocol.constants import PROTOCOL_VERSION


def pack_fields(layout: struct.Struct | str, *values: int) -> bytes:
    """``struct.pack`` that raises ProtocolError for a value that does not fit its field."""
    try:
        if isinstance(layout, struct.Struct):
            return layout.pack(*values)
        return struct.pack(layout, *values)
    except struct.error as exc:
        fmt = layout.format if isinstance(layout, struct.Struct) else layout
        raise ProtocolError(f"value does not fit its field ({fmt!r}): {values!r}") from exc


_E = TypeVar("_E", bound=IntEnum)


def enum_field(kind: type[_E], value: int, what: str) -> _E:
    """``kind(value)``, or ProtocolError naming the unknown ``what``."""
    try:
        return kind(value)
    except (ValueError, TypeError):
        shown = f"0x{value:02x}" if isinstance(value, int) else repr(value)
        raise ProtocolError(f"unknown {what} {shown}") from None


def check_percent(value: int, what: str) -> None:
    """ProtocolError for a percentage above 100."""
    # Only called on values that already packed into an unsigned field, so never negative.
    if value > 100:
        raise ProtocolError(f"{what} {value} is above 100 %")


def check_version(data: bytes) -> None:
    """ProtocolError unless ``data`` starts with a v1 header (version byte, opcode byte)."""
    if len(data) < 2:
        raise ProtocolError(f"frame of {len(data)} bytes is shorter than its 2-byte header")
    if data[0] != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {data[0]} is not supported (this is v1)")


def unpack_frame(data: bytes, opcode: IntEnum, layout: struct.Struct) -> tuple[int, ...]:
    """The fields of a fixed-size device frame (its 2-byte header included), or ProtocolError
    for another version, another opcode or another length."""
    data = bytes(data)
    check_version(data)
    if data[1] != opcode:
        raise ProtocolError(f"expected a {opcode.name} frame, got opcode 0x{data[1]:02x}")
    if len(data) != layout.size:
        raise ProtocolError(f"{opcode.name} is {len(data)} bytes, expected {layout.size}")
    return layout.unpack(data)
