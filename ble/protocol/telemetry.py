"""Telemetry: the samples a device notifies, one or more to a notification.

A :class:`TelemetrySample` is 22 bytes; a :class:`Telemetry` notification is a 3-byte header and
1-10 samples. :func:`pack_samples` / :func:`unpack_samples` give the samples as consecutive
records without the header: the layout storage keeps (gateway/storage/samples.py), so the
sample layout is written down here only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Self

from ble.errors import ProtocolError
from ble.protocol.constants import IMPEDANCE_OPEN, IMPEDANCE_UNIT_OHM, PROTOCOL_VERSION
from ble.protocol.enums import DeviceState, FaultFlags, Opcode
from ble.protocol.fields import check_percent, check_version, enum_field, pack_fields

_SAMPLE = struct.Struct("<HIBHHHHHBBhB")
_DEVICE_STATES = frozenset(DeviceState)
TELEMETRY_HEADER_SIZE = 3
TELEMETRY_SAMPLE_SIZE = _SAMPLE.size
MAX_SAMPLES_PER_NOTIFICATION = 10
"""What fits in one notification at an ATT MTU of 247 (244 bytes of value)."""


@dataclass(frozen=True, slots=True)
class TelemetrySample:
    """One measurement of the device's output and sensors."""

    frame: int
    """Frame counter, +1 per sample, wraps at 65536."""
    device_time_ms: int
    state: DeviceState
    segment_id: int
    segment_elapsed_ms: int
    current_mean_ua: int
    current_peak_ua: int
    impedance_10ohm: int
    """Load impedance in units of 10 Ω; IMPEDANCE_OPEN when off the skin."""
    contact_quality: int
    """0 (no contact) to 100 (excellent)."""
    battery_pct: int
    temperature_dc: int
    """Temperature in tenths of a degree Celsius (signed)."""
    faults: FaultFlags = FaultFlags.NONE

    @property
    def impedance_ohm(self) -> int | None:
        """Load impedance in ohms, or None for an open circuit."""
        if self.impedance_10ohm == IMPEDANCE_OPEN:
            return None
        return self.impedance_10ohm * IMPEDANCE_UNIT_OHM

    @property
    def temperature_c(self) -> float:
        return self.temperature_dc / 10

    def _validate(self) -> None:
        enum_field(DeviceState, self.state, "device state")
        check_percent(self.contact_quality, "contact quality")
        check_percent(self.battery_pct, "battery")

    def pack(self) -> bytes:
        """The sample's 22 bytes; raise ProtocolError for a value the decoder would refuse."""
        values = (
            self.frame,
            self.device_time_ms,
            self.state,
            self.segment_id,
            self.segment_elapsed_ms,
            self.current_mean_ua,
            self.current_peak_ua,
            self.impedance_10ohm,
            self.contact_quality,
            self.battery_pct,
            self.temperature_dc,
            self.faults,
        )
        try:
            data = _SAMPLE.pack(*values)
        except struct.error:
            pack_fields(_SAMPLE, *values)  # raises ProtocolError naming the values
            raise
        # Checked in one test for the common case: storage packs every sample it keeps, and a
        # sample costs about 0.15 us this way (bench/storage_ingest.py).
        if self.state not in _DEVICE_STATES or self.contact_quality > 100 or self.battery_pct > 100:
            self._validate()  # raises, naming the bad field
        return data

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> Self:
        """Decode the 22-byte sample at ``offset``; bytes after it are not looked at."""
        try:
            fields = _SAMPLE.unpack_from(data, offset)
        except struct.error as exc:
            raise ProtocolError(f"no whole telemetry sample at offset {offset}: {exc}") from exc
        (frame, time_ms, state, sid, elapsed, mean, peak, imp, contact, battery, temp, faults) = (
            fields
        )
        check_percent(contact, "contact quality")
        check_percent(battery, "battery")
        return cls(
            frame,
            time_ms,
            enum_field(DeviceState, state, "device state"),
            sid,
            elapsed,
            mean,
            peak,
            imp,
            contact,
            battery,
            temp,
            FaultFlags(faults),
        )


@dataclass(frozen=True, slots=True)
class Telemetry:
    """A telemetry notification: one or more samples in frame order."""

    samples: tuple[TelemetrySample, ...] = field(default_factory=tuple)

    def __bytes__(self) -> bytes:
        count = len(self.samples)
        if not 1 <= count <= MAX_SAMPLES_PER_NOTIFICATION:
            raise ProtocolError(
                f"a notification carries 1-{MAX_SAMPLES_PER_NOTIFICATION} samples, not {count}"
            )
        return bytes((PROTOCOL_VERSION, Opcode.TELEMETRY, count)) + pack_samples(self.samples)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        data = bytes(data)
        check_version(data)
        if data[1] != Opcode.TELEMETRY:
            raise ProtocolError(f"expected a TELEMETRY frame, got opcode 0x{data[1]:02x}")
        if len(data) < TELEMETRY_HEADER_SIZE:
            raise ProtocolError("TELEMETRY frame has no sample count")
        count = data[2]
        if not 1 <= count <= MAX_SAMPLES_PER_NOTIFICATION:
            raise ProtocolError(f"TELEMETRY sample count {count} is outside 1-10")
        expected = TELEMETRY_HEADER_SIZE + count * TELEMETRY_SAMPLE_SIZE
        if len(data) != expected:
            raise ProtocolError(
                f"TELEMETRY with {count} samples must be {expected} bytes, got {len(data)}"
            )
        return cls(tuple(unpack_samples(data[TELEMETRY_HEADER_SIZE:])))


def pack_samples(samples: Iterable[TelemetrySample]) -> bytes:
    """Samples as consecutive 22-byte records: a TELEMETRY payload after its header.

    Each is checked as :meth:`TelemetrySample.pack` checks it (ProtocolError).
    """
    return b"".join([sample.pack() for sample in samples])


def unpack_samples(data: bytes) -> list[TelemetrySample]:
    """Decode consecutive 22-byte sample records (the inverse of :func:`pack_samples`).

    Raises ProtocolError unless ``data`` is whole records of valid samples.
    """
    if len(data) % TELEMETRY_SAMPLE_SIZE:
        raise ProtocolError(
            f"{len(data)} bytes are not whole {TELEMETRY_SAMPLE_SIZE}-byte telemetry samples"
        )
    return [TelemetrySample.unpack(data, offset) for offset in range(0, len(data), _SAMPLE.size)]
