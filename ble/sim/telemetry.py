"""Telemetry sampling of the simulated firmware.

:class:`TelemetrySampler` turns the physics and the firmware's state into
:class:`~ble.protocol.TelemetrySample` values on an absolute time grid: sample ``k`` after a
(re)configuration at ``base`` is due at ``base + k * 1000 // rate_hz`` ms, so the rate never
drifts whatever the tick pattern. Between samples it integrates the sensed current, so
``current_mean_ua`` is the time-weighted mean over the sample period and ``current_peak_ua`` its
maximum; measurement noise is applied once per sample. Samples are packed ``per_notification``
to a :class:`~ble.protocol.Telemetry` notification; the frame counter wraps at 65536.

It deliberately decides nothing: the firmware tells it the state, segment and contact.
"""

from __future__ import annotations

from ble import protocol as p
from ble.sim.physics import Physics, contact_quality

DEFAULT_TELEMETRY_HZ = 50
DEFAULT_SAMPLES_PER_NOTIFICATION = 1
NEVER_MS = 1 << 62
"""``next_due_ms`` while telemetry is off (rate 0)."""

_U16_MAX = 0xFFFF
_I16_MIN, _I16_MAX = -0x8000, 0x7FFF
_IMPEDANCE_MAX = p.IMPEDANCE_OPEN - 1  # the largest value that does not read as "open"


class TelemetrySampler:
    """Sample clock, current integrator and notification packer of one device."""

    def __init__(self, physics: Physics, start_ms: int, *, max_hz: int) -> None:
        self._physics = physics
        self._frame = 0
        self._buffer: list[p.TelemetrySample] = []
        self.default_hz = min(DEFAULT_TELEMETRY_HZ, max_hz)
        self.rate_hz = self.default_hz
        self.per_notification = DEFAULT_SAMPLES_PER_NOTIFICATION
        self._base_ms = start_ms
        self._k = 1
        self._charge_ua_ms = 0.0
        self._span_ms = 0
        self._peak_ua = 0.0

    @property
    def next_due_ms(self) -> int:
        if self.rate_hz == 0:
            return NEVER_MS
        return self._base_ms + self._k * 1000 // self.rate_hz

    def configure(
        self,
        now_ms: int,
        rate_hz: int | None = None,
        per_notification: int = DEFAULT_SAMPLES_PER_NOTIFICATION,
    ) -> list[p.Telemetry]:
        """Restart the sample clock at ``now_ms``; return what was buffered, as a notification.

        ``rate_hz=None`` is the default setting of a new connection: min(50, telemetry_max_hz).
        """
        flushed = [p.Telemetry(tuple(self._buffer))] if self._buffer else []
        self._buffer = []
        self.rate_hz = self.default_hz if rate_hz is None else rate_hz
        self.per_notification = per_notification
        self._base_ms = now_ms
        self._k = 1
        self._reset_integrator()
        return flushed

    def accumulate(self, sensed_ua: float, dt_ms: int) -> None:
        self._charge_ua_ms += sensed_ua * dt_ms
        self._span_ms += dt_ms
        self._peak_ua = max(self._peak_ua, sensed_ua)

    def sample(
        self,
        now_ms: int,
        *,
        state: p.DeviceState,
        segment_id: int,
        elapsed_ms: int,
        contact: bool,
        faults: p.FaultFlags,
    ) -> p.Telemetry | None:
        """Take the sample due now; return a notification once ``per_notification`` are held."""
        physics = self._physics
        mean_raw = self._charge_ua_ms / self._span_ms if self._span_ms else 0.0
        # Always draw the same number of random values per sample, so noise stays aligned with
        # the sample count and the byte stream is reproducible from the seed.
        mean = round(physics.measure(mean_raw))
        peak = max(mean, round(physics.measure(self._peak_ua)))
        z = physics.measure_impedance_ohm()
        temperature = round(physics.measure_temperature_c() * 10)
        if z is None:
            impedance = p.IMPEDANCE_OPEN
        else:
            impedance = min(_IMPEDANCE_MAX, round(z / p.IMPEDANCE_UNIT_OHM))
        sample = p.TelemetrySample(
            frame=self._frame,
            device_time_ms=now_ms & 0xFFFF_FFFF,
            state=state,
            segment_id=segment_id,
            segment_elapsed_ms=min(_U16_MAX, elapsed_ms),
            current_mean_ua=min(_U16_MAX, mean),
            current_peak_ua=min(_U16_MAX, peak),
            impedance_10ohm=impedance,
            contact_quality=contact_quality(z, physics.config) if contact else 0,
            battery_pct=physics.battery_level,
            temperature_dc=max(_I16_MIN, min(_I16_MAX, temperature)),
            faults=faults,
        )
        self._frame = (self._frame + 1) & _U16_MAX
        self._k += 1
        self._reset_integrator()
        self._buffer.append(sample)
        if len(self._buffer) < self.per_notification:
            return None
        frame = p.Telemetry(tuple(self._buffer))
        self._buffer = []
        return frame

    def _reset_integrator(self) -> None:
        self._charge_ua_ms = 0.0
        self._span_ms = 0
        self._peak_ua = 0.0
