"""``mcgw sim``: a virtual radio with N simulated devices, served to other processes.

Any bumble host (a gateway with ``--ble hci:tcp-client:HOST:PORT``, or any bumble tool) connects
to the HCI-over-TCP port and gets its own virtual controller on the radio, where the simulated
devices look like ordinary BLE peripherals. The control endpoint (``ble.sim.control``) drives
their scenarios from outside, and, as each HCI client is one radio of some gateway, what each
radio hears (per-device signal), a deaf radio and a dropped one (``/radios``). The process runs
until it is interrupted (SIGINT/SIGTERM) and then shuts everything down in order.

This module only assembles parts that live elsewhere; it adds no behaviour of its own, apart
from its banner: the lines it prints at start, which ``read_banner`` reads back in a parent
process (tests, benchmarks) to learn the ports and addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ble.bumble.hci_server import HciTcpServer
from ble.bumble.radio import VirtualRadio
from ble.sim.control import ControlServer
from ble.sim.fleet import SIM_PROCESS_FLEET, start_sim_devices, stop_sim_devices
from ble.sim.peripheral import SimulatedDevice


@dataclass(frozen=True, slots=True)
class Banner:
    """What a ``mcgw sim`` process announced: where to reach it and its devices."""

    hci_port: int
    control_port: int
    addresses: tuple[str, ...]


_ADDRESS = re.compile(r"\s+([0-9A-F:]{17})\s")
_HCI = re.compile(r"^HCI over TCP: tcp-client:[^:]+:(\d+)")
_CONTROL = re.compile(r"^control:\s+http://[^:]+:(\d+)/")


def read_banner(lines: Iterable[str]) -> Banner:
    """Read a ``mcgw sim`` process's banner from its output, up to the ``gateway:`` line.

    Raises ValueError when the output ends first (the process failed to start).
    """
    addresses: list[str] = []
    hci_port = control_port = 0
    for line in lines:
        if match := _ADDRESS.match(line):
            addresses.append(match.group(1))
        elif match := _HCI.match(line):
            hci_port = int(match.group(1))
        elif match := _CONTROL.match(line):
            control_port = int(match.group(1))
        if line.startswith("gateway:"):
            if not hci_port or not control_port:
                break
            return Banner(hci_port, control_port, tuple(addresses))
    raise ValueError("mcgw sim ended before announcing its ports; see its log")


async def run_sim_process(
    *,
    devices: int,
    host: str = "127.0.0.1",
    hci_port: int = 9100,
    control_port: int = 9101,
    seed: int = 1,
    announce: Callable[[str], None] = print,
    stop: asyncio.Event | None = None,
    bluez_bus: str | None = None,
    bluez_adapters: int = 1,
) -> None:
    """Serve ``devices`` simulated devices until ``stop`` is set or a signal arrives.

    With ``bluez_bus`` (a D-Bus address) the same air is also served as BlueZ would serve it,
    with ``bluez_adapters`` adapters (``hci0``...): ble/sim/bluez_dbus.py.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    radio = VirtualRadio()
    sims: list[SimulatedDevice] = []
    try:
        sims = await start_sim_devices(radio, devices, fleet=SIM_PROCESS_FLEET, seed=seed)
        async with (
            HciTcpServer(radio, host=host, port=hci_port) as hci,
            ControlServer(sims, host=host, port=control_port, hci=hci) as control,
        ):
            announce(f"mcgw sim: {devices} device(s) on a virtual radio")
            for sim in sims:
                announce(f"  {sim.address}  {sim.name}")
            announce(f"HCI over TCP: tcp-client:{host}:{hci.port}")
            announce(f"control:      http://{host}:{control.port}/devices")
            async with contextlib.AsyncExitStack() as bluez:
                if bluez_bus is not None:
                    from ble.sim.bluez_serving import serve_bluez

                    names = await serve_bluez(bluez, radio, bluez_bus, bluez_adapters)
                    announce(f"BlueZ:        {', '.join(names)} on D-Bus {bluez_bus}")
                announce(f"gateway:      mcgw serve --ble hci:tcp-client:{host}:{hci.port}")
                await stop.wait()
    finally:
        await stop_sim_devices(sims)
        await radio.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
