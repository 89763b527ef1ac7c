"""Every advertiser a radio hears: the installer's first check that Bluetooth works at all.

:func:`listen_to_all` scans through bleak's public API with whichever scanner backend the BLE
mode opened (bleak's own for ``auto``/``bluez``, the bumble backend for ``sim``/``hci:``) and
no service filter, and gives one :class:`Advertiser` per address: name, signal, service UUIDs,
manufacturer ids, and whether it speaks the microcurrent profile. :func:`describe_uuid` and
:func:`company_name` turn the numbers into words for a person.

It deliberately does not: connect to anything, remember what it heard (the device manager's
scan does that for microcurrent devices), or decode any vendor's manufacturer data.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bleak import BleakScanner
from bleak.uuids import uuidstr_to_str

from ble import protocol as p

if TYPE_CHECKING:
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData, BaseBleakScanner

__all__ = ["Advertiser", "company_name", "describe_uuid", "listen_to_all"]

_BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"


@dataclass(frozen=True, slots=True)
class Advertiser:
    """One address heard during a scan, as last heard."""

    address: str
    name: str | None
    rssi: int
    """Signal strength of the latest advertisement, in dBm."""
    tx_power: int | None
    """The transmit power it advertises, in dBm, if it does."""
    service_uuids: tuple[str, ...]
    """Service UUIDs it advertises (lower-case, 128-bit form, as bleak gives them)."""
    manufacturer_ids: tuple[int, ...]
    """Bluetooth SIG company identifiers of its manufacturer-specific data."""
    microcurrent: bool
    """It advertises the microcurrent service: ``mcgw scan`` (without ``--all``) lists it."""

    @classmethod
    def from_advertisement(cls, device: BLEDevice, adv: AdvertisementData) -> Advertiser:
        uuids = tuple(uuid.lower() for uuid in adv.service_uuids)
        return cls(
            address=device.address.upper(),
            name=adv.local_name or device.name or None,
            rssi=adv.rssi,
            tx_power=adv.tx_power,
            service_uuids=uuids,
            manufacturer_ids=tuple(sorted(adv.manufacturer_data)),
            microcurrent=p.SERVICE_UUID.lower() in uuids,
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: lists for the tuples."""
        return {
            "address": self.address,
            "name": self.name,
            "rssi": self.rssi,
            "tx_power": self.tx_power,
            "service_uuids": list(self.service_uuids),
            "manufacturer_ids": list(self.manufacturer_ids),
            "microcurrent": self.microcurrent,
        }


async def listen_to_all(
    timeout_s: float, *, backend: type[BaseBleakScanner] | None = None
) -> list[Advertiser]:
    """Scan ``timeout_s`` seconds with no filter; every advertiser heard, strongest first.

    ``backend`` is the bleak scanner backend of the BLE mode (``None``: bleak's own). Raises
    what ``BleakScanner`` raises (``BleakError``, ``OSError``); the caller translates.
    """
    if backend is None:
        found = await BleakScanner.discover(timeout_s, return_adv=True)
    else:
        found = await BleakScanner.discover(timeout_s, return_adv=True, backend=backend)
    heard = [Advertiser.from_advertisement(device, adv) for device, adv in found.values()]
    return sorted(heard, key=lambda a: (-a.rssi, a.address))


def describe_uuid(uuid: str) -> str:
    """A service UUID for a person: ``180d (Heart Rate)``, the short form of SIG-assigned
    UUIDs, the full form otherwise; the microcurrent service by its name."""
    uuid = uuid.lower()
    if uuid == p.SERVICE_UUID.lower():
        return "microcurrent"
    short = uuid
    if uuid.endswith(_BASE_UUID_TAIL) and uuid.startswith("0000"):
        short = uuid[4:8]
    name = uuidstr_to_str(uuid)
    return short if name in ("", "Unknown") else f"{short} ({name})"


@functools.cache
def _companies() -> dict[int, str]:
    # bumble's table of SIG company identifiers: a plain dict module, cheap to import alone.
    from bumble.company_ids import COMPANY_IDENTIFIERS

    return dict(COMPANY_IDENTIFIERS)


def company_name(company_id: int) -> str:
    """A manufacturer id for a person: ``0x004C (Apple, Inc.)``, or the hex alone."""
    name = _companies().get(company_id)
    return f"0x{company_id:04X}" if name is None else f"0x{company_id:04X} ({name})"
