"""``mcgw doctor``: the host checked as an installer would, each problem with its fix.

:func:`examine` runs every check the settings call for and returns one :class:`Check` each, in
a fixed order: the Bluetooth side of the configured BLE mode first (``bluetooth.py``: D-Bus,
BlueZ, adapters, rfkill, permissions, then the radio itself, which must answer and hear
advertisers), then the hub's other outside parts (``services.py``: database, journal, HTTP
port, mDNS, MQTT). A check the mode or settings do not need is ``skip`` with the reason (the
simulator needs no BlueZ; MQTT off needs no broker).

Every check is bounded in time and changes nothing on the host: no database is created or
migrated, no adapter powered, no port held past the check. It deliberately does not fix
anything itself: each ``warn``/``fail`` carries the command or setting that fixes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings

__all__ = ["DEFAULT_SCAN_S", "Check", "Status", "examine"]

DEFAULT_SCAN_S = 2.0
"""How long the radio check listens for advertisers."""


class Status(StrEnum):
    """How one check went: ``fail`` makes ``mcgw doctor`` exit non-zero."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Check:
    """One check: its name, how it went, what was seen, and for a problem the fix."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {key: str(value) for key, value in asdict(self).items()}


async def examine(settings: Settings, *, scan_s: float = DEFAULT_SCAN_S) -> list[Check]:
    """Every check for ``settings``, in order (see the module docstring)."""
    from gateway.doctor.bluetooth import bluetooth_checks
    from gateway.doctor.services import service_checks

    found: list[Check] = []
    for mode in settings.ble.mode:  # each radio of the list; a check two radios share once
        for check in await bluetooth_checks(mode, scan_s=scan_s):
            if check not in found:
                found.append(check)
    return [*found, *await service_checks(settings)]
