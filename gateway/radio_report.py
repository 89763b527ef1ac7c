"""What the hub's radios and device links look like right now: the Bluetooth health view's data.

One snapshot type for every consumer (``GET /api/v1/radios``, the Prometheus metrics, the web
page's admin panel), built by :func:`bluetooth_report` from the runtime without any I/O, so
reading it never waits on a radio or the database.

It deliberately does not: count anything itself (the radios and the device manager keep their
counters) or decide placement.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BluetoothReport", "DeviceLinkReport", "RadioReport"]


@dataclass(frozen=True, slots=True)
class RadioReport:
    """One radio of the hub."""

    name: str
    """Stable id within the hub: ``radio0``, ``radio1``... in the order of the ``--ble`` list."""
    mode: str
    """Its mode text as configured: ``hci:tcp-client:127.0.0.1:9100``, ``bluez:hci0``, ``sim:2``."""
    address: str | None
    """Its own Bluetooth address when known (bumble centrals); None for BlueZ's default adapter."""
    state: str
    """``up``, ``down``, ``reopening`` (a supervised transport) or ``unknown`` (BlueZ)."""
    slots: int
    """Connection slots configured for this radio."""
    slots_used: int
    """Slots held now: from a connect attempt until that link is gone."""
    adverts_per_s: float
    """Advertisements heard per second, averaged over the last few seconds."""
    connect_attempts: int
    connect_failures: int
    reopens: int
    """Times its transport was reopened after a loss."""
    last_error: str | None

    @property
    def slots_free(self) -> int:
        return max(self.slots - self.slots_used, 0)


@dataclass(frozen=True, slots=True)
class DeviceLinkReport:
    """One managed device's link."""

    address: str
    name: str
    state: str
    radio: str | None
    """The ``RadioReport.name`` its link (or connect attempt) uses; None while it has none."""
    signal_dbm: int | None
    """The last signal strength heard from it (from the link or its adverts)."""
    mtu: int | None
    reconnects: int
    last_disconnect_reason: str | None


@dataclass(frozen=True, slots=True)
class BluetoothReport:
    radios: tuple[RadioReport, ...]
    devices: tuple[DeviceLinkReport, ...]
