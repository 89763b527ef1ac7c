"""Two BlueZ adapters in one gateway (``--ble bluez:hci0,bluez:hci1``), against the
BlueZ-shaped service (ble/sim/bluez_dbus.py) on a private D-Bus bus.

The gateway runs in this process with bleak's own BlueZ backend bound to each adapter; the
service carries each call over the virtual air to the simulated devices. With one slot per
adapter and two devices, each adapter carries one device, and each link runs through the
adapter its radio names (the device's D-Bus path).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ble.bumble.adapter import BumbleAdapter
from ble.bumble.radio import VirtualRadio
from ble.sim.bluez_dbus import BluezService
from ble.sim.fleet import start_sim_devices, stop_sim_devices
from ble.sim.peripheral import SimulatedDevice
from gateway.config import BleSettings, Settings
from gateway.runtime import Runtime
from mcgw.advertisers import listen
from tests.e2e.bluez_bus import PrivateBus

HANG_S = 30.0
"""Upper bound for any one wait: a hang guard, never a measurement."""


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateBus]:
    private = PrivateBus.start(tmp_path)
    for name, value in private.env().items():
        monkeypatch.setenv(name, value)
    try:
        yield private
    finally:
        private.stop()


@pytest.fixture
async def devices(bus: PrivateBus) -> AsyncIterator[list[SimulatedDevice]]:
    """Two simulated devices, and BlueZ with two adapters (hci0, hci1) on the same air."""
    radio = VirtualRadio()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(radio.close)
        sims = await start_sim_devices(radio, 2)
        stack.push_async_callback(stop_sim_devices, sims)
        centrals = {}
        for name in ("hci0", "hci1"):
            centrals[name] = await BumbleAdapter.open("virtual", radio=radio, name=name)
            stack.push_async_callback(centrals[name].close)
        service = BluezService(centrals)
        await service.start(bus.address)
        stack.push_async_callback(service.close)
        yield sims


async def test_two_bluez_adapters_each_carry_a_device(devices: list[SimulatedDevice]) -> None:
    settings = Settings(
        ble=BleSettings.model_validate(
            {
                "mode": "bluez:hci0,bluez:hci1",
                "radio_slots": "1,1",
                "auto_connect": False,
                "reconnect_max_backoff_s": 0.5,
            }
        ),
        mdns=False,
    )
    runtime = Runtime(settings, storage=False)
    await runtime.start()
    try:
        wanted = {sim.address for sim in devices}
        async with asyncio.timeout(HANG_S):
            while wanted - {d.address for d in await runtime.devices.scan(timeout_s=0.5)}:
                pass
        # `mcgw scan --all` listens on both adapters at once.
        rows = await listen(runtime, 0.5)
        assert wanted <= {row["address"] for row in rows}
        radios = runtime.devices.radios
        assert all(set(radio.heard) == wanted for radio in radios)  # both adapters hear both
        for address in sorted(wanted):
            runtime.devices.manage(runtime.devices.seen(address))
        async with asyncio.timeout(HANG_S):
            while {m.state for m in runtime.devices.all()} != {"bonded"}:
                await asyncio.sleep(0.02)

        report = runtime.bluetooth_report()
        assert [(r.name, r.mode, r.state, r.slots, r.slots_used) for r in report.radios] == [
            ("radio0", "bluez:hci0", "unknown", 1, 1),
            ("radio1", "bluez:hci1", "unknown", 1, 1),
        ]
        assert sorted(str(d.radio) for d in report.devices) == ["radio0", "radio1"]
        for managed in runtime.devices.all():
            assert managed.link is not None
            adapter = f"hci{str(managed.radio.name)[-1]}" if managed.radio else "?"
            assert managed.link.device.details["path"].startswith(f"/org/bluez/{adapter}/")
        state = runtime.radio_state
        assert state is not None
        assert state.up  # bleak does not report a BlueZ adapter's loss: counted up
    finally:
        await runtime.stop()
