"""A bleak scanner backend that runs on bumble: ``BleakScanner(backend=BumbleScanner, ...)``.

Give it the adapter with ``backend=BumbleScanner.bound_to(adapter)`` (typed, works with
``BleakScanner.discover`` / ``find_device_by_*``), or ``bumble_adapter=adapter`` (fine at run
time, but bleak's ``ExtraArgs`` type hints reject it). ``adapter=adapter`` also works, but bleak
3.1 emits a DeprecationWarning for that keyword. Every ``BLEDevice`` it yields carries a
``BumbleDeviceDetails`` in ``.details``, which is how ``BumbleClient`` finds the adapter again.

Advertisements become ``AdvertisementData`` (local name, service UUIDs, service data,
manufacturer data, TX power, RSSI), are filtered with ``is_allowed_uuid`` and de-duplicated:
the software controller echoes every advertisement as a scan response, so repeated UUIDs are
collapsed and a report identical to the device's previous one (same data and RSSI) re-fires the
detection callbacks at most every ``REPEAT_REPORT_INTERVAL_S`` (a presence heartbeat, instead of
one callback per 20 ms advertisement).

It deliberately does not: own the radio (several scanners share one adapter), or filter by
anything but service UUIDs (that is the caller's detection callback's job).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Literal

from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import BleakError
from bumble.core import UUID, AdvertisingData
from bumble.device import Advertisement

from ble.bumble.adapter import BumbleAdapter, BumbleDeviceDetails
from ble.bumble.client import bleak_uuid, resolve_adapter
from ble.errors import BleError

__all__ = ["REPEAT_REPORT_INTERVAL_S", "BumbleScanner", "advertisement_data"]

log = logging.getLogger(__name__)

#: An unchanged advertisement is reported again after this long (changes are reported at once).
REPEAT_REPORT_INTERVAL_S = 1.0

_T = AdvertisingData.Type
_UUID_LISTS = (
    _T.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
    _T.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
    _T.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS,
    _T.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS,
    _T.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
    _T.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
)
_SERVICE_DATA = (
    _T.SERVICE_DATA_16_BIT_UUID,
    _T.SERVICE_DATA_32_BIT_UUID,
    _T.SERVICE_DATA_128_BIT_UUID,
)


def advertisement_data(advertisement: Advertisement) -> AdvertisementData:
    """Translate one bumble advertisement (advertising data + scan response) to bleak's form."""
    data: AdvertisingData = advertisement.data
    local_name = data.get(_T.COMPLETE_LOCAL_NAME) or data.get(_T.SHORTENED_LOCAL_NAME)
    service_uuids: dict[str, None] = {}  # ordered set: the echoed scan response repeats them
    # The loops below lose the Literal types bumble's overloads need; narrow at run time.
    for list_type in _UUID_LISTS:
        for uuids in data.get_all(list_type):
            if isinstance(uuids, list):
                for value in uuids:
                    if isinstance(value, UUID):
                        service_uuids[bleak_uuid(value)] = None
    service_data: dict[str, bytes] = {}
    for data_type in _SERVICE_DATA:
        for entry in data.get_all(data_type):
            if isinstance(entry, tuple) and isinstance(entry[0], UUID):
                service_data[bleak_uuid(entry[0])] = bytes(entry[1])
    manufacturer_data = {
        int(company): bytes(payload)
        for company, payload in data.get_all(_T.MANUFACTURER_SPECIFIC_DATA)
    }
    tx_power = data.get(_T.TX_POWER_LEVEL)
    return AdvertisementData(
        local_name=str(local_name) if local_name is not None else None,
        manufacturer_data=manufacturer_data,
        service_data=service_data,
        service_uuids=list(service_uuids),
        tx_power=int(tx_power) if tx_power is not None else None,
        rssi=int(advertisement.rssi),
        platform_data=(advertisement,),
    )


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend over a ``BumbleAdapter``. Use through ``bleak.BleakScanner``."""

    #: Set on the subclasses ``bound_to()`` makes.
    bound_adapter: ClassVar[BumbleAdapter | None] = None

    @classmethod
    def bound_to(cls, adapter: BumbleAdapter) -> type[BumbleScanner]:
        """This backend with ``adapter`` built in: ``BleakScanner(backend=...)``."""
        # Same name as the base: bleak reports it as backend_id.
        return type(cls.__name__, (cls,), {"bound_adapter": adapter})

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        adapter = resolve_adapter(kwargs, bound=self.bound_adapter)
        if adapter is None:
            raise BleakError(
                "BumbleScanner needs a BumbleAdapter: "
                "BleakScanner(backend=BumbleScanner.bound_to(adapter))"
            )
        self._adapter: BumbleAdapter = adapter
        self._active = scanning_mode == "active"
        self._remove_listener: Callable[[], Awaitable[None]] | None = None
        self._last_report: dict[str, tuple[AdvertisementData, float]] = {}

    async def start(self) -> None:
        self.seen_devices = {}
        self._last_report.clear()
        if self._remove_listener is not None:
            return
        try:
            self._remove_listener = await self._adapter.add_advertisement_listener(
                self._on_advertisement, active=self._active
            )
        except BleError as exc:
            raise BleakError(str(exc)) from exc

    async def stop(self) -> None:
        remove, self._remove_listener = self._remove_listener, None
        if remove is not None:
            try:
                await remove()
            except BleError as exc:
                raise BleakError(str(exc)) from exc

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        adv = advertisement_data(advertisement)
        if not self.is_allowed_uuid(adv.service_uuids):
            return
        address = str(advertisement.address.to_string(False))
        now = asyncio.get_running_loop().time()
        previous = self._last_report.get(address)
        if (
            previous is not None
            and _same_report(previous[0], adv)
            and now - previous[1] < REPEAT_REPORT_INTERVAL_S
        ):
            return
        self._last_report[address] = (adv, now)
        device = self.create_or_update_device(
            address,
            address,
            adv.local_name,
            BumbleDeviceDetails(self._adapter, advertisement.address),
            adv,
        )
        self.call_detection_callbacks(device, adv)


def _same_report(a: AdvertisementData, b: AdvertisementData) -> bool:
    # Everything but platform_data, which holds the (always new) bumble object.
    return a[:-1] == b[:-1]
