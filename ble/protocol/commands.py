"""Commands: what the gateway writes to a device's control point (profile v1).

Each command is a frozen dataclass with ``__bytes__`` and ``from_bytes``; :func:`decode_command`
decodes any of them by opcode (the simulated device's side). Sequence numbers are the link's
business (``DeviceLink.send`` stamps them), not the caller's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, Self

from ble.errors import ProtocolError
from ble.protocol.constants import PROTOCOL_VERSION
from ble.protocol.enums import Opcode, Waveform, Zone
from ble.protocol.fields import check_version, enum_field

_CMD_HEADER = struct.Struct("<BBH")


@dataclass(frozen=True, slots=True)
class Command:
    """Base of every control-point command: version, opcode, sequence number.

    ``seq`` is keyword-only and defaults to 0 because a command built for sending leaves it out:
    :meth:`ble.link.DeviceLink.send` stamps the link's next sequence number on a copy. Being
    keyword-only, it can never take a payload value by position (``Resume(1000)`` is a ramp of
    1000 ms, not sequence number 1000); decoders and golden vectors give ``seq=`` explicitly.
    """

    OPCODE: ClassVar[Opcode]
    _BODY: ClassVar[struct.Struct] = struct.Struct("<")

    seq: int = field(default=0, kw_only=True)

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
        command = cls(*cls._BODY.unpack(body), seq=seq)
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
        enum_field(Zone, self.zone, "zone")
        enum_field(Waveform, self.waveform, "waveform")

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        if len(body) != cls._BODY.size:
            raise ProtocolError(f"QUEUE_SEGMENT payload is {len(body)} bytes, expected 14")
        sid, zone, wave, freq, amp, width, duration, ramp = cls._BODY.unpack(body)
        return cls(
            sid,
            enum_field(Zone, zone, "zone"),
            enum_field(Waveform, wave, "waveform"),
            freq,
            amp,
            width,
            duration,
            ramp,
            seq=seq,
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
    check_version(data)
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
