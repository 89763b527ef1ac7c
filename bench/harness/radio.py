"""The product's radio pieces the benchmarks build on, named in one place.

A virtual radio, an adapter on it (or on HCI over TCP), an HCI-over-TCP server for a radio,
the simulator's control endpoint and its client, the bleak backends of the bumble stack, and N
simulated devices. When the product moves or
renames these, this is the module to follow it. Nothing here measures; the imports are lazy
so that a benchmark that does not use the radio does not pay for bumble.
"""

from __future__ import annotations

from typing import Any


def virtual_radio() -> Any:
    """A fresh in-process radio (``ble.bumble.radio.VirtualRadio``)."""
    from ble.bumble.radio import VirtualRadio

    return VirtualRadio()


async def open_adapter(moniker: str, radio: Any = None) -> Any:
    """A bumble adapter on ``moniker`` (``virtual`` with ``radio``, ``tcp-client:HOST:PORT``)."""
    from ble.bumble.adapter import BumbleAdapter

    if radio is None:
        return await BumbleAdapter.open(moniker)
    return await BumbleAdapter.open(moniker, radio=radio)


def hci_tcp_server(radio: Any, port: int = 0) -> Any:
    """An HCI-over-TCP server for ``radio`` (an async context manager with ``.port``)."""
    from ble.bumble.hci_server import HciTcpServer

    return HciTcpServer(radio, port=port)


def control_server(sims: list[Any], hci: Any) -> Any:
    """The simulator's control endpoint (scenarios, and ``hci``'s radios: set_signal, deaf,
    drop) on 127.0.0.1, a free port: what ``mcgw sim --control-port`` serves."""
    from ble.sim.control import ControlServer

    return ControlServer(sims, host="127.0.0.1", port=0, hci=hci)


async def control_request(port: int, method: str, path: str, body: Any = None) -> Any:
    """One call to a control endpoint (``ble.sim.control.request``): its decoded JSON reply."""
    from ble.sim.control import request

    return await request(port, method, path, body)


def bleak_backends(adapter: Any) -> tuple[Any, Any]:
    """The bleak scanner backend bound to ``adapter`` and the bleak client backend."""
    from ble.bumble.client import BumbleClient
    from ble.bumble.scanner import BumbleScanner

    return BumbleScanner.bound_to(adapter), BumbleClient


def sim_address(index: int) -> str:
    """The address the product gives the ``index``-th simulated device."""
    from ble.sim.fleet import sim_address as address

    return address(index)


async def start_simulated_devices(radio: Any, count: int) -> list[Any]:
    """``count`` simulated devices on ``radio``, started, named and seeded as ``sim:N`` does."""
    from ble.sim.fleet import start_sim_devices

    return await start_sim_devices(radio, count)
