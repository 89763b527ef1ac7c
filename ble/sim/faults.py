"""Fault detection of the simulated firmware: what latches FAULT and what may clear it.

:class:`FaultMonitor` looks at the sensed current and the physics after every firmware step.
Over-current (sensed current above the hard cap + 10 %), over-temperature (above 41 °C) and a
hardware fault *latch*: the flag stays set, and the device stays in FAULT, until CLEAR_FAULT
finds every cause gone. Over-temperature clears only below 40 °C, a 1 °C hysteresis so a device
hovering at the limit cannot flap between FAULT and IDLE. An over-current is a transient (the
sensor read too much once), so it is gone by the time CLEAR_FAULT arrives: output is off then.

Charging, low battery (below 10 %) and an expired lease are *live* flags: they show what is true
now and need no clearing.

It deliberately changes no state: ble/sim/firmware.py turns output off and moves the state
machine when :meth:`FaultMonitor.check` reports a latched fault.
"""

from __future__ import annotations

from ble import protocol as p
from ble.sim.physics import Physics

OVER_CURRENT_FACTOR = 1.10
OVER_TEMPERATURE_C = 41.0
TEMPERATURE_CLEAR_C = 40.0
LOW_BATTERY_PCT = 10


class FaultMonitor:
    """Latched fault flags plus the live warning flags of one device."""

    def __init__(self, physics: Physics, hard_cap_ua: int) -> None:
        self._physics = physics
        self._over_current_ua = hard_cap_ua * OVER_CURRENT_FACTOR
        self.latched = p.FaultFlags.NONE
        self.lease_expired = False

    @property
    def flags(self) -> p.FaultFlags:
        """Every flag as reported in telemetry and status."""
        flags = self.latched
        if self._physics.charging:
            flags |= p.FaultFlags.CHARGING
        if self._physics.battery_pct < LOW_BATTERY_PCT:
            flags |= p.FaultFlags.LOW_BATTERY
        if self.lease_expired:
            flags |= p.FaultFlags.LEASE_EXPIRED
        return flags

    def check(self, sensed_ua: float) -> p.FaultFlags:
        """Latch the faults present now; return those that were not latched before."""
        found = p.FaultFlags.NONE
        if sensed_ua > self._over_current_ua:
            found |= p.FaultFlags.OVER_CURRENT
        if self._physics.temperature_c > OVER_TEMPERATURE_C:
            found |= p.FaultFlags.OVER_TEMPERATURE
        if self._physics.hardware_fault:
            found |= p.FaultFlags.HARDWARE
        new = found & ~self.latched
        self.latched |= found
        return new

    def try_clear(self) -> p.FaultFlags:
        """Clear the latch if every cause is gone; return the causes still present (or NONE)."""
        remaining = p.FaultFlags.NONE
        hot = self._physics.temperature_c
        was_hot = p.FaultFlags.OVER_TEMPERATURE in self.latched
        if hot > OVER_TEMPERATURE_C or (was_hot and hot >= TEMPERATURE_CLEAR_C):
            remaining |= p.FaultFlags.OVER_TEMPERATURE
        if self._physics.hardware_fault:
            remaining |= p.FaultFlags.HARDWARE
        if not remaining:
            self.latched = p.FaultFlags.NONE
        return remaining
