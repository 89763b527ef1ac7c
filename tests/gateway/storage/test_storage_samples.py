"""The packed telemetry layout, placing samples in time, downsampling and CSV (no database)."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ble.protocol import (
    IMPEDANCE_OPEN,
    NO_SEGMENT,
    TELEMETRY_SAMPLE_SIZE,
    DeviceState,
    FaultFlags,
    TelemetrySample,
    pack_samples,
)
from gateway.storage.samples import (
    CSV_HEADER,
    TimedSample,
    timed_samples,
    to_csv,
    to_rows,
    unpack_samples,
)

u16 = st.integers(0, 0xFFFF)
samples_st = st.builds(
    TelemetrySample,
    frame=u16,
    device_time_ms=st.integers(0, 0xFFFFFFFF),
    state=st.sampled_from(DeviceState),
    segment_id=u16,
    segment_elapsed_ms=u16,
    current_mean_ua=u16,
    current_peak_ua=u16,
    impedance_10ohm=u16,
    contact_quality=st.integers(0, 100),
    battery_pct=st.integers(0, 100),
    temperature_dc=st.integers(-32768, 32767),
    faults=st.integers(0, 0x3F).map(FaultFlags),
)


@given(st.lists(samples_st, max_size=60))
def test_layout_round_trips_every_field(samples: list[TelemetrySample]) -> None:
    data = pack_samples(samples)
    assert len(data) == TELEMETRY_SAMPLE_SIZE * len(samples)
    assert unpack_samples(data) == samples


def test_layout_is_the_v1_wire_sample() -> None:
    sample = TelemetrySample(1, 2, DeviceState.RUNNING, 3, 4, 5, 6, 7, 8, 9, -10, FaultFlags(0x21))
    assert pack_samples([sample]) == sample.pack()
    # frame, time, state, segment, elapsed, mean, peak, impedance + contact, battery, temp, faults
    assert pack_samples([sample]).hex() == "0100020000000103000400050006000700" + "0809f6ff21"
    with pytest.raises(ValueError, match="whole"):
        unpack_samples(b"\x00" * 23)


def _sample(i: int, time_ms: int, **kw: object) -> TelemetrySample:
    values: dict[str, object] = {
        "frame": i,
        "device_time_ms": time_ms,
        "state": DeviceState.RUNNING,
        "segment_id": 7,
        "segment_elapsed_ms": 0,
        "current_mean_ua": 100 + i,
        "current_peak_ua": 200 + i,
        "impedance_10ohm": 50,
        "contact_quality": 90,
        "battery_pct": 80 - i,
        "temperature_dc": 330,
    } | kw
    return TelemetrySample(**values)  # type: ignore[arg-type]


def test_times_follow_device_time_across_its_wrap() -> None:
    start = (1 << 32) - 40
    batch = [_sample(i, (start + 20 * i) % (1 << 32)) for i in range(4)]
    assert [t.t_ms for t in timed_samples(1_000, pack_samples(batch))] == [1000, 1020, 1040, 1060]


def test_rows_average_per_bucket_and_skip_empty_buckets() -> None:
    timed = [
        TimedSample(0, _sample(0, 0)),
        TimedSample(400, _sample(1, 400, impedance_10ohm=IMPEDANCE_OPEN)),
        TimedSample(999, _sample(2, 999, faults=FaultFlags.OVER_TEMPERATURE)),
        TimedSample(3000, _sample(3, 3000, segment_id=NO_SEGMENT, state=DeviceState.PAUSED)),
    ]
    first, second = to_rows(timed, every_ms=1000)
    assert (first.t_ms, first.n, first.frame, second.t_ms, second.n) == (0, 3, 0, 3000, 1)
    assert first.current_mean_ua == 101
    assert first.current_peak_ua == 202
    assert first.impedance_ohm == 500  # the open-circuit sample is left out of the average
    assert first.battery_pct == 78
    assert first.faults == ("over_temperature",)
    assert (second.state, second.segment_id) == ("paused", None)
    with pytest.raises(ValueError):
        to_rows(timed, every_ms=0)
    assert to_rows([], every_ms=10) == []


def test_csv_has_the_documented_header_and_empty_cells_for_none() -> None:
    timed = [
        TimedSample(1_700_000_000_123, _sample(0, 0, impedance_10ohm=IMPEDANCE_OPEN)),
        TimedSample(
            1_700_000_000_143,
            _sample(1, 20, faults=FaultFlags.OVER_CURRENT | FaultFlags.CHARGING),
        ),
    ]
    rows = list(csv.reader(io.StringIO(to_csv(to_rows(timed)))))
    assert rows[0] == list(CSV_HEADER)
    assert rows[1] == [
        "1700000000123",
        "2023-11-14T22:13:20.123Z",
        "1",
        "0",
        "running",
        "7",
        "100",
        "200",
        "",
        "90",
        "80",
        "33",
        "",
    ]
    assert rows[2][-1] == "over_current|charging"
    assert rows[2][8] == "500"
