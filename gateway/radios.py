"""The hub's radios as the device manager sees them: slots, what each hears, and placement.

One :class:`Radio` per entry of the ``--ble`` list (``radio0``, ``radio1``... in list order):
its bleak backends (replaced when a supervised transport is reopened), whether it is up, its
connection slots, what it heard in scans (RSSI and bleak's ``BLEDevice`` per device address)
and its counters (adverts heard, connect attempts and failures).

:func:`place` picks the radio a device connects through: among the radios that are up and have
a free slot, the one that heard the device loudest; a radio whose last attempt to reach this
device failed is tried after the others; a radio that never heard the device only when no
radio that did has room. It takes the slot in the same step (no await between choosing and
counting, so two devices cannot both take a radio's last slot). The caller gives it back with
:meth:`Radio.release` once the attempt failed or the link is gone.

What a radio heard lasts until a scan proves it stale: after each scan round (one scan on
every radio that is up, ``DeviceManager.scan``), :func:`forget_unheard` makes each radio whose
scan completed forget the devices another radio heard in that round and it did not. A radio
that went deaf (or out of range of a device) thus loses its readings at the next scan, while
the device is still heard elsewhere, instead of being preferred until a connect attempt through
it fails (which takes bumble's connect timeout). A device no radio hears in a round (connected,
so not advertising, or away) keeps its readings: nothing newer says which radio hears it best.
Readings thus live at most one scan period (``ble.discovery_interval_s`` plus the scan) past the
moment another radio hears the device and this one does not.

It deliberately does not: open or supervise radios (ble/backends.py and ble/supervisor.py do),
move a connected device to a better radio (a link that works is left alone; a device changes
radio only when its link is lost), or do any I/O.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import BaseBleakScanner

__all__ = ["ADVERT_WINDOW_S", "Heard", "Radio", "forget_unheard", "place"]

ADVERT_WINDOW_S = 5.0
"""``adverts_per_s`` averages over this many seconds."""
_MAX_ADVERTS_KEPT = 4096


@dataclass(frozen=True, slots=True)
class Heard:
    """What one radio heard of one device in its latest advert."""

    rssi: int
    device: BLEDevice
    """bleak's handle for the device as seen through this radio (its backend's details)."""


@dataclass(eq=False, slots=True)
class Radio:
    """One radio of the hub, for placement and the health view."""

    name: str
    mode: str
    """Its mode text as configured (``hci:tcp-client:127.0.0.1:9100``, ``bluez:hci0``)."""
    slots: int
    client_backend: type[BaseBleakClient] | None = None
    scanner_backend: type[BaseBleakScanner] | None = None
    up: bool = True
    used: int = 0
    """Slots held: from a connect attempt until its link is gone."""
    connect_attempts: int = 0
    connect_failures: int = 0
    heard: dict[str, Heard] = field(default_factory=dict)
    """Upper-case address -> the latest advert this radio heard from it."""
    _adverts: deque[float] = field(default_factory=lambda: deque(maxlen=_MAX_ADVERTS_KEPT))

    @property
    def free(self) -> int:
        return max(self.slots - self.used, 0)

    @property
    def bumble(self) -> bool:
        """True for a bumble central (``hci:``/``sim``), whose client can connect by address."""
        return self.mode.startswith(("hci:", "sim"))

    def take(self) -> None:
        self.used += 1
        self.connect_attempts += 1

    def release(self) -> None:
        self.used -= 1

    def hear(self, device: BLEDevice, rssi: int, now: float | None = None) -> None:
        """Record one advert from ``device``."""
        self.heard[device.address.upper()] = Heard(rssi, device)
        self._adverts.append(time.monotonic() if now is None else now)

    def adverts_per_s(self, now: float | None = None) -> float:
        """Adverts heard per second over the last ``ADVERT_WINDOW_S`` seconds."""
        now = time.monotonic() if now is None else now
        since = now - ADVERT_WINDOW_S
        while self._adverts and self._adverts[0] < since:
            self._adverts.popleft()
        return len(self._adverts) / ADVERT_WINDOW_S

    def device_for(self, address: str, fallback: BLEDevice, name: str) -> BLEDevice:
        """The ``BLEDevice`` to connect to ``address`` through this radio: the one it heard;
        else, for a bumble central, a bare one (its client then uses this radio's adapter,
        not the one another radio's scan bound the device to); else ``fallback``."""
        heard = self.heard.get(address.upper())
        if heard is not None:
            return heard.device
        if self.bumble:
            return BLEDevice(fallback.address, name, None)
        return fallback


def place(radios: list[Radio], address: str, avoid: Radio | None = None) -> Radio | None:
    """Take a slot on the best radio for the device at ``address`` (see the module docstring);
    None when no radio is up with a free slot."""
    key = address.upper()
    best: Radio | None = None
    best_rank: tuple[bool, bool, int, int] | None = None
    for radio in radios:
        if not radio.up or radio.free <= 0:
            continue
        heard = radio.heard.get(key)
        rank = (
            radio is avoid,
            heard is None,
            -heard.rssi if heard is not None else 0,
            radio.used,
        )
        if best_rank is None or rank < best_rank:
            best, best_rank = radio, rank
    if best is not None:
        best.take()
    return best


def forget_unheard(rounds: Mapping[Radio, set[str]]) -> None:
    """After one scan round: ``rounds`` maps each radio whose scan completed to the addresses
    it heard. Each forgets the devices another radio heard and it did not (see the module
    docstring); radios that did not scan keep everything."""
    heard_anywhere = {address.upper() for heard in rounds.values() for address in heard}
    for radio, heard in rounds.items():
        for address in heard_anywhere - {address.upper() for address in heard}:
            radio.heard.pop(address, None)
