"""The safety supervisor: S1-S6 and S10 enforced independently of the scheduler.

Two checks that do not trust the code that produced the data:

* ``check_command`` is installed as the link's write guard. It decodes the exact bytes that are
  about to go on air and refuses any segment above min(device hard cap, hub cap, zone cap, user
  cap) (S1), any onset without a soft-start ramp (S2), and any output command while no session
  holds the device. Refused bytes are never written, and the ``on_violation`` callback the
  session armed it with fails the session, whichever code path wrote them.
* ``check_status`` (state and fault flags, from a status notification or a sample) and
  ``check_sample`` (also the measured current above cap + margin and the temperature) return a
  fault reason for over-current, over-temperature, a device fault or charging (S6).

S3 (stop wins, drop an unconfirmed stop) lives in ``gateway.devices.DeviceManager.stop_output``
and ``ble.link.DeviceLink.stop``; S4 (dead man) in the device's lease; S5 (contact) and S10
(length) in the session, which takes the cap from ``session_cap_s``. docs/architecture.md maps
every invariant to its code and tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ble import protocol as p
from ble.errors import ProtocolError
from gateway.config import ABSOLUTE_MAX_SESSION_MIN, SafetySettings
from gateway.errors import SafetyViolation
from gateway.programs import Caps

log = logging.getLogger(__name__)

ALWAYS_ALLOWED = (p.Hello, p.Stop, p.Keepalive, p.SetTelemetryRate, p.Pause, p.ClearFault)
"""Commands that never start or raise output, allowed with or without a session."""


class SafetySupervisor:
    """Guards one device's link. ``arm(caps)`` when a session takes it, ``disarm()`` after."""

    def __init__(self, address: str, settings: SafetySettings) -> None:
        self.address = address
        self.settings = settings
        self.caps: Caps | None = None
        self.blocked = 0
        """Commands refused so far (a metric; any non-zero value is a bug upstream)."""
        self._on_violation: Callable[[str], None] | None = None

    def arm(self, caps: Caps, on_violation: Callable[[str], None] | None = None) -> None:
        """A session holds the device under ``caps``; ``on_violation(why)`` ends it on a refusal.

        The callback makes a refusal fatal to the session whatever code path wrote the bytes
        (scheduler, session control, or a bug), not only where the caller handles the error.
        """
        self.caps = caps
        self._on_violation = on_violation

    def disarm(self) -> None:
        self.caps = None
        self._on_violation = None

    def _refuse(self, why: str) -> SafetyViolation:
        self.blocked += 1
        log.error("safety: refused a command to %s: %s", self.address, why)
        callback = self._on_violation
        if callback is not None:
            try:
                callback(why)
            except Exception:  # the refusal itself must stand whatever the callback does
                log.exception("safety violation handler for %s failed", self.address)
        return SafetyViolation(f"{self.address}: {why}")

    def check_command(self, _command: p.Command, data: bytes) -> None:
        """Write guard: raise SafetyViolation unless ``data`` is safe to send now."""
        try:
            command = p.decode_command(data)
        except ProtocolError as exc:
            raise self._refuse(f"unencodable command bytes: {exc}") from exc
        if isinstance(command, ALWAYS_ALLOWED):
            return
        caps = self.caps
        if caps is None:
            raise self._refuse(f"{command.OPCODE.name} while no session holds the device")
        soft_start = self.settings.soft_start_ms
        if isinstance(command, p.QueueSegment):
            cap = caps.for_zone(command.zone)
            if command.amplitude_ua > cap:
                raise self._refuse(
                    f"segment {command.segment_id} asks {command.amplitude_ua} µA on "
                    f"{command.zone.name.lower()}, above its cap of {cap} µA"
                )
            if command.ramp_ms < soft_start:
                raise self._refuse(
                    f"segment {command.segment_id} ramps in {command.ramp_ms} ms, "
                    f"under the {soft_start} ms soft start"
                )
        elif isinstance(command, p.SetIntensity):
            if command.percent > 100:
                raise self._refuse(f"intensity {command.percent} % is above 100 %")
            if command.ramp_ms < soft_start:
                raise self._refuse(f"intensity change ramps in {command.ramp_ms} ms")
        elif isinstance(command, p.Resume) and command.ramp_ms < soft_start:
            raise self._refuse(f"resume ramps in {command.ramp_ms} ms")

    def check_status(self, state: p.DeviceState, faults: p.FaultFlags) -> str | None:
        """Return a fault reason if the device's state or fault flags must stop a session (S6).

        The same reasons come from a status notification, a telemetry sample or a refused
        command, whichever reports the fault first.
        """
        if state is p.DeviceState.CHARGING or faults & p.FaultFlags.CHARGING:
            return "charging: the device must not run while it charges"
        if faults & p.FaultFlags.OVER_CURRENT:
            return "over-current reported by the device"
        if faults & p.FaultFlags.OVER_TEMPERATURE:
            return "over-temperature reported by the device"
        if faults & p.FaultFlags.HARDWARE:
            return "hardware fault reported by the device"
        if state is p.DeviceState.FAULT:
            return "the device reports a fault"
        return None

    def check_sample(
        self,
        sample: p.TelemetrySample,
        zone: p.Zone | None,
        *,
        earlier_zone: p.Zone | None = None,
    ) -> str | None:
        """Return a fault reason if this sample must stop the session (S6), else None.

        ``earlier_zone`` is the zone of the segment before when the sample's period reaches
        back into it (its segment began after the period did): the mean then mixes the end
        of one level with the start of the next, and it is held to the larger of the two
        caps. A real over-current in the new zone shows in the next sample, whose period lies
        within it; the device's own over-current flag is checked on every sample regardless.
        """
        reported = self.check_status(sample.state, sample.faults)
        if reported is not None:
            return reported
        if sample.temperature_c > self.settings.over_temperature_c:
            return (
                f"over-temperature: {sample.temperature_c:.1f} °C is above "
                f"{self.settings.over_temperature_c:.1f} °C"
            )
        caps = self.caps
        if caps is not None:
            cap = caps.for_zone(zone) if zone is not None else self.settings.hub_cap_ua
            if earlier_zone is not None:
                cap = max(cap, caps.for_zone(earlier_zone))
            limit = cap * (1 + self.settings.over_current_margin)
            if sample.current_mean_ua > limit:
                return (
                    f"over-current: measured {sample.current_mean_ua} µA, above "
                    f"{cap} µA + {self.settings.over_current_margin:.0%}"
                )
        return None


def mean_reaches_back(sample: p.TelemetrySample, last_sample_ms: int | None) -> bool:
    """Whether the sample's period (since the sample before, ``last_sample_ms`` in device
    time; None: unknown) began before its segment did, so that its mean current mixes the
    segment before with this one (``SafetySupervisor.check_sample``'s ``earlier_zone``)."""
    if last_sample_ms is None:
        return True
    period_ms = (sample.device_time_ms - last_sample_ms) % p.DEVICE_TIME_MOD
    return sample.segment_elapsed_ms < period_ms


def session_cap_s(settings: SafetySettings) -> float:
    """S10: the longest a session may run, never above the absolute 30 minutes."""
    return float(min(settings.max_session_min, ABSOLUTE_MAX_SESSION_MIN) * 60)
