"""The physical world around a simulated microcurrent device: skin, gel, battery, heat.

:class:`Physics` models what real firmware can sense and what limits its output stage:

- the electrode-skin load: fresh gel gives 5-30 kΩ (drawn once from the seed); the gel dries
  over minutes and the impedance rises linearly with its age up to a dry ceiling; electrodes
  lifted off the skin are an open circuit;
- the compliance limit: the output stage cannot drive more than ``compliance_v`` across the load,
  so the delivered current is ``min(set point, V / Z)``; nothing flows into an open circuit, while
  charging, or from an empty battery;
- contact quality 0-100 derived from the impedance (log scale, 100 at or below 10 kΩ, 0 at the
  contact threshold);
- battery drain (idle plus a share proportional to the delivered current), and charging;
- device temperature, relaxing towards ambient (skin ~33 °C) plus heating from output and
  charging;
- small Gaussian measurement noise from ``random.Random(seed)``.

Everything is driven by explicit time steps (:meth:`Physics.step`): no asyncio, no wall clock.
The same seed and the same calls give the same numbers, bit for bit.

It deliberately does not model waveforms (the current is the amplitude envelope), tissue
response, or the firmware's decisions (gating, faults, ramps): that is ble/sim/firmware.py.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

_MS_PER_MIN = 60_000.0
_MS_PER_H = 3_600_000.0


@dataclass(frozen=True, slots=True)
class PhysicsConfig:
    """Constants of the simulated world; the defaults give a plausible consumer device."""

    compliance_v: float = 12.0
    gel_fresh_min_ohm: float = 8_000.0
    gel_fresh_max_ohm: float = 20_000.0
    gel_drying_per_min: float = 0.12
    """Fractional impedance rise per minute of gel age (0.12: x3.4 after 20 minutes)."""
    gel_dry_ohm: float = 400_000.0
    """Ceiling of a fully dried gel layer: above the contact threshold, so dry gel loses contact."""
    contact_max_ohm: float = 200_000.0
    """Above this load the firmware treats the electrodes as not in contact."""
    excellent_contact_ohm: float = 10_000.0
    ambient_c: float = 33.0
    heating_c_per_ua: float = 0.005
    """Steady-state rise above ambient per µA delivered (400 µA: +2 °C)."""
    charging_heat_c: float = 2.0
    thermal_tau_s: float = 90.0
    battery_idle_pct_per_h: float = 1.0
    battery_pct_per_h_per_ua: float = 0.05
    """Extra drain per µA delivered (400 µA: 20 %/h)."""
    charge_pct_per_min: float = 1.5
    noise: float = 0.01
    """Relative standard deviation of current and impedance measurements."""


def contact_quality(impedance_ohm: float | None, config: PhysicsConfig) -> int:
    """0 (no contact) to 100 (excellent), on a log scale of the load impedance."""
    if impedance_ohm is None or impedance_ohm >= config.contact_max_ohm:
        return 0
    if impedance_ohm <= config.excellent_contact_ohm:
        return 100
    # Log scale because contact problems show up as multiples of the impedance, not offsets.
    span = math.log(config.contact_max_ohm / config.excellent_contact_ohm)
    return max(0, min(100, round(100 * math.log(config.contact_max_ohm / impedance_ohm) / span)))


class Physics:
    """The deterministic world model of one device. Mutate it with the scenario methods."""

    def __init__(self, seed: int, config: PhysicsConfig | None = None) -> None:
        self.config = config or PhysicsConfig()
        # Reproducible noise is the point here, not unpredictability.
        self._rng = random.Random(seed)  # noqa: S311
        cfg = self.config
        self.fresh_gel_ohm = self._rng.uniform(cfg.gel_fresh_min_ohm, cfg.gel_fresh_max_ohm)
        self.gel_age_min = 0.0
        # The simulated user has already applied gel and holds the device to their face, so a
        # session can start without any scenario set-up.
        self.on_skin = True
        self.battery_pct = 100.0
        self.charging = False
        self.hardware_fault = False
        self.ambient_c = cfg.ambient_c
        self.temperature_c = cfg.ambient_c
        self._injected_ua: float | None = None

    # -- scenario ------------------------------------------------------------------------------

    def set_on_skin(self, on_skin: bool) -> None:
        self.on_skin = on_skin

    def dry_gel(self, minutes: float) -> None:
        """Age the gel by ``minutes`` at once (impedance rises, contact worsens)."""
        if minutes < 0:
            raise ValueError(f"gel cannot un-dry: minutes={minutes} must be >= 0")
        self.gel_age_min += minutes

    def apply_gel(self) -> None:
        """Fresh gel: the impedance falls back to its fresh value."""
        self.gel_age_min = 0.0

    def set_battery(self, pct: float) -> None:
        self.battery_pct = max(0.0, min(100.0, float(pct)))

    def set_charging(self, charging: bool) -> None:
        self.charging = charging

    def set_temperature(self, celsius: float) -> None:
        """Put the device in surroundings at ``celsius`` (it stays there until set again)."""
        self.ambient_c = float(celsius)
        self.temperature_c = float(celsius)

    def inject_over_current(self, ua: float) -> None:
        """The next current measurement reads ``ua`` (a one-shot transient, e.g. a short)."""
        self._injected_ua = float(ua)

    def set_hardware_fault(self, active: bool) -> None:
        self.hardware_fault = active

    # -- state ---------------------------------------------------------------------------------

    @property
    def impedance_ohm(self) -> float | None:
        """True load impedance, or None for an open circuit (off the skin)."""
        if not self.on_skin:
            return None
        cfg = self.config
        wet = self.fresh_gel_ohm * (1.0 + cfg.gel_drying_per_min * self.gel_age_min)
        return min(wet, cfg.gel_dry_ohm)

    @property
    def battery_level(self) -> int:
        """Battery as the device reports it: whole percent, 0-100."""
        return max(0, min(100, round(self.battery_pct)))

    @property
    def contact(self) -> bool:
        """Whether the electrodes are on skin with a load the firmware may drive."""
        z = self.impedance_ohm
        return z is not None and z < self.config.contact_max_ohm

    def delivered_ua(self, set_ua: float) -> float:
        """The current that actually flows for a set point, after the compliance limit."""
        z = self.impedance_ohm
        if set_ua <= 0 or z is None or self.charging or self.battery_pct <= 0:
            return 0.0
        return min(set_ua, self.config.compliance_v / z * 1e6)

    def sense_current(self, delivered_ua: float) -> float:
        """What the current sensor reads now: the true current, or a pending injected value."""
        if self._injected_ua is not None:
            value, self._injected_ua = self._injected_ua, None
            return value
        return delivered_ua

    # -- time ----------------------------------------------------------------------------------

    def step(self, dt_ms: float, delivered_ua: float) -> None:
        """Advance the world by ``dt_ms`` while ``delivered_ua`` flows."""
        if dt_ms <= 0:
            return
        cfg = self.config
        self.gel_age_min += dt_ms / _MS_PER_MIN
        if self.charging:
            self.battery_pct = min(
                100.0, self.battery_pct + cfg.charge_pct_per_min * dt_ms / _MS_PER_MIN
            )
        else:
            drain = cfg.battery_idle_pct_per_h + cfg.battery_pct_per_h_per_ua * delivered_ua
            self.battery_pct = max(0.0, self.battery_pct - drain * dt_ms / _MS_PER_H)
        target = self.ambient_c + cfg.heating_c_per_ua * delivered_ua
        if self.charging:
            target += cfg.charging_heat_c
        # First-order thermal lag: exact for any step length, so coarse ticks do not overshoot.
        alpha = 1.0 - math.exp(-dt_ms / (cfg.thermal_tau_s * 1000.0))
        self.temperature_c += (target - self.temperature_c) * alpha

    # -- noisy measurements (each draws from the seeded generator) -----------------------------

    def measure(self, value: float) -> float:
        """``value`` with relative Gaussian noise, never negative."""
        return max(0.0, value * (1.0 + self._rng.gauss(0.0, self.config.noise)))

    def measure_impedance_ohm(self) -> float | None:
        z = self.impedance_ohm
        return None if z is None else self.measure(z)

    def measure_temperature_c(self) -> float:
        return self.temperature_c + self._rng.gauss(0.0, 0.05)
