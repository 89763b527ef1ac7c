"""The gateway runtime: builds every part from settings, starts it and stops it cleanly.

This is the one place where wiring happens (STYLE: no import-time globals). ``Runtime`` chooses
the BLE side from ``settings.ble.mode``:

* ``sim[:N]``: an in-process virtual radio with N simulated devices and a bumble central;
* ``hci:<moniker>``: a bumble central on any bumble transport (``tcp-client:`` to ``mcgw sim``,
  ``usb:0``, ``serial:...``);
* ``bluez`` / ``auto``: bleak's stock backend (BlueZ over D-Bus on Linux).

Every task is owned by ``Runtime.tasks`` and cancelled and awaited in ``stop()``. bumble is only
imported for the modes that use it (it costs half a second of start-up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Self, TypeVar

from gateway.config import Settings
from gateway.devices import DeviceManager
from gateway.errors import GatewayError
from gateway.events import EventBus
from gateway.programs import Program, builtin_programs
from gateway.sessions import SessionManager
from gateway.tasks import TaskOwner
from gateway.telemetry import TelemetryHub

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ble.adapter import BumbleAdapter
    from ble.radio import VirtualRadio
    from ble.sim.peripheral import SimulatedDevice
    from gateway.storage.writer import StorageWriter

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 24 * 3600.0
_T = TypeVar("_T")

DISCOVERY_ATTEMPTS = 10
SIM_SCAN_S = 0.1
"""One discovery scan for in-process simulated devices: five of their 20 ms advertising
intervals. Short scans repeated until every device is heard make a sim hub ready sooner."""


def sim_address(index: int) -> str:
    """Address of the index-th in-process simulated device (a random static address)."""
    return f"C0:4D:43:00:{index // 256:02X}:{index % 256:02X}"


class BluetoothUnavailable(GatewayError):
    """No usable Bluetooth stack; the message says how to fix it or to use --ble sim."""


class Runtime:
    """Everything a running gateway holds. ``async with Runtime(settings) as rt: ...``."""

    def __init__(self, settings: Settings, *, storage: bool = True) -> None:
        self.settings = settings
        self.use_storage = storage
        self.engine: Engine | None = None
        self.writer: StorageWriter | None = None
        self.tasks = TaskOwner("gateway")
        self.bus = EventBus()
        self.hub = TelemetryHub()
        self.radio: VirtualRadio | None = None
        self.adapter: BumbleAdapter | None = None
        self.sim_devices: list[SimulatedDevice] = []
        self._stack = AsyncExitStack()
        self.devices = DeviceManager(
            ble=settings.ble,
            safety=settings.safety,
            bus=self.bus,
            hub=self.hub,
            tasks=self.tasks,
        )
        self.sessions = SessionManager(
            devices=self.devices,
            hub=self.hub,
            bus=self.bus,
            tasks=self.tasks,
            safety=settings.safety,
        )
        self.programs: dict[str, Program] = {p.slug: p for p in builtin_programs()}
        self.started = False

    async def open_ble(self) -> None:
        """Open the radio (and the simulated devices) without supervising any device yet."""
        mode = self.settings.ble.mode
        if mode.startswith(("sim", "hci:")):
            from ble.adapter import BumbleAdapter
            from ble.bumble_client import BumbleClient
            from ble.bumble_scanner import BumbleScanner

            if mode.startswith("sim"):
                from ble.radio import VirtualRadio
                from ble.sim.peripheral import SimulatedDevice

                self.radio = VirtualRadio()
                self._stack.push_async_callback(self.radio.close)
                for index in range(self.settings.ble.sim_devices):
                    device = SimulatedDevice(
                        self.radio,
                        name=f"MC-SIM-{index + 1}",
                        address=sim_address(index),
                        seed=index + 1,
                    )
                    await device.start()
                    self._stack.push_async_callback(device.stop)
                    self.sim_devices.append(device)
                self.adapter = await BumbleAdapter.open("virtual", radio=self.radio)
            else:
                self.adapter = await BumbleAdapter.open(mode[4:])
            self._stack.push_async_callback(self.adapter.close)
            self.devices.client_backend = BumbleClient.bound_to(self.adapter)
            self.devices.scanner_backend = BumbleScanner.bound_to(self.adapter)
        else:
            self._check_bluez()

    def _check_bluez(self) -> None:
        import os
        import sys

        if sys.platform.startswith("linux") and not os.path.exists("/run/dbus/system_bus_socket"):
            raise BluetoothUnavailable(
                "no D-Bus system bus, so BlueZ cannot be reached. Install and start bluez "
                "(and dbus), run with an HCI dongle (--ble hci:usb:0), or try the simulator "
                "(--ble sim:2)"
            )

    async def _open_storage(self) -> None:
        from gateway.recorder import StorageRecorder
        from gateway.storage import repo, session_log
        from gateway.storage.engine import create_engine_from_settings, upgrade
        from gateway.storage.writer import StorageWriter

        engine = create_engine_from_settings(self.settings.db)
        self.engine = engine
        self._stack.callback(engine.dispose)
        await asyncio.to_thread(upgrade, engine)
        writer = StorageWriter(engine, flush_s=self.settings.db.telemetry_flush_s)
        await writer.start()
        self.writer = writer
        self._stack.push_async_callback(writer.close)
        hub_id = self.settings.hub_id
        # A restart finds sessions that were running and ends them: the devices stopped on
        # their lease long ago (S4), so all that is left is to record it (S9).
        ended = await writer.run(
            lambda db: session_log.interrupt_open_sessions(
                session=db, hub_id=hub_id, reason="gateway restarted during the session"
            )
        )
        if ended:
            log.warning(
                "ended %d session(s) left open by a previous run as interrupted", len(ended)
            )
        await writer.run(
            lambda db: repo.sync_builtin_programs(session=db, programs=self.programs.values())
        )
        self.sessions.recorder = StorageRecorder(writer, hub_id=hub_id)

    async def db(self, fn: Callable[..., _T], /, **kwargs: Any) -> _T:
        """Run ``fn(session=<db session>, **kwargs)`` on the storage thread and commit."""
        if self.writer is None:
            raise GatewayError("storage is not open")
        return await self.writer.run(lambda db: fn(session=db, **kwargs))

    async def start(self) -> None:
        """Open storage and the radio, find devices and start supervising them."""
        if self.use_storage:
            await self._open_storage()
        await self.open_ble()
        self._stack.push_async_callback(self.tasks.close)
        if self.sim_devices:
            await self._adopt_sim_devices()
        if self.settings.ble.auto_connect and not self.sim_devices:
            from gateway.discovery import discovery_loop

            self.tasks.spawn(discovery_loop(self.devices, self.settings.ble), name="discovery")
        if self.writer is not None and self.settings.db.telemetry_retention_days > 0:
            self.tasks.spawn(self._retention_loop(), name="retention")
        self.started = True

    async def _retention_loop(self) -> None:
        """Delete raw telemetry past the retention setting, at start and then daily."""
        from gateway.storage.retention import prune_telemetry

        days = self.settings.db.telemetry_retention_days
        while True:
            try:
                pruned = await self.db(
                    prune_telemetry, older_than_days=days, hub_id=self.settings.hub_id
                )
            except GatewayError as exc:
                log.warning("telemetry retention failed (retrying tomorrow): %s", exc)
            else:
                if pruned:
                    log.info("retention: pruned %d raw telemetry row(s)", pruned)
            await asyncio.sleep(RETENTION_EVERY_S)

    async def _adopt_sim_devices(self) -> None:
        wanted = {d.address.upper() for d in self.sim_devices}
        for _attempt in range(DISCOVERY_ATTEMPTS):
            found = await self.devices.scan(timeout_s=SIM_SCAN_S)
            if wanted <= {d.address.upper() for d in found}:
                break
        for device in self.sim_devices:
            try:
                ble_device = self.devices.seen(device.address)
            except GatewayError:
                log.warning("simulated device %s was not found in a scan", device.address)
                continue
            self.devices.manage(ble_device, name=device.name)

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Wait until every managed device is connected (tests and demos)."""
        async with asyncio.timeout(timeout_s):
            for managed in list(self.devices.devices.values()):
                await managed.connected.wait()

    async def stop(self) -> None:
        """End sessions, disconnect devices, cancel and await every task, close the radio."""
        await self.sessions.close()
        await self.devices.close()
        self.hub.close()
        await self._stack.aclose()
        self.started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
