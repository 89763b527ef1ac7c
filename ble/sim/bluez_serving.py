"""The BlueZ-shaped service (ble/sim/bluez_dbus.py) on a virtual radio, for ``mcgw sim``.

``serve_bluez`` opens one bumble central per adapter on the radio, serves them as ``hci0``,
``hci1``... on the bus at the given address, and registers everything for closing on the exit
stack it is given. Kept apart from bluez_dbus.py so that module stays about the D-Bus shape.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from ble.bumble.adapter import BumbleAdapter
from ble.bumble.radio import VirtualRadio
from ble.sim.bluez_dbus import BluezService

__all__ = ["serve_bluez"]


async def serve_bluez(
    stack: AsyncExitStack, radio: VirtualRadio, bus_address: str, adapters: int
) -> list[str]:
    """Serve ``adapters`` BlueZ adapters on ``radio`` at ``bus_address``; their names."""
    centrals: dict[str, BumbleAdapter] = {}
    for index in range(adapters):
        central = await BumbleAdapter.open("virtual", radio=radio, name=f"mcgw-sim-hci{index}")
        stack.push_async_callback(central.close)
        centrals[f"hci{index}"] = central
    service = BluezService(centrals)
    await service.start(bus_address)
    stack.push_async_callback(service.close)
    return list(centrals)
