"""Building N simulated devices on one virtual radio, the one way every user does it.

The hub's ``sim:N`` mode, the ``mcgw sim`` process, the benchmarks and the tests all start a row
of devices named ``MC-SIM-1``, ``MC-SIM-2``, ... with seeds 1, 2, ... at addresses that
:func:`sim_address` numbers. A fleet number keeps the devices of different processes apart
(``IN_PROCESS_FLEET`` in the hub, ``SIM_PROCESS_FLEET`` in ``mcgw sim``), so a gateway that
sees both never mixes them up.

It deliberately does not own the radio or the devices it starts: the caller stops them (in
reverse, :func:`stop_sim_devices`) before closing the radio.
"""

from __future__ import annotations

from collections.abc import Iterable

from ble.bumble.radio import VirtualRadio
from ble.sim.peripheral import SimulatedDevice

__all__ = [
    "IN_PROCESS_FLEET",
    "SIM_PROCESS_FLEET",
    "sim_address",
    "start_sim_devices",
    "stop_sim_devices",
]

IN_PROCESS_FLEET = 0x00
"""Devices the hub simulates inside its own process (``--ble sim:N``)."""
SIM_PROCESS_FLEET = 0x01
"""Devices of a ``mcgw sim`` process."""


def sim_address(index: int, *, fleet: int = IN_PROCESS_FLEET) -> str:
    """Address of the index-th simulated device of ``fleet`` (a random static address)."""
    return f"C0:4D:43:{fleet:02X}:{index // 256:02X}:{index % 256:02X}"


async def start_sim_devices(
    radio: VirtualRadio, count: int, *, fleet: int = IN_PROCESS_FLEET, seed: int = 1
) -> list[SimulatedDevice]:
    """Start ``count`` devices on ``radio``: ``MC-SIM-<i+1>`` at ``sim_address(i)``, seed
    ``seed + i``. If one fails to start, those already started are stopped before it raises."""
    devices: list[SimulatedDevice] = []
    try:
        for index in range(count):
            device = SimulatedDevice(
                radio,
                name=f"MC-SIM-{index + 1}",
                address=sim_address(index, fleet=fleet),
                seed=seed + index,
            )
            await device.start()
            devices.append(device)
    except BaseException:
        await stop_sim_devices(devices)
        raise
    return devices


async def stop_sim_devices(devices: Iterable[SimulatedDevice]) -> None:
    """Stop ``devices`` in the reverse of the order they were started."""
    for device in reversed(list(devices)):
        await device.stop()
