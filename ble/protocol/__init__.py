"""Codec for the Microcurrent GATT profile v1 (docs/protocol.md).

Every message the gateway and a device exchange is a frozen dataclass with ``__bytes__`` (encode)
and ``from_bytes`` (decode). The same codec is used by the gateway's link and by the simulated
device, so both ends agree by construction. This package is the codec's entry point: import it
(``from ble import protocol as p``) and use the names it lists; its modules hold one concept each:

- ``constants``: version, UUIDs, field sentinels and units, the device-time modulus;
- ``enums``: opcodes, statuses, device states, zones, waveforms, fault flags (and their names);
- ``commands``: what the gateway writes to the control point;
- ``telemetry``: samples and telemetry notifications, and the sample records storage keeps;
- ``responses``: what the device answers (responses, status, limits), decoded by opcode;
- ``advertising``: the manufacturer data a device advertises;
- ``fields``: the checks every frame shares (not part of the public names).

The codec opens no socket and imports neither bleak, bumble nor asyncio: it is pure and is
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

from ble.protocol.advertising import (
    MANUFACTURER_DATA_SIZE,
    AdvertData,
)
from ble.protocol.commands import (
    ClearFault,
    Command,
    Hello,
    Keepalive,
    Pause,
    QueueSegment,
    Resume,
    SetIntensity,
    SetTelemetryRate,
    Start,
    Stop,
    command_header,
    decode_command,
)
from ble.protocol.constants import (
    BATTERY_LEVEL_UUID,
    BATTERY_SERVICE_UUID,
    COMPANY_ID,
    CONTROL_POINT_UUID,
    DEVICE_INFORMATION_SERVICE_UUID,
    DEVICE_TIME_MOD,
    FIRMWARE_REVISION_UUID,
    FREQUENCY_UNIT_HZ,
    IMPEDANCE_OPEN,
    IMPEDANCE_UNIT_OHM,
    LIMITS_UUID,
    MANUFACTURER_NAME_UUID,
    MODEL_NUMBER_UUID,
    NO_SEGMENT,
    PROTOCOL_VERSION,
    RESPONSE_UUID,
    SERIAL_NUMBER_UUID,
    SERVICE_UUID,
    STATUS_UUID,
    TELEMETRY_UUID,
)
from ble.protocol.enums import (
    STOPPING_FAULTS,
    DeviceState,
    FaultFlags,
    Opcode,
    Status,
    Waveform,
    Zone,
    fault_names,
)
from ble.protocol.responses import (
    DeviceLimits,
    DeviceStatus,
    Frame,
    Response,
    decode_notification,
)
from ble.protocol.telemetry import (
    MAX_SAMPLES_PER_NOTIFICATION,
    TELEMETRY_HEADER_SIZE,
    TELEMETRY_SAMPLE_SIZE,
    Telemetry,
    TelemetrySample,
    pack_samples,
    unpack_samples,
)

__all__ = [
    "BATTERY_LEVEL_UUID",
    "BATTERY_SERVICE_UUID",
    "COMPANY_ID",
    "CONTROL_POINT_UUID",
    "DEVICE_INFORMATION_SERVICE_UUID",
    "DEVICE_TIME_MOD",
    "FIRMWARE_REVISION_UUID",
    "FREQUENCY_UNIT_HZ",
    "IMPEDANCE_OPEN",
    "IMPEDANCE_UNIT_OHM",
    "LIMITS_UUID",
    "MANUFACTURER_DATA_SIZE",
    "MANUFACTURER_NAME_UUID",
    "MAX_SAMPLES_PER_NOTIFICATION",
    "MODEL_NUMBER_UUID",
    "NO_SEGMENT",
    "PROTOCOL_VERSION",
    "RESPONSE_UUID",
    "SERIAL_NUMBER_UUID",
    "SERVICE_UUID",
    "STATUS_UUID",
    "STOPPING_FAULTS",
    "TELEMETRY_HEADER_SIZE",
    "TELEMETRY_SAMPLE_SIZE",
    "TELEMETRY_UUID",
    "AdvertData",
    "ClearFault",
    "Command",
    "DeviceLimits",
    "DeviceState",
    "DeviceStatus",
    "FaultFlags",
    "Frame",
    "Hello",
    "Keepalive",
    "Opcode",
    "Pause",
    "QueueSegment",
    "Response",
    "Resume",
    "SetIntensity",
    "SetTelemetryRate",
    "Start",
    "Status",
    "Stop",
    "Telemetry",
    "TelemetrySample",
    "Waveform",
    "Zone",
    "command_header",
    "decode_command",
    "decode_notification",
    "fault_names",
    "pack_samples",
    "unpack_samples",
]
