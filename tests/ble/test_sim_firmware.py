"""The simulated firmware as a pure state machine: commands in, time in, bytes and output out."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from ble import protocol as p
from ble.sim.firmware import DEFAULT_LIMITS, STEP_MS, Firmware
from ble.sim.output import MIN_RAMP_MS

S = p.Status
STATE = p.DeviceState
CAP = DEFAULT_LIMITS.hard_cap_ua


class Bench:
    """A firmware plus a clock and a sequence counter, as a gateway would drive it."""

    def __init__(self, seed: int = 0, limits: p.DeviceLimits = DEFAULT_LIMITS) -> None:
        self.fw = Firmware(limits, seed)
        self.now = 0
        self.seq = 0

    def send(self, cls: type[p.Command], /, *, encrypted: bool = True, **fields: Any) -> p.Response:
        self.seq = (self.seq + 1) & 0xFFFF
        response = self.fw.handle(
            bytes(cls(**fields, seq=self.seq)), encrypted=encrypted, now_ms=self.now
        )
        assert response is not None
        assert response.seq == self.seq
        assert response.request_opcode == cls.OPCODE
        return response

    def queue(self, segment_id: int, **fields: Any) -> p.Response:
        return self.send(p.QueueSegment, **segment(segment_id, **fields))

    def run(self, ms: int, *, keepalive_ms: int | None = 250, tick_ms: int = 10) -> None:
        """Let ``ms`` pass in ticks, renewing the lease like a healthy gateway."""
        end = self.now + ms
        next_keepalive = self.now + (keepalive_ms or 0)
        while self.now < end:
            self.now = min(end, self.now + tick_ms)
            self.fw.tick(self.now)
            if keepalive_ms is not None and self.now >= next_keepalive:
                assert self.send(p.Keepalive).ok
                next_keepalive = self.now + keepalive_ms

    def telemetry(self) -> list[p.TelemetrySample]:
        return [s for f in self.fw.drain_outbox() if isinstance(f, p.Telemetry) for s in f.samples]


def segment(segment_id: int, /, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "segment_id": segment_id,
        "frequency_dhz": 100,
        "amplitude_ua": 300,
        "pulse_width_us": 200,
        "duration_ms": 2_000,
        "ramp_ms": 500,
    }
    values.update(fields)
    return values


def level_at(fw: Firmware, t: int) -> int:
    """The logged output level in force at time ``t``."""
    level = 0
    for when, ua in fw.output_log:
        if when > t:
            break
        level = ua
    return level


def assert_no_step_up(fw: Firmware) -> None:
    """S2: between any two logged points the output rises no faster than cap per MIN_RAMP_MS."""
    log = list(fw.output_log)
    for (t1, a1), (t2, a2) in itertools.pairwise(log):
        assert a2 - a1 <= CAP * (t2 - t1) / MIN_RAMP_MS + 1, (t1, a1, t2, a2)


@pytest.fixture
def bench() -> Bench:
    return Bench()


def running(bench: Bench, *, amplitude: int = 300, ramp: int = 500) -> Bench:
    assert bench.queue(1, amplitude_ua=amplitude, ramp_ms=ramp, duration_ms=10_000).ok
    assert bench.send(p.Start).ok
    bench.run(ramp + 50)
    assert bench.fw.output_ua == amplitude
    return bench


# -- commands and validation -----------------------------------------------------------------------


def test_hello_answers_with_the_supported_version(bench: Bench) -> None:
    assert bench.send(p.Hello, max_version=3).ok
    assert bench.send(p.Hello, max_version=0).status is S.UNSUPPORTED_VERSION


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"amplitude_ua": CAP}, S.OK),
        ({"amplitude_ua": CAP + 1}, S.ABOVE_HARD_CAP),
        ({"amplitude_ua": CAP + 1, "frequency_dhz": 0}, S.ABOVE_HARD_CAP),
        ({"frequency_dhz": DEFAULT_LIMITS.frequency_min_dhz - 1}, S.OUT_OF_RANGE),
        ({"frequency_dhz": DEFAULT_LIMITS.frequency_max_dhz + 1}, S.OUT_OF_RANGE),
        ({"pulse_width_us": DEFAULT_LIMITS.pulse_width_min_us - 1}, S.OUT_OF_RANGE),
        ({"pulse_width_us": DEFAULT_LIMITS.pulse_width_max_us + 1}, S.OUT_OF_RANGE),
        ({"duration_ms": 0}, S.OUT_OF_RANGE),
        ({"duration_ms": DEFAULT_LIMITS.max_segment_ms + 1}, S.OUT_OF_RANGE),
        ({"segment_id": p.NO_SEGMENT}, S.OUT_OF_RANGE),
    ],
)
def test_queue_segment_is_checked_against_the_limits(
    bench: Bench, fields: dict[str, Any], status: p.Status
) -> None:
    response = bench.send(p.QueueSegment, **segment(7, **fields))
    assert response.status is status
    assert len(bench.fw.queue) == (1 if status is S.OK else 0)


def test_queue_depth_duplicates_and_free_places(bench: Bench) -> None:
    depth = DEFAULT_LIMITS.queue_depth
    for i in range(depth):
        response = bench.queue(i)
        assert response.ok
        assert response.queue_free == depth - i - 1
    assert bench.queue(depth).status is S.QUEUE_FULL
    assert bench.queue(0).status is S.DUPLICATE_SEGMENT
    assert [seg.segment_id for seg in bench.fw.queue] == list(range(depth))


def test_malformed_frames_are_nacked_with_their_seq_and_counted(bench: Bench) -> None:
    fw = bench.fw
    assert fw.handle(b"", encrypted=True, now_ms=0) is None
    assert fw.handle(b"\x01\x08\x05", encrypted=True, now_ms=0) is None
    cases = {
        b"\x01\x02\x05\x00\x01": S.MALFORMED,  # QUEUE_SEGMENT with a 1-byte payload
        b"\x01\x08\x06\x00\xff": S.MALFORMED,  # KEEPALIVE carries nothing
        bytes(p.QueueSegment(**segment(1), seq=7))[:5] + b"\x09" + bytes(13): S.MALFORMED,  # zone 9
        b"\x01\x7f\x08\x00": S.UNKNOWN_OPCODE,
        b"\x02\x08\x09\x00": S.UNSUPPORTED_VERSION,
    }
    for data, status in cases.items():
        response = fw.handle(data, encrypted=True, now_ms=0)
        assert response is not None
        assert response.status is status
        assert response.seq == int.from_bytes(data[2:4], "little")
    assert fw.counters.malformed == 2 + len(cases)
    assert fw.queue == ()


def test_unencrypted_commands_are_refused_except_stop(bench: Bench) -> None:
    assert bench.queue(1).ok
    assert bench.send(p.Start, encrypted=False).status is S.REFUSED
    assert bench.fw.state is STATE.IDLE
    assert bench.send(p.Stop, encrypted=False).ok
    assert bench.fw.queue == ()
    assert bench.fw.counters.unencrypted == 1


def test_state_rules(bench: Bench) -> None:
    assert bench.send(p.Start).status is S.BAD_STATE  # nothing queued
    assert bench.send(p.Pause).status is S.BAD_STATE
    assert bench.send(p.Resume).status is S.BAD_STATE
    assert bench.queue(1).ok
    assert bench.send(p.Start).ok
    assert bench.send(p.Start).status is S.BAD_STATE
    assert bench.send(p.Resume).status is S.BAD_STATE
    assert bench.send(p.Pause).ok
    assert bench.send(p.Pause).status is S.BAD_STATE
    assert bench.send(p.Start).status is S.BAD_STATE
    assert bench.send(p.Resume).ok
    assert bench.fw.state is STATE.RUNNING


# -- output: ramps, stop, playback ---------------------------------------------------------------


def test_start_ramps_linearly_from_zero(bench: Bench) -> None:
    assert bench.queue(1, amplitude_ua=400, ramp_ms=1_000).ok
    assert bench.send(p.Start).ok
    assert bench.fw.output_ua == 0
    bench.run(500)
    assert 190 <= bench.fw.output_ua <= 210
    bench.run(600)
    assert bench.fw.output_ua == 400
    assert_no_step_up(bench.fw)


def test_a_zero_ramp_is_still_a_ramp(bench: Bench) -> None:
    assert bench.queue(1, amplitude_ua=CAP, ramp_ms=0).ok
    assert bench.send(p.Start).ok
    bench.run(MIN_RAMP_MS // 2)
    assert 0 < bench.fw.output_ua < CAP
    assert_no_step_up(bench.fw)


def test_stop_turns_output_off_at_once_and_clears_the_queue(bench: Bench) -> None:
    running(bench)
    assert bench.queue(2).ok
    assert bench.send(p.Stop).ok
    assert bench.fw.output_ua == 0
    assert bench.fw.queue == ()
    assert bench.fw.state is STATE.IDLE
    assert bench.fw.output_log[-1] == (bench.now, 0)


def test_pause_is_immediate_and_resume_ramps_with_its_own_ramp(bench: Bench) -> None:
    running(bench, ramp=200)
    elapsed = bench.fw.segment_elapsed_ms
    assert bench.send(p.Pause).ok
    assert bench.fw.output_ua == 0
    bench.run(1_000)
    assert bench.fw.segment_elapsed_ms == elapsed
    assert bench.send(p.Resume, ramp_ms=2_000).ok
    bench.run(1_000)
    assert 140 <= bench.fw.output_ua <= 160
    assert_no_step_up(bench.fw)


def test_segments_play_back_to_back_and_the_program_completes(bench: Bench) -> None:
    assert bench.queue(1, amplitude_ua=100, duration_ms=1_000, ramp_ms=200).ok
    assert bench.queue(2, amplitude_ua=300, duration_ms=1_000, ramp_ms=400).ok
    assert bench.queue(3, amplitude_ua=50, duration_ms=500).ok
    assert bench.send(p.Start).ok
    bench.run(2_600)
    fw = bench.fw
    assert fw.state is STATE.IDLE
    assert fw.queue == ()
    assert level_at(fw, 999) == 100
    assert 190 <= level_at(fw, 1_200) <= 210  # 100 -> 300 over segment 2's 400 ms
    assert level_at(fw, 1_999) == 300
    assert level_at(fw, 2_000) == 50  # a decrease is immediate
    assert level_at(fw, 2_500) == 0
    assert_no_step_up(fw)
    samples = bench.telemetry()
    by_segment = {s.segment_id for s in samples}
    assert by_segment == {1, 2, 3, p.NO_SEGMENT}
    assert all(s.segment_elapsed_ms < 1_000 for s in samples)


def test_set_intensity_decrease_is_immediate_and_increase_ramps(bench: Bench) -> None:
    running(bench, amplitude=400)
    assert bench.send(p.SetIntensity, percent=50, ramp_ms=1_000).ok
    assert bench.fw.output_ua == 200
    assert bench.send(p.SetIntensity, percent=100, ramp_ms=1_000).ok
    bench.run(500)
    assert 290 <= bench.fw.output_ua <= 310
    assert bench.send(p.SetIntensity, percent=101).status is S.OUT_OF_RANGE
    assert_no_step_up(bench.fw)


# -- lease -----------------------------------------------------------------------------------------


def test_lease_expiry_stops_output_and_flags_it_until_the_next_start(bench: Bench) -> None:
    running(bench)
    lease = DEFAULT_LIMITS.lease_ms
    assert bench.send(p.Keepalive).ok
    bench.run(lease, keepalive_ms=None)
    assert bench.fw.state is STATE.RUNNING  # exactly lease_ms of silence is still in time
    bench.run(STEP_MS, keepalive_ms=None)
    fw = bench.fw
    assert fw.state is STATE.IDLE
    assert fw.output_ua == 0
    assert fw.queue == ()
    assert p.FaultFlags.LEASE_EXPIRED in fw.status().faults
    assert fw.counters.lease_expiries == 1
    bench.run(30, keepalive_ms=None)
    assert p.FaultFlags.LEASE_EXPIRED in bench.telemetry()[-1].faults
    assert bench.queue(2).ok
    assert p.FaultFlags.LEASE_EXPIRED in fw.faults
    assert bench.send(p.Start).ok
    assert p.FaultFlags.LEASE_EXPIRED not in fw.faults


def test_the_lease_is_not_enforced_in_idle(bench: Bench) -> None:
    assert bench.queue(1).ok
    bench.run(10 * DEFAULT_LIMITS.lease_ms, keepalive_ms=None)
    assert len(bench.fw.queue) == 1
    assert bench.fw.faults == p.FaultFlags.NONE


def test_nacked_commands_renew_the_lease_but_malformed_ones_do_not(bench: Bench) -> None:
    running(bench)
    for _ in range(4):
        bench.run(400, keepalive_ms=None)
        assert bench.send(p.Start).status is S.BAD_STATE
    assert bench.fw.state is STATE.RUNNING
    for _ in range(3):
        bench.run(400, keepalive_ms=None)
        bench.fw.handle(b"\x01\x08\x01\x00\x00", encrypted=True, now_ms=bench.now)
    assert bench.fw.state is STATE.IDLE


# -- contact, physics ----------------------------------------------------------------------------


def test_no_output_without_contact_and_the_program_waits(bench: Bench) -> None:
    running(bench, ramp=400)
    bench.fw.physics.set_on_skin(False)
    bench.run(STEP_MS)
    elapsed = bench.fw.segment_elapsed_ms
    assert bench.fw.output_ua == 0
    bench.telemetry()
    bench.run(2_000)
    assert bench.fw.segment_elapsed_ms == elapsed
    assert bench.fw.state is STATE.RUNNING
    off_skin = bench.telemetry()[1:]  # the first one still averages some time on skin
    assert all(s.impedance_10ohm == p.IMPEDANCE_OPEN for s in off_skin)
    assert all(s.contact_quality == 0 and s.current_mean_ua == 0 for s in off_skin)
    back = bench.now
    bench.fw.physics.set_on_skin(True)
    bench.run(200)
    assert 140 <= bench.fw.output_ua <= 160  # ramping from zero over the segment's 400 ms
    assert level_at(bench.fw, back) == 0
    assert_no_step_up(bench.fw)


def test_drying_gel_raises_impedance_and_the_compliance_limit_shows(bench: Bench) -> None:
    running(bench, amplitude=CAP)
    fresh = bench.telemetry()[-1]
    assert 5_000 <= (fresh.impedance_ohm or 0) <= 30_000
    assert fresh.current_mean_ua == pytest.approx(CAP, rel=0.05)
    bench.fw.physics.dry_gel(30)
    bench.run(200)
    dried = bench.telemetry()[-1]
    assert (dried.impedance_ohm or 0) > 2 * (fresh.impedance_ohm or 0)
    assert dried.contact_quality < fresh.contact_quality
    assert dried.current_mean_ua < CAP * 0.9  # 12 V across a dried gel cannot drive the set point
    bench.fw.physics.dry_gel(500)
    bench.run(50)
    assert not bench.fw.contact
    assert bench.fw.output_ua == 0


def test_output_heats_the_device_and_drains_the_battery() -> None:
    idle, busy = Bench(), Bench()
    assert busy.queue(1, amplitude_ua=CAP, duration_ms=60_000).ok
    assert busy.queue(2, amplitude_ua=CAP, duration_ms=60_000).ok
    assert busy.send(p.Start).ok
    for b in (idle, busy):
        b.run(120_000, tick_ms=50)
    assert busy.fw.physics.temperature_c > idle.fw.physics.temperature_c + 1
    assert busy.fw.physics.battery_pct < idle.fw.physics.battery_pct


# -- faults and charging ---------------------------------------------------------------------------


def test_over_current_latches_a_fault_until_cleared(bench: Bench) -> None:
    running(bench)
    bench.queue(2)
    bench.fw.physics.inject_over_current(CAP * 1.2)
    bench.run(STEP_MS)
    fw = bench.fw
    assert fw.state is STATE.FAULT
    assert fw.output_ua == 0
    assert fw.queue == ()
    assert p.FaultFlags.OVER_CURRENT in fw.status().faults
    bench.run(30)
    assert any(s.current_peak_ua >= CAP * 1.1 for s in bench.telemetry())
    assert bench.queue(3).status is S.FAULT_ACTIVE
    assert bench.send(p.Start).status is S.FAULT_ACTIVE
    assert bench.send(p.Stop).ok
    assert fw.state is STATE.FAULT
    assert bench.send(p.ClearFault).ok
    assert fw.state is STATE.IDLE
    assert fw.faults == p.FaultFlags.NONE


def test_over_temperature_clears_only_below_the_hysteresis(bench: Bench) -> None:
    running(bench)
    bench.fw.physics.set_temperature(41.5)
    bench.run(10)
    assert bench.fw.state is STATE.FAULT
    assert bench.fw.output_ua == 0
    bench.fw.physics.set_temperature(40.5)
    assert bench.send(p.ClearFault).status is S.FAULT_ACTIVE
    bench.fw.physics.set_temperature(33)
    assert bench.send(p.ClearFault).ok
    assert bench.fw.state is STATE.IDLE


def test_hardware_fault(bench: Bench) -> None:
    running(bench)
    bench.fw.physics.set_hardware_fault(True)
    bench.run(10)
    assert bench.fw.state is STATE.FAULT
    assert bench.send(p.ClearFault).status is S.FAULT_ACTIVE
    bench.fw.physics.set_hardware_fault(False)
    assert bench.send(p.ClearFault).ok
    assert bench.send(p.ClearFault).ok  # idempotent outside FAULT


def test_charging_inhibits_output_and_unplugging_returns_to_idle(bench: Bench) -> None:
    running(bench)
    bench.fw.physics.set_battery(50)
    bench.fw.physics.set_charging(True)
    bench.run(10)
    fw = bench.fw
    assert fw.state is STATE.CHARGING
    assert fw.output_ua == 0
    assert p.FaultFlags.CHARGING in fw.faults
    assert bench.queue(5).status is S.CHARGING
    assert bench.send(p.ClearFault).status is S.CHARGING
    bench.run(60_000, tick_ms=50)
    assert fw.physics.battery_pct > 50
    fw.physics.set_charging(False)
    bench.run(10)
    assert fw.state is STATE.IDLE
    assert fw.faults == p.FaultFlags.NONE


def test_low_battery_is_a_warning(bench: Bench) -> None:
    bench.fw.physics.set_battery(5)
    running(bench)
    assert p.FaultFlags.LOW_BATTERY in bench.fw.faults
    assert bench.fw.state is STATE.RUNNING


# -- telemetry and status --------------------------------------------------------------------------


def test_telemetry_keeps_its_rate_and_packs_samples(bench: Bench) -> None:
    bench.run(1_000, keepalive_ms=None, tick_ms=7)
    samples = bench.telemetry()
    assert len(samples) == 50  # the default 50 Hz, on an absolute grid
    assert [s.device_time_ms for s in samples] == list(range(20, 1_001, 20))
    assert bench.send(p.SetTelemetryRate, rate_hz=100, samples_per_notification=5).ok
    bench.run(1_000, keepalive_ms=None, tick_ms=13)
    frames = [f for f in bench.fw.drain_outbox() if isinstance(f, p.Telemetry)]
    assert [len(f.samples) for f in frames] == [5] * 20
    numbers = [s.frame for f in frames for s in f.samples]
    assert numbers == list(range(50, 150))
    assert all(len(bytes(f)) <= 244 for f in frames)


@pytest.mark.parametrize(
    ("rate", "per"),
    [(DEFAULT_LIMITS.telemetry_max_hz + 1, 1), (50, 0), (50, p.MAX_SAMPLES_PER_NOTIFICATION + 1)],
)
def test_telemetry_rate_limits(bench: Bench, rate: int, per: int) -> None:
    response = bench.send(p.SetTelemetryRate, rate_hz=rate, samples_per_notification=per)
    assert response.status is S.OUT_OF_RANGE


def test_telemetry_that_would_not_fit_the_link_is_refused(bench: Bench) -> None:
    bench.fw.max_notification_bytes = 97  # an ATT MTU of 100
    assert bench.send(p.SetTelemetryRate, rate_hz=50, samples_per_notification=5).status is (
        S.OUT_OF_RANGE
    )
    assert bench.send(p.SetTelemetryRate, rate_hz=50, samples_per_notification=4).ok


def test_the_default_rate_respects_the_limits() -> None:
    b = Bench(limits=dataclasses.replace(DEFAULT_LIMITS, telemetry_max_hz=20))
    b.run(1_000, keepalive_ms=None)
    assert len(b.telemetry()) == 20
    assert b.fw.telemetry_hz == 20


def test_telemetry_rate_zero_is_off(bench: Bench) -> None:
    assert bench.send(p.SetTelemetryRate, rate_hz=0, samples_per_notification=1).ok
    bench.run(1_000, keepalive_ms=None)
    assert bench.telemetry() == []


def test_frame_counter_wraps_at_65536() -> None:
    limits = dataclasses.replace(DEFAULT_LIMITS, telemetry_max_hz=250)
    b = Bench(limits=limits)
    assert b.send(p.SetTelemetryRate, rate_hz=250, samples_per_notification=10).ok
    b.fw.tick(65_540 * 4)
    frames = [s.frame for s in b.telemetry()]
    assert frames[65_535:65_538] == [65_535, 0, 1]


def test_status_is_notified_on_every_change(bench: Bench) -> None:
    bench.fw.drain_outbox()
    assert bench.queue(1).ok
    assert bench.send(p.Start).ok
    assert bench.send(p.Stop).ok
    statuses = [f for f in bench.fw.drain_outbox() if isinstance(f, p.DeviceStatus)]
    assert [(s.state, s.queue_length, s.current_segment) for s in statuses] == [
        (STATE.IDLE, 1, p.NO_SEGMENT),
        (STATE.RUNNING, 1, 1),
        (STATE.IDLE, 0, p.NO_SEGMENT),
    ]
    assert statuses[-1] == bench.fw.status()


# -- link events and fault injection ---------------------------------------------------------------


def test_disconnect_stops_output_and_resets_the_link_settings(bench: Bench) -> None:
    running(bench)
    assert bench.send(p.SetIntensity, percent=50).ok
    assert bench.send(p.SetTelemetryRate, rate_hz=10, samples_per_notification=2).ok
    bench.fw.on_disconnect(bench.now)
    fw = bench.fw
    assert fw.output_ua == 0
    assert fw.state is STATE.IDLE
    assert fw.queue == ()
    assert (fw.intensity_pct, fw.telemetry_hz, fw.samples_per_notification) == (100, 50, 1)


def test_refused_commands_are_not_executed(bench: Bench) -> None:
    running(bench)
    bench.fw.refuse_commands(2, opcodes=[p.Opcode.STOP])
    assert bench.send(p.Keepalive).ok
    assert bench.send(p.Stop).status is S.REFUSED
    assert bench.send(p.Stop).status is S.REFUSED
    assert bench.fw.output_ua > 0
    assert bench.send(p.Stop).ok
    assert bench.fw.output_ua == 0
    bench.fw.refuse_commands(1)
    assert bench.send(p.Keepalive).status is S.REFUSED
    assert bench.send(p.Keepalive).ok
