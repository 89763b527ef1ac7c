"""A stock BLE peripheral mcgw has never seen: a bumble heart-rate sensor on the sim's air.

It connects to a running ``mcgw sim`` over HCI-over-TCP like any bumble host, so it gets its
own controller on the same virtual air as the simulated devices, and advertises a name, the
Heart Rate service (0x180D) and manufacturer data under Nordic Semiconductor's company id.
Nothing in it is microcurrent: it is what an installer's ``mcgw scan --all`` must still list.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator

from bumble.core import AdvertisingData
from bumble.device import Device
from bumble.gatt import (
    GATT_HEART_RATE_MEASUREMENT_CHARACTERISTIC,
    GATT_HEART_RATE_SERVICE,
    Characteristic,
    Service,
)
from bumble.hci import Address
from bumble.transport import open_transport

NAME = "HRM-Stranger"
ADDRESS = "F0:0D:00:00:00:01"
NORDIC = 0x0059
HEART_RATE_UUID = "0000180d-0000-1000-8000-00805f9b34fb"
HEART_RATE = GATT_HEART_RATE_SERVICE


@contextlib.asynccontextmanager
async def heart_rate_sensor(hci_port: int) -> AsyncIterator[Device]:
    """The stranger, advertising every 20 ms on the sim at ``hci_port`` until the block ends."""
    _t = AdvertisingData
    async with await open_transport(f"tcp-client:127.0.0.1:{hci_port}") as transport:
        device = Device.with_hci(NAME, Address(ADDRESS), transport.source, transport.sink)
        device.add_service(
            Service(
                GATT_HEART_RATE_SERVICE,
                [
                    Characteristic(
                        GATT_HEART_RATE_MEASUREMENT_CHARACTERISTIC,
                        Characteristic.Properties.NOTIFY,
                        Characteristic.READABLE,
                        bytes([0, 72]),
                    )
                ],
            )
        )
        device.advertising_data = bytes(
            AdvertisingData(
                [
                    (_t.FLAGS, bytes([0x06])),
                    (_t.COMPLETE_LOCAL_NAME, NAME.encode()),
                    (_t.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, HEART_RATE.to_bytes()),
                    (_t.MANUFACTURER_SPECIFIC_DATA, struct.pack("<H", NORDIC) + b"\x01\x02"),
                ]
            )
        )
        await device.power_on()
        await device.start_advertising(advertising_interval_min=20, advertising_interval_max=20)
        try:
            yield device
        finally:
            with contextlib.suppress(Exception):
                await device.stop_advertising()
            with contextlib.suppress(Exception):
                await device.power_off()
