"""The stored telemetry layout, and turning stored samples into rows, averages and CSV.

A :class:`~gateway.storage.models.TelemetryBatch` ``data`` blob (layout 1) is ``n`` sample records
in frame order, exactly as the codec packs them (``ble.protocol.pack_samples``, the payload of
a v1 telemetry notification after its header; docs/protocol.md). For reference, a record is
22 bytes, little-endian::

    offset size field                 type
    0      2    frame                 u16  (wraps at 65536)
    2      4    device_time_ms        u32  (wraps)
    6      1    state                 u8   (DeviceState)
    7      2    segment_id            u16  (0xFFFF: none)
    9      2    segment_elapsed_ms    u16
    11     2    current_mean_ua       u16
    13     2    current_peak_ua       u16
    15     2    impedance_10ohm       u16  (0xFFFF: open circuit)
    17     1    contact_quality       u8   (0-100)
    18     1    battery_pct           u8   (0-100)
    19     2    temperature_dc        i16  (0.1 °C)
    21     1    faults                u8   (FaultFlags)

A sample's wall-clock time is ``t0_ms + (device_time_ms - device_time_ms of the batch's first
sample) mod DEVICE_TIME_MOD`` (2**32): device time is exact between samples, and one wall-clock
anchor per batch is enough. The writer starts a new batch whenever device time goes backwards or
jumps (a device reboot), so the offset is always meaningful.

CSV (``to_csv``): a header line, then one line per row, comma-separated, ``\\n`` line ends::

    t_ms,time_utc,n,frame,state,segment_id,current_mean_ua,current_peak_ua,impedance_ohm,
    contact_quality,battery_pct,temperature_c,faults

(one line in the file). ``t_ms`` is Unix time in ms (a bucket's start when downsampled),
``time_utc`` the same as ISO 8601, ``n`` how many samples the row stands for, ``frame`` the first
sample's frame counter, ``state`` the last device state (lower case), ``segment_id`` the last
segment (empty: none), ``current_mean_ua`` / ``contact_quality`` / ``temperature_c`` averages,
``current_peak_ua`` the maximum, ``impedance_ohm`` the average over samples with contact (empty
when all were open circuit), ``battery_pct`` the minimum, ``faults`` every fault flag seen,
lower-case names joined by ``|``.

This module is pure: no database, no I/O. It does not pack or unpack samples itself: the layout
is the codec's, defined once in ble/protocol/telemetry.py.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from ble.protocol import (
    DEVICE_TIME_MOD,
    IMPEDANCE_OPEN,
    IMPEDANCE_UNIT_OHM,
    NO_SEGMENT,
    TELEMETRY_SAMPLE_SIZE,
    TelemetrySample,
    fault_names,
)
from ble.protocol import unpack_samples as unpack_records

LAYOUT_RAW = 1
"""``TelemetryBatch.layout`` of the codec's sample records (the only layout so far)."""

CSV_HEADER = (
    "t_ms",
    "time_utc",
    "n",
    "frame",
    "state",
    "segment_id",
    "current_mean_ua",
    "current_peak_ua",
    "impedance_ohm",
    "contact_quality",
    "battery_pct",
    "temperature_c",
    "faults",
)


def unpack_samples(data: bytes) -> list[TelemetrySample]:
    """Decode a layout-1 blob through the codec; ValueError if it is not whole records."""
    if len(data) % TELEMETRY_SAMPLE_SIZE:
        raise ValueError(
            f"telemetry blob of {len(data)} bytes is not whole {TELEMETRY_SAMPLE_SIZE}-byte samples"
        )
    return unpack_records(data)


class TimedSample(NamedTuple):
    """A stored sample with its wall-clock time (Unix ms)."""

    t_ms: int
    sample: TelemetrySample


def timed_samples(t0_ms: int, data: bytes) -> Iterator[TimedSample]:
    """The samples of one batch, each placed in wall-clock time by its device-time offset."""
    samples = unpack_samples(data)
    if not samples:
        return
    base = samples[0].device_time_ms
    for sample in samples:
        yield TimedSample(t0_ms + ((sample.device_time_ms - base) % DEVICE_TIME_MOD), sample)


@dataclass(frozen=True, slots=True)
class TelemetryRow:
    """One CSV/JSON row: a single sample (``n == 1``) or the summary of a time bucket."""

    t_ms: int
    n: int
    frame: int
    state: str
    segment_id: int | None
    current_mean_ua: float
    current_peak_ua: int
    impedance_ohm: float | None
    contact_quality: float
    battery_pct: int
    temperature_c: float
    faults: tuple[str, ...]


def _summarise(t_ms: int, bucket: Sequence[TelemetrySample]) -> TelemetryRow:
    count = len(bucket)
    last = bucket[-1]
    closed = [s.impedance_10ohm for s in bucket if s.impedance_10ohm != IMPEDANCE_OPEN]
    faults = 0
    for s in bucket:
        faults |= s.faults
    return TelemetryRow(
        t_ms=t_ms,
        n=count,
        frame=bucket[0].frame,
        state=last.state.name.lower(),
        segment_id=None if last.segment_id == NO_SEGMENT else last.segment_id,
        current_mean_ua=round(sum(s.current_mean_ua for s in bucket) / count, 1),
        current_peak_ua=max(s.current_peak_ua for s in bucket),
        impedance_ohm=(
            round(sum(closed) * IMPEDANCE_UNIT_OHM / len(closed), 1) if closed else None
        ),
        contact_quality=round(sum(s.contact_quality for s in bucket) / count, 1),
        battery_pct=min(s.battery_pct for s in bucket),
        temperature_c=round(sum(s.temperature_dc for s in bucket) / count / 10, 2),
        faults=fault_names(faults),
    )


def to_rows(samples: Iterable[TimedSample], *, every_ms: int | None = None) -> list[TelemetryRow]:
    """Every sample as a row, or (``every_ms``) one averaged row per bucket of that length.

    Buckets start at the first sample's time; empty buckets (gaps, pauses) produce no row.
    """
    if every_ms is None:
        return [_summarise(t_ms, (sample,)) for t_ms, sample in samples]
    if every_ms < 1:
        raise ValueError(f"every_ms must be at least 1, got {every_ms}")
    rows: list[TelemetryRow] = []
    start: int | None = None
    bucket_start = 0
    bucket: list[TelemetrySample] = []
    for t_ms, sample in samples:
        if start is None:
            start = bucket_start = t_ms
        index_start = start + (t_ms - start) // every_ms * every_ms
        if index_start != bucket_start and bucket:
            rows.append(_summarise(bucket_start, bucket))
            bucket = []
        bucket_start = index_start
        bucket.append(sample)
    if bucket:
        rows.append(_summarise(bucket_start, bucket))
    return rows


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_csv(rows: Iterable[TelemetryRow]) -> str:
    """Rows as CSV text with the documented header (see the module docstring)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in rows:
        stamp = datetime.fromtimestamp(row.t_ms / 1000, UTC).isoformat(timespec="milliseconds")
        writer.writerow(
            (
                row.t_ms,
                stamp.replace("+00:00", "Z"),
                row.n,
                row.frame,
                row.state,
                "" if row.segment_id is None else row.segment_id,
                _number(row.current_mean_ua),
                row.current_peak_ua,
                _number(row.impedance_ohm),
                _number(row.contact_quality),
                row.battery_pct,
                _number(row.temperature_c),
                "|".join(row.faults),
            )
        )
    return out.getvalue()
