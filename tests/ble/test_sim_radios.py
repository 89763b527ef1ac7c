"""Several centrals on one virtual air: per-radio signal, a deaf radio, a dropped radio.

Two hub adapters open ``tcp-client:`` to an ``HciTcpServer`` in this process (the server of
`mcgw sim`) and the sim's control endpoint (``ControlServer`` with ``hci=``) names them by
their controller address, sets what each hears from a simulated device, deafens one and drops
one. Scans go through bleak's public API with the bumble backend bound to each adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from ble.bumble.adapter import BumbleAdapter
from ble.bumble.hci_server import HciTcpServer
from ble.bumble.radio import DEFAULT_RSSI, VirtualRadio
from ble.bumble.scanner import BumbleScanner
from ble.sim.control import ControlError, ControlServer, request
from ble.sim.peripheral import SimulatedDevice

ADDRESS = "C0:00:00:00:31:01"
HANG_S = 20.0
SCAN_S = 0.3
"""A scan long enough for a dozen of the device's 20 ms adverts."""


@dataclass
class Air:
    control: ControlServer
    adapters: tuple[BumbleAdapter, BumbleAdapter]


@pytest.fixture
async def air() -> AsyncIterator[Air]:
    radio = VirtualRadio()
    adapters: list[BumbleAdapter] = []
    try:
        async with (
            SimulatedDevice(radio, name="mc-air", address=ADDRESS) as device,
            HciTcpServer(radio) as server,
            ControlServer([device], hci=server) as control,
        ):
            moniker = f"tcp-client:127.0.0.1:{server.port}"
            adapters = [await BumbleAdapter.open(moniker), await BumbleAdapter.open(moniker)]
            yield Air(control, (adapters[0], adapters[1]))
            for adapter in adapters:
                await adapter.close()
    finally:
        await radio.close()


async def heard(adapter: BumbleAdapter) -> list[int]:
    """The RSSI of every advert of the simulated device this adapter hears during a scan."""
    rssi: list[int] = []

    def seen(device: BLEDevice, adv: AdvertisementData) -> None:
        if device.address.upper() == ADDRESS:
            rssi.append(adv.rssi)

    async with BleakScanner(seen, backend=BumbleScanner.bound_to(adapter)):
        await asyncio.sleep(SCAN_S)
    return rssi


async def radios(port: int) -> dict[str, dict[str, object]]:
    reply = await request(port, "GET", "/radios")
    return {str(entry["address"]): entry for entry in reply["radios"]}


async def test_the_sim_names_each_radio_by_the_address_the_hub_gives_it(air: Air) -> None:
    a, b = air.adapters
    listed = await radios(air.control.port)
    assert listed == {
        a.address: {"address": a.address, "deaf": False, "connections": 0},
        b.address: {"address": b.address, "deaf": False, "connections": 0},
    }


async def test_each_radio_hears_the_signal_set_for_it(air: Air) -> None:
    a, b = air.adapters
    body = {"radio": a.address.lower(), "rssi": -72}
    reply = await request(air.control.port, "POST", f"/devices/{ADDRESS}/set_signal", body)
    assert reply["device"]["address"] == ADDRESS
    heard_a, heard_b = await asyncio.gather(heard(a), heard(b))
    assert heard_a
    assert set(heard_a) == {-72}
    assert heard_b
    assert set(heard_b) == {DEFAULT_RSSI}


async def test_a_deaf_radio_hears_nothing_and_hears_again_when_told(air: Air) -> None:
    a, b = air.adapters
    reply = await request(air.control.port, "POST", f"/radios/{a.address}/deaf", {"deaf": True})
    assert reply["radio"]["deaf"] is True
    heard_a, heard_b = await asyncio.gather(heard(a), heard(b))
    assert heard_a == []
    assert heard_b  # the same scan window: the device did advertise
    await request(air.control.port, "POST", f"/radios/{a.address}/deaf", {"deaf": False})
    assert (await radios(air.control.port))[a.address]["deaf"] is False
    assert await heard(a)


async def test_a_dropped_radio_loses_its_transport(air: Air) -> None:
    a, b = air.adapters
    lost = asyncio.Event()
    a.on_lost(lambda _reason: lost.set())
    await request(air.control.port, "POST", f"/radios/{a.address}/drop", {})
    async with asyncio.timeout(HANG_S):
        await lost.wait()
    async with asyncio.timeout(HANG_S):
        while set(await radios(air.control.port)) != {b.address}:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/radios/C0:00:00:00:99:99/deaf", {"deaf": True}, "404.*no radio at C0:00:00:00:99:99"),
        ("/radios/{a}/deaf", {"deaf": 1}, "400.*deaf takes"),
        ("/radios/{a}/drop", {"now": True}, "400.*drop takes no arguments"),
        ("/radios/{a}/explode", {}, "404.*unknown radio action"),
        (f"/devices/{ADDRESS}/set_signal", {"radio": "{a}"}, "400.*set_signal takes"),
        (f"/devices/{ADDRESS}/set_signal", {"radio": "{a}", "rssi": -300}, "400.*rssi"),
        (f"/devices/{ADDRESS}/set_signal", {"radio": "nowhere", "rssi": -60}, "400.*address"),
        ("/devices/C0:00:00:00:99:99/set_signal", {"radio": "{a}", "rssi": -60}, "404"),
    ],
)
async def test_bad_radio_requests_are_refused_with_a_reason(
    air: Air, path: str, body: dict[str, object], message: str
) -> None:
    a = air.adapters[0].address
    filled = {
        key: value.format(a=a) if isinstance(value, str) else value for key, value in body.items()
    }
    with pytest.raises(ControlError, match=message):
        await request(air.control.port, "POST", path.format(a=a), filled)


async def test_without_an_hci_server_there_are_no_radios() -> None:
    async with ControlServer([]) as control:
        with pytest.raises(ControlError, match=r"404.*only `mcgw sim` serves HCI clients"):
            await request(control.port, "GET", "/radios")
