"""Opening the BLE stack a :class:`~ble.mode.BleMode` names, and the bleak backends it gives.

As bleak picks its backend for the platform and bumble opens a transport from a moniker, this
module turns a mode into what the gateway needs to reach devices:

- ``auto`` / ``bluez``: nothing to open; bleak's own backend for the platform (``None``);
  ``bluez:hciN``: bleak's BlueZ backends bound to that adapter (ble/bluez.py);
- ``sim:N``: an in-process :class:`~ble.bumble.radio.VirtualRadio` with N simulated devices and
  a bumble central on it (the radio cannot be lost, so nothing supervises it);
- ``hci:<moniker>``: a bumble central on that transport, kept open by a
  :class:`~ble.supervisor.RadioSupervisor`, which reopens a lost transport as the same hub
  (address and bonds) and hands over new backends through ``on_up``. Opened with
  ``may_start_down`` (one radio of several), a transport that cannot be opened yet leaves the
  stack ``down`` under its supervisor, which opens it later (``on_up`` then).

:meth:`BleStack.open` is the one place a mode is turned into a stack: the backends to use now,
its radio state, and ``close()`` for everything it opened. bumble is imported only for the
modes that use it (it costs half a second of start-up). It deliberately does not: check the
host's Bluetooth service for BlueZ (the gateway does, with advice for its command line), run
the supervisor's task (the caller owns its tasks: ``stack.supervisor.run()``), or connect to
any device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ble.mode import BleMode, BleModeKind
from ble.supervisor import RadioState

if TYPE_CHECKING:
    from bleak.backends.client import BaseBleakClient
    from bleak.backends.scanner import BaseBleakScanner

    from ble.bumble.adapter import BumbleAdapter
    from ble.bumble.radio import VirtualRadio
    from ble.sim.peripheral import SimulatedDevice
    from ble.supervisor import RadioSupervisor

__all__ = ["BleStack", "BleakBackends"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BleakBackends:
    """The bleak backends to pass as ``backend=``; ``None`` is bleak's own for the platform."""

    client: type[BaseBleakClient] | None = None
    scanner: type[BaseBleakScanner] | None = None


class BleStack:
    """What one mode opened. ``await BleStack.open(mode, ...)``; ``close()`` when done."""

    def __init__(self, mode: BleMode) -> None:
        self.mode = mode
        self.backends = BleakBackends()
        self.radio: VirtualRadio | None = None
        self.adapter: BumbleAdapter | None = None
        """The bumble central in use (sim and hci modes); replaced when a lost radio reopens."""
        self.supervisor: RadioSupervisor[BumbleAdapter] | None = None
        self.sim_devices: list[SimulatedDevice] = []
        self._stack = AsyncExitStack()

    @classmethod
    async def open(
        cls,
        mode: BleMode,
        *,
        on_down: Callable[[], None],
        on_up: Callable[[BleakBackends], None],
        label: str | None = None,
        may_start_down: bool = False,
    ) -> BleStack:
        """Open what ``mode`` needs. ``on_down()`` / ``on_up(backends)``: a supervised radio was
        lost / is back with new backends (hci modes only); ``label`` names it in logs. Raises
        ``RadioError`` when the radio cannot be opened; nothing is left open then. With
        ``may_start_down``, an hci transport that cannot be opened is not an error: the stack
        comes back with no backends, its ``radio_state`` down (``last_error`` says why) and its
        supervisor ready to open it in ``run()``; ``on_down()`` is called first."""
        stack = cls(mode)
        try:
            if mode.kind is BleModeKind.SIM:
                await stack._open_sim()
            elif mode.kind is BleModeKind.HCI:
                await stack._open_hci(on_down, on_up, label, may_start_down=may_start_down)
            elif mode.adapter:  # bluez:hciN
                from ble.bluez import bluez_backends

                stack.backends = BleakBackends(*bluez_backends(mode.adapter))
        except BaseException:
            await stack.close()
            raise
        return stack

    @property
    def radio_state(self) -> RadioState | None:
        """The radio's state: hci modes report the supervised transport; sim modes are always up
        (the in-process radio cannot be lost); auto/bluez give None (BlueZ owns the adapter
        there and bleak does not report its loss)."""
        if self.supervisor is not None:
            return self.supervisor.state
        if self.radio is not None:
            return RadioState("virtual")
        return None

    async def close(self) -> None:
        """Close what was opened, in reverse: central, simulated devices, radio."""
        await self._stack.aclose()

    def _use(self, adapter: BumbleAdapter) -> BleakBackends:
        from ble.bumble.client import BumbleClient
        from ble.bumble.scanner import BumbleScanner

        self.adapter = adapter
        self.backends = BleakBackends(
            BumbleClient.bound_to(adapter), BumbleScanner.bound_to(adapter)
        )
        return self.backends

    async def _open_sim(self) -> None:
        from ble.bumble.adapter import BumbleAdapter
        from ble.bumble.radio import VirtualRadio
        from ble.sim.fleet import start_sim_devices, stop_sim_devices

        self.radio = VirtualRadio()
        self._stack.push_async_callback(self.radio.close)
        self.sim_devices = await start_sim_devices(self.radio, self.mode.sim_devices)
        self._stack.push_async_callback(stop_sim_devices, self.sim_devices)
        adapter = await BumbleAdapter.open("virtual", radio=self.radio)
        self._stack.push_async_callback(adapter.close)
        self._use(adapter)

    async def _open_hci(
        self,
        on_down: Callable[[], None],
        on_up: Callable[[BleakBackends], None],
        label: str | None,
        *,
        may_start_down: bool,
    ) -> None:
        from ble.errors import RadioError
        from ble.supervisor import RadioSupervisor

        def reopened(adapter: BumbleAdapter) -> None:
            on_up(self._use(adapter))

        supervisor = RadioSupervisor(
            self.mode.transport,
            self._open_hci_adapter,
            on_down=on_down,
            on_up=reopened,
            label=label,
        )
        try:
            adapter = await supervisor.open()
        except RadioError as exc:
            if not may_start_down:
                raise
            self._stack.push_async_callback(supervisor.close)
            self.supervisor = supervisor
            on_down()
            supervisor.start_down(str(exc))
            return
        self._stack.push_async_callback(supervisor.close)
        self.supervisor = supervisor
        self._use(adapter)

    async def _open_hci_adapter(self) -> BumbleAdapter:
        """Open the hci transport; a reopen keeps the hub's address and bonds."""
        from ble.bumble.adapter import BumbleAdapter

        previous = self.adapter
        return await BumbleAdapter.open(
            self.mode.transport,
            address=previous.address if previous is not None else None,
            keystore=previous.keystore if previous is not None else None,
        )
