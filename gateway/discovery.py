"""Auto-connect: scan now and then, and look after every microcurrent device found.

A home hub should not need a person to claim each device before it connects: with
``ble.auto_connect`` (the default) the hub scans every ``ble.discovery_interval_s`` and hands any
new device advertising the microcurrent service to the device manager. Ownership is a separate,
later step (claiming through the API); connecting gives nobody control of a device.

A failed scan (adapter busy) is logged once and retried at the next interval. While the radio
transport is down no scan is tried (its loss is logged once, by the radio supervisor): the next
scan waits until it is back.
"""

from __future__ import annotations

import asyncio
import logging

from bleak.exc import BleakError

from ble.errors import BleError
from gateway.config import BleSettings
from gateway.devices import DeviceManager

log = logging.getLogger(__name__)

DISCOVERY_SCAN_S = 2.0
"""Length of one background scan; a device advertising every 20-1000 ms is seen within it."""


async def discovery_loop(devices: DeviceManager, settings: BleSettings) -> None:
    """Scan forever (until cancelled), managing every new device found."""
    failing = False
    while True:
        await devices.wait_radio()
        try:
            found = await devices.scan(timeout_s=min(DISCOVERY_SCAN_S, settings.scan_timeout_s))
        except (BleError, BleakError, OSError, TimeoutError) as exc:
            if not devices.radio_up:
                continue  # the radio went down during the scan; wait for it instead
            if not failing:
                log.warning("background scan failed (will retry): %s", exc or type(exc).__name__)
            failing = True
        else:
            if failing:
                log.info("background scans work again")
            failing = False
            for item in found:
                if devices.find(item.address) is None:
                    log.info("found %s (%s); connecting", item.name, item.address)
                    devices.manage(devices.seen(item.address), name=item.name)
        await asyncio.sleep(settings.discovery_interval_s)
