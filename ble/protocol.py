"""Codec for the Microcurrent GATT profile v1 (docs/protocol.md).

Every message the gateway and a device exchange is a frozen dataclass with ``__bytes__`` (encode)
and ``from_bytes`` (decode). The same codec is used by the gateway's link and by the simulated
device, so both ends agree by construction.

This module opens no socket and imports neither bleak, bumble nor asyncio: it is pure and is
tested byte for byte against the golden vectors in docs/protocol.md. Decoding malformed input
raises only :class:`ProtocolError`; encoding a value that does not fit its field, or that the
decoder would refuse (an unknown enum value, a percentage above 100, inverted limits), raises
:class:`ProtocolError` too, so a bad value is never silently truncated on the air and one end
never sends what the other must drop.

Framing (all integers little-endian)::

    version:u8  opcode:u8  seq:u16  payload...      (control point writes, responses)
    version:u8  opcode:u8  payload...               (telemetry, status, limits)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import ClassVar, Self, TypeVar

from ble.errors import ProtocolError

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
"""Frequencies travel in tenths of a hertz."""


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


def _pack(fmt: str, *values: int) -> bytes:
    try:
        return struct.pack(fmt, *values)
    except struct.error as exc:
        raise ProtocolError(f"value does not fit its field ({fmt!r}): {values!r}") from exc


_E = TypeVar("_E", bound=IntEnum)


def _enum(kind: type[_E], value: int, what: str) -> _E:
    try:
        return kind(value)
    except (ValueError, TypeError):
        shown = f"0x{value:02x}" if isinstance(value, int) else repr(value)
        raise ProtocolError(f"unknown {what} {shown}") from None


def _percent(value: int, what: str) -> None:
    # Only called on values that already packed into an unsigned field, so never negative.
    if value > 100:
        raise ProtocolError(f"{what} {value} is above 100 %")


def _check_version(data: bytes) -> None:
    if len(data) < 2:
        raise ProtocolError(f"frame of {len(data)} bytes is shorter than its 2-byte header")
    if data[0] != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {data[0]} is not supported (this is v1)")


# --- commands (gateway -> device, written to the control point) ----------------------------------

_CMD_HEADER = struct.Struct("<BBH")


@dataclass(frozen=True, slots=True)
class Command:
    """Base of every control-point command: version, opcode, sequence number.

    ``seq`` defaults to 0 because a command built for sending leaves it out:
    :meth:`ble.link.DeviceLink.send` stamps the link's next sequence number on a copy. Pass the
    payload fields by keyword (``SetIntensity(percent=60, ramp_ms=1500)``) so a value is never
    taken for the sequence number; decoders and golden vectors give ``seq`` explicitly.
    """

    OPCODE: ClassVar[Opcode]
    _BODY: ClassVar[struct.Struct] = struct.Struct("<")

    seq: int = 0

    def _fields(self) -> tuple[int, ...]:
        return ()

    def _validate(self) -> None:
        """Check what the field widths alone do not (enum members); the decoder checks the same."""

    def __bytes__(self) -> bytes:
        body = self._fields()
        try:
            data = _CMD_HEADER.pack(PROTOCOL_VERSION, self.OPCODE, self.seq) + self._BODY.pack(
                *body
            )
        except struct.error as exc:
            raise ProtocolError(f"{type(self).__name__} field out of range: {self!r}") from exc
        self._validate()
        return data

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        if len(body) != cls._BODY.size:
            raise ProtocolError(
                f"{cls.OPCODE.name} payload is {len(body)} bytes, expected {cls._BODY.size}"
            )
        command = cls(seq, *cls._BODY.unpack(body))
        command._validate()
        return command

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode this exact command type; raise ProtocolError on anything else."""
        command = decode_command(data)
        if not isinstance(command, cls):
            raise ProtocolError(f"expected {cls.__name__}, got {type(command).__name__}")
        return command


@dataclass(frozen=True, slots=True)
class Hello(Command):
    """Version handshake: the highest protocol version the gateway speaks."""

    OPCODE = Opcode.HELLO
    _BODY = struct.Struct("<B")
    max_version: int = PROTOCOL_VERSION

    def _fields(self) -> tuple[int, ...]:
        return (self.max_version,)


@dataclass(frozen=True, slots=True)
class QueueSegment(Command):
    """Append one segment of output to the device's play queue."""

    OPCODE = Opcode.QUEUE_SEGMENT
    _BODY = struct.Struct("<HBBHHHHH")
    segment_id: int = 0
    zone: Zone = Zone.FOREHEAD
    waveform: Waveform = Waveform.SQUARE_BIPHASIC
    frequency_dhz: int = 0
    """Pulse frequency in tenths of a hertz (0.1-6553.5 Hz)."""
    amplitude_ua: int = 0
    pulse_width_us: int = 0
    duration_ms: int = 0
    ramp_ms: int = 0
    """Ramp time from zero (or from a lower amplitude) to ``amplitude_ua``."""

    def _fields(self) -> tuple[int, ...]:
        return (
            self.segment_id,
            self.zone,
            self.waveform,
            self.frequency_dhz,
            self.amplitude_ua,
            self.pulse_width_us,
            self.duration_ms,
            self.ramp_ms,
        )

    def _validate(self) -> None:
        _enum(Zone, self.zone, "zone")
        _enum(Waveform, self.waveform, "waveform")

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        if len(body) != cls._BODY.size:
            raise ProtocolError(f"QUEUE_SEGMENT payload is {len(body)} bytes, expected 14")
        sid, zone, wave, freq, amp, width, duration, ramp = cls._BODY.unpack(body)
        return cls(
            seq,
            sid,
            _enum(Zone, zone, "zone"),
            _enum(Waveform, wave, "waveform"),
            freq,
            amp,
            width,
            duration,
            ramp,
        )


@dataclass(frozen=True, slots=True)
class Start(Command):
    """Start playing the queue (ramping up from zero)."""

    OPCODE = Opcode.START


@dataclass(frozen=True, slots=True)
class Pause(Command):
    """Hold output at zero, keeping the queue and the playback position."""

    OPCODE = Opcode.PAUSE


@dataclass(frozen=True, slots=True)
class Resume(Command):
    """Continue after a pause, ramping from zero over ``ramp_ms``."""

    OPCODE = Opcode.RESUME
    _BODY = struct.Struct("<H")
    ramp_ms: int = 1000

    def _fields(self) -> tuple[int, ...]:
        return (self.ramp_ms,)


@dataclass(frozen=True, slots=True)
class Stop(Command):
    """Output off at once and clear the queue. Always accepted, in every state."""

    OPCODE = Opcode.STOP


@dataclass(frozen=True, slots=True)
class SetIntensity(Command):
    """Scale every amplitude by ``percent`` (0-100); increases ramp, decreases are immediate."""

    OPCODE = Opcode.SET_INTENSITY
    _BODY = struct.Struct("<BH")
    percent: int = 100
    ramp_ms: int = 1000

    def _fields(self) -> tuple[int, ...]:
        return (self.percent, self.ramp_ms)


@dataclass(frozen=True, slots=True)
class Keepalive(Command):
    """Renew the lease; carries nothing else."""

    OPCODE = Opcode.KEEPALIVE


@dataclass(frozen=True, slots=True)
class SetTelemetryRate(Command):
    """Telemetry sample rate and how many samples to pack into one notification."""

    OPCODE = Opcode.SET_TELEMETRY_RATE
    _BODY = struct.Struct("<BB")
    rate_hz: int = 50
    samples_per_notification: int = 1

    def _fields(self) -> tuple[int, ...]:
        return (self.rate_hz, self.samples_per_notification)


@dataclass(frozen=True, slots=True)
class ClearFault(Command):
    """Leave FAULT for IDLE once every fault cause is gone."""

    OPCODE = Opcode.CLEAR_FAULT


_COMMANDS: dict[int, type[Command]] = {
    cls.OPCODE: cls
    for cls in (
        Hello,
        QueueSegment,
        Start,
        Pause,
        Resume,
        Stop,
        SetIntensity,
        Keepalive,
        SetTelemetryRate,
        ClearFault,
    )
}


def decode_command(data: bytes) -> Command:
    """Decode any control-point write; raise ProtocolError if it is not a valid v1 command."""
    data = bytes(data)
    _check_version(data)
    if len(data) < _CMD_HEADER.size:
        raise ProtocolError(f"command of {len(data)} bytes is shorter than its 4-byte header")
    _, opcode, seq = _CMD_HEADER.unpack_from(data)
    cls = _COMMANDS.get(opcode)
    if cls is None:
        raise ProtocolError(f"unknown command opcode 0x{opcode:02x}")
    return cls._from_body(seq, data[_CMD_HEADER.size :])


def command_header(data: bytes) -> tuple[int, int] | None:
    """Return (opcode, seq) of a command frame whose payload may be malformed, or None.

    Lets a device NACK a malformed command with the right sequence number.
    """
    if len(data) < _CMD_HEADER.size:
        return None
    _, opcode, seq = _CMD_HEADER.unpack_from(data)
    return opcode, seq


# --- device -> gateway ---------------------------------------------------------------------------

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
        data = _pack(
            _RESPONSE.format,
            PROTOCOL_VERSION,
            Opcode.RESPONSE,
            self.seq,
            self.request_opcode,
            self.status,
            self.queue_free,
        )
        _enum(Status, self.status, "status")
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        data = bytes(data)
        _check_version(data)
        if data[1] != Opcode.RESPONSE:
            raise ProtocolError(f"expected a RESPONSE frame, got opcode 0x{data[1]:02x}")
        if len(data) != _RESPONSE.size:
            raise ProtocolError(f"RESPONSE is {len(data)} bytes, expected {_RESPONSE.size}")
        _, _, seq, request, status, free = _RESPONSE.unpack(data)
        return cls(seq, request, _enum(Status, status, "status"), free)


_SAMPLE = struct.Struct("<HIBHHHHHBBhB")
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
        _enum(DeviceState, self.state, "device state")
        _percent(self.contact_quality, "contact quality")
        _percent(self.battery_pct, "battery")

    def pack(self) -> bytes:
        """The sample's 22 bytes; raise ProtocolError for a value the decoder would refuse."""
        data = _pack(
            _SAMPLE.format,
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
        self._validate()
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
        _percent(contact, "contact quality")
        _percent(battery, "battery")
        return cls(
            frame,
            time_ms,
            _enum(DeviceState, state, "device state"),
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
        head = bytes((PROTOCOL_VERSION, Opcode.TELEMETRY, count))
        return head + b"".join(sample.pack() for sample in self.samples)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        data = bytes(data)
        _check_version(data)
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
        return cls(
            tuple(
                TelemetrySample.unpack(data, TELEMETRY_HEADER_SIZE + i * TELEMETRY_SAMPLE_SIZE)
                for i in range(count)
            )
        )


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
        _enum(DeviceState, self.state, "device state")
        _percent(self.battery_pct, "battery")
        _percent(self.intensity_pct, "intensity")

    def __bytes__(self) -> bytes:
        data = _pack(
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
        data = bytes(data)
        _check_version(data)
        if data[1] != Opcode.STATUS:
            raise ProtocolError(f"expected a STATUS frame, got opcode 0x{data[1]:02x}")
        if len(data) != _STATUS.size:
            raise ProtocolError(f"STATUS is {len(data)} bytes, expected {_STATUS.size}")
        _, _, state, faults, battery, queue, intensity, segment = _STATUS.unpack(data)
        _percent(battery, "battery")
        _percent(intensity, "intensity")
        return cls(
            _enum(DeviceState, state, "device state"),
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
        data = _pack(
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
        data = bytes(data)
        _check_version(data)
        if data[1] != Opcode.LIMITS:
            raise ProtocolError(f"expected a LIMITS frame, got opcode 0x{data[1]:02x}")
        if len(data) != _LIMITS.size:
            raise ProtocolError(f"LIMITS is {len(data)} bytes, expected {_LIMITS.size}")
        values = _LIMITS.unpack(data)[2:]
        limits = cls(*values)
        limits._validate()
        return limits


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
        data = _pack("<BBBB", self.model, self.state, self.battery_pct, self.protocol_version)
        _enum(DeviceState, self.state, "device state")
        _percent(self.battery_pct, "battery")
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        data = bytes(data)
        if len(data) != MANUFACTURER_DATA_SIZE:
            raise ProtocolError(
                f"manufacturer data is {len(data)} bytes, expected {MANUFACTURER_DATA_SIZE}"
            )
        model, state, battery, version = data
        _percent(battery, "battery")
        return cls(model, _enum(DeviceState, state, "device state"), battery, version)


Frame = Response | Telemetry | DeviceStatus | DeviceLimits


def decode_notification(data: bytes) -> Frame:
    """Decode any device -> gateway frame by its opcode."""
    data = bytes(data)
    _check_version(data)
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
