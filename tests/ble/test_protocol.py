"""The v1 codec (ble/protocol/) against docs/protocol.md and against its own invariants.

- Golden vectors: the table in docs/protocol.md is parsed and every row checked both ways against
  ``GOLDEN`` below, so the document, these tests and the codec cannot drift apart.
- Properties (hypothesis): every message round-trips over its full field ranges; arbitrary bytes
  make every decoder either succeed canonically or raise ProtocolError, never anything else; a
  valid frame with a byte more or a byte less is refused; encoding a value the decoder would
  refuse raises ProtocolError.
- Purity: the codec imports neither bleak, bumble nor asyncio (nor gateway/ or api/).
"""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ble import protocol
from ble.errors import ProtocolError
from ble.protocol import (
    COMPANY_ID,
    IMPEDANCE_OPEN,
    MAX_SAMPLES_PER_NOTIFICATION,
    NO_SEGMENT,
    SERVICE_UUID,
    TELEMETRY_HEADER_SIZE,
    TELEMETRY_SAMPLE_SIZE,
    AdvertData,
    ClearFault,
    Command,
    DeviceLimits,
    DeviceState,
    DeviceStatus,
    FaultFlags,
    Hello,
    Keepalive,
    Opcode,
    Pause,
    QueueSegment,
    Response,
    Resume,
    SetIntensity,
    SetTelemetryRate,
    Start,
    Status,
    Stop,
    Telemetry,
    TelemetrySample,
    Waveform,
    Zone,
    decode_command,
    decode_notification,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
CODEC = sorted((ROOT / "ble" / "protocol").glob("*.py"))

Message = Command | Response | Telemetry | DeviceStatus | DeviceLimits | AdvertData

COMMAND_TYPES: tuple[type[Command], ...] = (
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
FRAME_TYPES = (Response, Telemetry, DeviceStatus, DeviceLimits)

# Fast enough for the whole module to stay well under 10 s; deadline off for slow CI machines.
PROPERTY = settings(max_examples=200, deadline=None)
FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- golden vectors ------------------------------------------------------------------------------

IDLE_SAMPLE = TelemetrySample(
    frame=65535,
    device_time_ms=3600000,
    state=DeviceState.IDLE,
    segment_id=NO_SEGMENT,
    segment_elapsed_ms=0,
    current_mean_ua=0,
    current_peak_ua=0,
    impedance_10ohm=IMPEDANCE_OPEN,
    contact_quality=0,
    battery_pct=9,
    temperature_dc=-52,
    faults=FaultFlags.LOW_BATTERY | FaultFlags.LEASE_EXPIRED,
)
RUNNING_SAMPLE = TelemetrySample(
    frame=0,
    device_time_ms=123456,
    state=DeviceState.RUNNING,
    segment_id=1,
    segment_elapsed_ms=2500,
    current_mean_ua=348,
    current_peak_ua=352,
    impedance_10ohm=1250,
    contact_quality=92,
    battery_pct=87,
    temperature_dc=345,
)
CONTACT_LOST_SAMPLE = dataclasses.replace(
    RUNNING_SAMPLE,
    frame=1,
    device_time_ms=123476,
    current_mean_ua=0,
    current_peak_ua=0,
    impedance_10ohm=IMPEDANCE_OPEN,
    contact_quality=0,
)
"""20 ms later the electrodes are off the skin: no current, and the segment's clock stands still."""

GOLDEN: dict[str, Message] = {
    "hello": Hello(seq=1, max_version=1),
    "queue_segment": QueueSegment(
        seq=2,
        segment_id=1,
        zone=Zone.CHEEKS,
        waveform=Waveform.SQUARE_BIPHASIC,
        frequency_dhz=100,
        amplitude_ua=350,
        pulse_width_us=5000,
        duration_ms=30000,
        ramp_ms=1000,
    ),
    "queue_segment_sine": QueueSegment(
        seq=3,
        segment_id=2,
        zone=Zone.EYE_AREA,
        waveform=Waveform.SINE,
        frequency_dhz=50,
        amplitude_ua=150,
        pulse_width_us=10000,
        duration_ms=60000,
        ramp_ms=1000,
    ),
    "start": Start(seq=4),
    "pause": Pause(seq=5),
    "resume": Resume(seq=6, ramp_ms=1000),
    "stop": Stop(seq=7),
    "set_intensity": SetIntensity(seq=8, percent=60, ramp_ms=1500),
    "keepalive": Keepalive(seq=9),
    "keepalive_seq_max": Keepalive(seq=65535),
    "set_telemetry_rate": SetTelemetryRate(seq=10, rate_hz=50, samples_per_notification=5),
    "clear_fault": ClearFault(seq=11),
    "response_ack": Response(
        seq=2, request_opcode=Opcode.QUEUE_SEGMENT, status=Status.OK, queue_free=7
    ),
    "response_nack_above_hard_cap": Response(
        seq=12, request_opcode=Opcode.QUEUE_SEGMENT, status=Status.ABOVE_HARD_CAP, queue_free=8
    ),
    "response_nack_unknown_opcode": Response(
        seq=13, request_opcode=0x42, status=Status.UNKNOWN_OPCODE, queue_free=8
    ),
    "telemetry_one_sample": Telemetry(samples=(IDLE_SAMPLE,)),
    "telemetry_two_samples": Telemetry(samples=(RUNNING_SAMPLE, CONTACT_LOST_SAMPLE)),
    "status_running": DeviceStatus(
        state=DeviceState.RUNNING,
        faults=FaultFlags.NONE,
        battery_pct=87,
        queue_length=3,
        intensity_pct=80,
        current_segment=1,
    ),
    "status_fault": DeviceStatus(
        state=DeviceState.FAULT,
        faults=FaultFlags.OVER_TEMPERATURE | FaultFlags.LOW_BATTERY,
        battery_pct=9,
        queue_length=0,
        intensity_pct=100,
        current_segment=NO_SEGMENT,
    ),
    "limits": DeviceLimits(
        protocol_version=1,
        hard_cap_ua=500,
        frequency_min_dhz=1,
        frequency_max_dhz=10000,
        pulse_width_min_us=20,
        pulse_width_max_us=10000,
        queue_depth=8,
        lease_ms=1000,
        max_segment_ms=60000,
        telemetry_max_hz=100,
    ),
    "advert": AdvertData(model=1, state=DeviceState.IDLE, battery_pct=87, protocol_version=1),
}


def decode_any(message_type: type, data: bytes) -> object:
    """Decode ``data`` the way a receiver of ``message_type`` would (the generic decoder)."""
    if issubclass(message_type, Command):
        return decode_command(data)
    if message_type is AdvertData:
        return AdvertData.from_bytes(data)
    if message_type is TelemetrySample:
        if len(data) != TELEMETRY_SAMPLE_SIZE:
            raise ProtocolError(f"a sample is {TELEMETRY_SAMPLE_SIZE} bytes, not {len(data)}")
        return TelemetrySample.unpack(data)
    return decode_notification(data)


def encode(message: Any) -> bytes:
    if isinstance(message, TelemetrySample):
        return message.pack()
    return bytes(message)


_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def doc_golden_rows() -> list[tuple[str, str, str]]:
    """(name, python, hex) of every row of the golden-vector table in docs/protocol.md."""
    _, marker, table = doc_text().partition("<!-- golden-vectors -->")
    rows: list[tuple[str, str, str]] = []
    if not marker:
        return rows  # the coverage test then names every missing vector
    for line in table.strip().splitlines():
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("\\|", "|") for c in _UNESCAPED_PIPE.split(line)[1:-1]]
        if cells == ["name", "python", "hex"] or set("".join(cells)) <= set("-: "):
            continue
        name, python, hexes = (c.strip("`") for c in cells)
        rows.append((name, python, hexes))
    return rows


DOC_ROWS = doc_golden_rows()
DOC_VECTORS = {name: (python, hexes) for name, python, hexes in DOC_ROWS}
CODEC_NAMESPACE = {
    name: getattr(protocol, name) for name in dir(protocol) if not name.startswith("_")
}


def test_doc_golden_table_is_exactly_the_tested_vectors() -> None:
    names = [name for name, _, _ in DOC_ROWS]
    assert len(names) == len(set(names)), "duplicate names in the golden-vector table"
    assert len(names) >= 15
    assert set(names) == set(GOLDEN), (
        f"only in the doc: {sorted(set(names) - set(GOLDEN))}; "
        f"only in the tests: {sorted(set(GOLDEN) - set(names))}"
    )


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_vector(name: str) -> None:
    assert name in DOC_VECTORS, f"{name} is missing from the golden-vector table of {DOC}"
    message = GOLDEN[name]
    python, hexes = DOC_VECTORS[name]
    data = bytes.fromhex(hexes)
    assert eval(python, {"__builtins__": {}}, CODEC_NAMESPACE) == message, "python column"
    assert bytes(message) == data, f"the codec encodes {bytes(message).hex(' ')}"
    assert decode_any(type(message), data) == message
    assert type(message).from_bytes(data) == message


def test_golden_vectors_cover_every_frame_type() -> None:
    kinds = {type(message) for message in GOLDEN.values()}
    assert kinds >= {*COMMAND_TYPES, *FRAME_TYPES, AdvertData}
    responses = [m for m in GOLDEN.values() if isinstance(m, Response)]
    assert any(r.ok for r in responses)
    assert any(not r.ok for r in responses)
    assert any(isinstance(m, Telemetry) and len(m.samples) > 1 for m in GOLDEN.values())


def le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little", signed=value < 0)


def test_hand_built_frames_match_the_codec() -> None:
    """Bytes assembled field by field from the doc's byte tables, independently of the codec."""
    queue_segment = b"\x01\x02" + le(2, 2) + le(1, 2) + bytes([4, 1])
    queue_segment += le(100, 2) + le(350, 2) + le(5000, 2) + le(30000, 2) + le(1000, 2)
    assert bytes(GOLDEN["queue_segment"]) == queue_segment

    sample = le(65535, 2) + le(3600000, 4) + bytes([0]) + le(0xFFFF, 2) + le(0, 2)
    sample += le(0, 2) + le(0, 2) + le(0xFFFF, 2) + bytes([0, 9]) + le(-52, 2) + bytes([0x30])
    assert bytes(GOLDEN["telemetry_one_sample"]) == b"\x01\x90\x01" + sample

    limits = b"\x01\xb0\x01" + le(500, 2) + le(1, 2) + le(10000, 2) + le(20, 2) + le(10000, 2)
    limits += bytes([8]) + le(1000, 2) + le(60000, 2) + bytes([100])
    assert bytes(GOLDEN["limits"]) == limits


def test_doc_advertising_example() -> None:
    service = uuid.UUID(SERVICE_UUID).bytes[::-1]  # AD structures carry UUIDs little-endian
    advert = bytes(AdvertData(model=1, state=DeviceState.IDLE, battery_pct=87))
    data = b"\x02\x01\x06" + b"\x11\x07" + service + b"\x07\xff" + le(COMPANY_ID, 2) + advert
    assert len(data) <= 31
    example = re.search(r"<!-- advertising-data-example -->\n```\n(.*)\n```", doc_text())
    assert example is not None, "the advertising data example is missing from the doc"
    assert example[1] == data.hex(" ")


def test_doc_lists_every_uuid_and_code() -> None:
    doc = doc_text()
    for name in dir(protocol):
        if name.endswith("_UUID"):
            value = getattr(protocol, name)
            short = f"0x{uuid.UUID(value).int >> 96 & 0xFFFF:04X}"
            assert value in doc or short in doc, f"{name} ({value}) is not in the doc"
    for status in Status:
        assert re.search(rf"\| `0x{status:02x}` \| `{status.name}` \|", doc), status
    for flag in FaultFlags:
        if flag:
            assert re.search(rf"\| `0x{flag:02x}` \| `{flag.name}` \|", doc), flag
    for state in DeviceState:
        assert re.search(rf"\| `{state.name}` \| {state.value} \|", doc), state


def test_doc_frame_sizes() -> None:
    rows = re.findall(r"^\| `0x([0-9a-f]{2})` \| (\w+) \| [^|]+ \| ([^|]+) \|$", doc_text(), re.M)
    sizes = {Opcode(int(code, 16)): size.strip() for code, _, size in rows}
    assert set(sizes) == set(Opcode)
    for command_type in COMMAND_TYPES:
        assert sizes[command_type.OPCODE] == str(len(bytes(command_type(seq=0))))
    for name in ("queue_segment", "response_ack", "status_running", "limits"):
        message = GOLDEN[name]
        opcode = Opcode(bytes(message)[1])
        assert sizes[opcode] == str(len(bytes(message)))
    header, sample = TELEMETRY_HEADER_SIZE, TELEMETRY_SAMPLE_SIZE
    assert sizes[Opcode.TELEMETRY] == f"{header} + {sample} × count"
    # What one notification carries at the gateway's MTU of 247 (244 bytes of value).
    assert header + MAX_SAMPLES_PER_NOTIFICATION * sample <= 247 - 3
    assert header + (MAX_SAMPLES_PER_NOTIFICATION + 1) * sample > 247 - 3


# --- field specifications and strategies ---------------------------------------------------------

U8, U16, U32 = range(0x100), range(0x10000), range(0x1_0000_0000)
I16 = range(-0x8000, 0x8000)
PERCENT = range(101)
Spec = range | type[IntEnum]

SPECS: dict[type, dict[str, Spec]] = {
    Hello: {"seq": U16, "max_version": U8},
    QueueSegment: {
        "seq": U16,
        "segment_id": U16,
        "zone": Zone,
        "waveform": Waveform,
        "frequency_dhz": U16,
        "amplitude_ua": U16,
        "pulse_width_us": U16,
        "duration_ms": U16,
        "ramp_ms": U16,
    },
    Start: {"seq": U16},
    Pause: {"seq": U16},
    Resume: {"seq": U16, "ramp_ms": U16},
    Stop: {"seq": U16},
    SetIntensity: {"seq": U16, "percent": U8, "ramp_ms": U16},
    Keepalive: {"seq": U16},
    SetTelemetryRate: {"seq": U16, "rate_hz": U8, "samples_per_notification": U8},
    ClearFault: {"seq": U16},
    Response: {"seq": U16, "request_opcode": U8, "status": Status, "queue_free": U8},
    TelemetrySample: {
        "frame": U16,
        "device_time_ms": U32,
        "state": DeviceState,
        "segment_id": U16,
        "segment_elapsed_ms": U16,
        "current_mean_ua": U16,
        "current_peak_ua": U16,
        "impedance_10ohm": U16,
        "contact_quality": PERCENT,
        "battery_pct": PERCENT,
        "temperature_dc": I16,
        "faults": U8,
    },
    DeviceStatus: {
        "state": DeviceState,
        "faults": U8,
        "battery_pct": PERCENT,
        "queue_length": U8,
        "intensity_pct": PERCENT,
        "current_segment": U16,
    },
    DeviceLimits: {
        "protocol_version": U8,
        "hard_cap_ua": U16,
        "frequency_min_dhz": U16,
        "frequency_max_dhz": U16,
        "pulse_width_min_us": U16,
        "pulse_width_max_us": U16,
        "queue_depth": U8,
        "lease_ms": U16,
        "max_segment_ms": U16,
        "telemetry_max_hz": U8,
    },
    AdvertData: {"model": U8, "state": DeviceState, "battery_pct": PERCENT, "protocol_version": U8},
}


def in_spec(value: int, spec: Spec) -> bool:
    if isinstance(spec, range):
        return value in spec
    return value in {member.value for member in spec}


def cross_field_valid(message_type: type, values: dict[str, int]) -> bool:
    """Constraints between fields that the decoder enforces (only LIMITS has any)."""
    if message_type is not DeviceLimits:
        return True
    return (
        values["frequency_min_dhz"] <= values["frequency_max_dhz"]
        and values["pulse_width_min_us"] <= values["pulse_width_max_us"]
        and values["queue_depth"] >= 1
        and values["lease_ms"] >= 1
    )


def valid_value(spec: Spec) -> st.SearchStrategy[int]:
    if isinstance(spec, range):
        return st.integers(spec.start, spec.stop - 1)
    return st.sampled_from(list(spec))


def any_value(spec: Spec) -> st.SearchStrategy[int]:
    """Values in and out of the field's range, biased to its edges."""
    lo, hi = (spec.start, spec.stop - 1) if isinstance(spec, range) else (0, 0xFF)
    return st.one_of(
        valid_value(spec),
        st.sampled_from([lo - 1, lo, hi, hi + 1]),
        st.integers(-(2**40), 2**40),
    )


@st.composite
def valid_message(draw: st.DrawFn, message_type: type) -> Any:
    specs = SPECS[message_type]
    values = {name: draw(valid_value(spec)) for name, spec in specs.items()}
    if message_type is DeviceLimits:
        for low, high in (
            ("frequency_min_dhz", "frequency_max_dhz"),
            ("pulse_width_min_us", "pulse_width_max_us"),
        ):
            values[low], values[high] = sorted((values[low], values[high]))
        values["queue_depth"] = max(1, values["queue_depth"])
        values["lease_ms"] = max(1, values["lease_ms"])
    if "faults" in values:
        values["faults"] = FaultFlags(values["faults"])
    return message_type(**values)


commands = st.one_of([valid_message(t) for t in COMMAND_TYPES])
samples = valid_message(TelemetrySample)
telemetry = st.lists(samples, min_size=1, max_size=MAX_SAMPLES_PER_NOTIFICATION).map(
    lambda items: Telemetry(tuple(items))
)
notifications = st.one_of(
    valid_message(Response), telemetry, valid_message(DeviceStatus), valid_message(DeviceLimits)
)
adverts = valid_message(AdvertData)
messages = st.one_of(commands, notifications, adverts)


def test_specs_name_every_field() -> None:
    for message_type, specs in SPECS.items():
        assert [f.name for f in dataclasses.fields(message_type)] == list(specs), message_type


# --- round trips ---------------------------------------------------------------------------------


@PROPERTY
@given(commands)
def test_every_command_round_trips(command: Command) -> None:
    data = bytes(command)
    assert decode_command(data) == command
    assert type(command).from_bytes(data) == command
    assert bytes(decode_command(data)) == data


@PROPERTY
@given(notifications)
def test_every_device_frame_round_trips(frame: protocol.Frame) -> None:
    data = bytes(frame)
    assert decode_notification(data) == frame
    assert type(frame).from_bytes(data) == frame
    assert bytes(decode_notification(data)) == data


@PROPERTY
@given(adverts)
def test_advert_data_round_trips(advert: AdvertData) -> None:
    data = bytes(advert)
    assert len(data) == protocol.MANUFACTURER_DATA_SIZE
    assert AdvertData.from_bytes(data) == advert


@PROPERTY
@given(samples, st.binary(max_size=30), st.binary(max_size=30))
def test_sample_unpacks_at_any_offset(sample: TelemetrySample, before: bytes, after: bytes) -> None:
    data = before + sample.pack() + after
    assert TelemetrySample.unpack(data, len(before)) == sample


# --- encoding refuses what decoding would refuse -------------------------------------------------


@FUZZ
@given(st.data())
def test_encoding_succeeds_exactly_for_values_the_decoder_accepts(data: st.DataObject) -> None:
    message_type = data.draw(st.sampled_from(list(SPECS)))
    specs = SPECS[message_type]
    values = {name: data.draw(any_value(spec), label=name) for name, spec in specs.items()}
    message = message_type(**values)
    valid = all(in_spec(values[name], spec) for name, spec in specs.items())
    if valid and cross_field_valid(message_type, values):
        assert decode_any(message_type, encode(message)) == message
    else:
        with pytest.raises(ProtocolError):
            encode(message)


@pytest.mark.parametrize(
    "message",
    [
        Hello(seq=-1),
        Start(seq=65536),
        QueueSegment(seq=1, amplitude_ua=65536),
        QueueSegment(seq=1, zone=0),  # type: ignore[arg-type]
        QueueSegment(seq=1, waveform=5),  # type: ignore[arg-type]
        SetIntensity(seq=1, percent=256),
        SetTelemetryRate(seq=1, rate_hz=-1),
        Response(seq=1, request_opcode=2, status=0x0C),  # type: ignore[arg-type]
        Response(seq=1, request_opcode=0x100, status=Status.OK),
        Telemetry(()),
        Telemetry((RUNNING_SAMPLE,) * (MAX_SAMPLES_PER_NOTIFICATION + 1)),
        DeviceStatus(DeviceState.IDLE, FaultFlags.NONE, 101, 0, 100),
        DeviceStatus(DeviceState.IDLE, FaultFlags.NONE, 100, 0, 101),
        DeviceStatus(5, FaultFlags.NONE, 100, 0, 100),  # type: ignore[arg-type]
        DeviceLimits(1, 400, 100, 99, 20, 1000, 8, 1000, 60000, 100),
        DeviceLimits(1, 400, 1, 100, 2000, 1000, 8, 1000, 60000, 100),
        DeviceLimits(1, 400, 1, 100, 20, 1000, 0, 1000, 60000, 100),
        DeviceLimits(1, 400, 1, 100, 20, 1000, 8, 0, 60000, 100),
        AdvertData(model=1, state=DeviceState.IDLE, battery_pct=101),
        AdvertData(model=256, state=DeviceState.IDLE, battery_pct=50),
    ],
    ids=repr,
)
def test_encoding_an_out_of_range_value_raises(message: Message) -> None:
    with pytest.raises(ProtocolError):
        bytes(message)


@pytest.mark.parametrize(
    "sample_fields",
    [{"contact_quality": 101}, {"battery_pct": 255}, {"temperature_dc": 0x8000}, {"state": 9}],
    ids=repr,
)
def test_packing_an_out_of_range_sample_raises(sample_fields: dict[str, Any]) -> None:
    sample = dataclasses.replace(RUNNING_SAMPLE, **sample_fields)
    with pytest.raises(ProtocolError):
        sample.pack()


def test_response_ok_accepts_a_plain_int_status() -> None:
    assert Response(seq=1, request_opcode=Opcode.STOP, status=0).ok  # type: ignore[arg-type]
    assert not Response(seq=1, request_opcode=Opcode.STOP, status=Status.BAD_STATE).ok


# --- decoders never raise anything but ProtocolError ---------------------------------------------

DECODERS: dict[str, Callable[[bytes], object]] = {
    "decode_command": decode_command,
    "decode_notification": decode_notification,
    "TelemetrySample.unpack": TelemetrySample.unpack,
    **{f"{t.__name__}.from_bytes": t.from_bytes for t in COMMAND_TYPES},
    "Response.from_bytes": Response.from_bytes,
    "Telemetry.from_bytes": Telemetry.from_bytes,
    "DeviceStatus.from_bytes": DeviceStatus.from_bytes,
    "DeviceLimits.from_bytes": DeviceLimits.from_bytes,
    "AdvertData.from_bytes": AdvertData.from_bytes,
}


def frame_bytes() -> st.SearchStrategy[bytes]:
    return messages.map(bytes)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(frame_bytes()))
    for _ in range(draw(st.integers(1, 3))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 0xFF))
    return bytes(data)


def header_and_noise() -> st.SearchStrategy[bytes]:
    versions = st.sampled_from([0, 1, 2, 0xFF])
    opcodes = st.one_of(st.sampled_from(list(Opcode)), st.integers(0, 0xFF))
    return st.builds(
        lambda version, opcode, rest: bytes([version, opcode]) + rest,
        versions,
        opcodes,
        st.binary(max_size=TELEMETRY_HEADER_SIZE + 11 * TELEMETRY_SAMPLE_SIZE),
    )


arbitrary_input = st.one_of(st.binary(max_size=64), header_and_noise(), mutated_frames())


@FUZZ
@given(arbitrary_input)
def test_decoders_raise_only_protocol_error(data: bytes) -> None:
    for name, decoder in DECODERS.items():
        try:
            decoded = decoder(data)
        except ProtocolError:
            continue
        # Whatever a decoder accepts is exactly the encoding of what it returns.
        if isinstance(decoded, TelemetrySample):
            assert decoded.pack() == data[:TELEMETRY_SAMPLE_SIZE], name
        else:
            assert encode(decoded) == data, name


@PROPERTY
@given(arbitrary_input)
def test_command_header_never_raises(data: bytes) -> None:
    header = protocol.command_header(data)
    assert (header is None) == (len(data) < 4)


@PROPERTY
@given(messages, st.integers(0, 0xFF))
def test_a_byte_more_or_less_is_refused(message: Message, extra: int) -> None:
    data = bytes(message)
    decoders: list[Callable[[bytes], object]] = [
        type(message).from_bytes,
        lambda d: decode_any(type(message), d),
    ]
    for decoder in decoders:
        with pytest.raises(ProtocolError):
            decoder(data + bytes([extra]))
        with pytest.raises(ProtocolError):
            decoder(data[:-1])


@pytest.mark.parametrize("size", range(TELEMETRY_SAMPLE_SIZE))
def test_a_short_sample_is_refused(size: int) -> None:
    data = IDLE_SAMPLE.pack()
    with pytest.raises(ProtocolError):
        TelemetrySample.unpack(data[:size])


def test_decoders_refuse_each_others_frames() -> None:
    for message in GOLDEN.values():
        data = bytes(message)
        if isinstance(message, Command):
            with pytest.raises(ProtocolError):
                decode_notification(data)
        elif not isinstance(message, AdvertData):
            with pytest.raises(ProtocolError):
                decode_command(data)
    with pytest.raises(ProtocolError, match="expected Stop"):
        Stop.from_bytes(bytes(Start(seq=1)))


def test_unknown_fault_bits_are_kept() -> None:
    status = DeviceStatus(DeviceState.IDLE, FaultFlags(0xC0), 50, 0, 100)
    assert DeviceStatus.from_bytes(bytes(status)).faults == 0xC0


# --- purity --------------------------------------------------------------------------------------

FORBIDDEN = {"bleak", "bumble", "asyncio", "gateway", "api"}


def imported_roots(path: Path) -> set[str]:
    """Top-level modules imported anywhere in ``path``, relative imports resolved to ``ble``."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add("ble" if node.level else (node.module or ""))
    return roots


def test_codec_source_imports_no_radio_or_event_loop() -> None:
    # The codec's modules, its error module and the package __init__ that importing it runs.
    assert CODEC
    for path in (*CODEC, ROOT / "ble" / "errors.py", ROOT / "ble" / "__init__.py"):
        modules = imported_roots(path)
        assert not {m.partition(".")[0] for m in modules} & FORBIDDEN, (path, modules)
        ble_modules = {m for m in modules if m.startswith("ble")}
        assert all(m in {"ble", "ble.errors"} or m.startswith("ble.protocol.") for m in ble_modules)


def test_importing_the_codec_loads_no_radio_or_event_loop() -> None:
    code = (
        "import sys; import ble.protocol; "
        f"print(sorted(m for m in sys.modules if m.partition('.')[0] in {sorted(FORBIDDEN)!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_a_payload_value_is_never_taken_for_the_sequence_number() -> None:
    # ``send`` stamps seq; a command built without it must mean what its payload says.
    assert protocol.Resume(1000) == protocol.Resume(ramp_ms=1000, seq=0)
    assert protocol.SetIntensity(60, 1500) == protocol.SetIntensity(percent=60, ramp_ms=1500, seq=0)
    with pytest.raises(TypeError):
        protocol.Stop(5)  # type: ignore[misc]
