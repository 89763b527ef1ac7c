"""The gateway runtime: builds every part from settings, starts it and stops it cleanly.

This is the one place where wiring happens (STYLE: no import-time globals). The BLE side is
what ``settings.ble.mode`` (a ``ble.mode.BleMode``) names, opened by ``ble.backends.BleStack``:

* ``sim[:N]``: an in-process virtual radio with N simulated devices and a bumble central;
* ``hci:<moniker>``: a bumble central on any bumble transport (``tcp-client:`` to ``mcgw sim``,
  ``usb:0``, ``serial:...``), kept open by a ``RadioSupervisor``: a lost transport is reopened
  with backoff and the devices reconnect through the new backends (``radio_state`` shows it);
* ``bluez`` / ``auto``: bleak's stock backend (BlueZ over D-Bus on Linux), after checking that
  the host can reach BlueZ at all.

``settings.ble.mode`` may list several radios (``hci:...,hci:...``, ``bluez:hci0,bluez:hci1``):
each is opened as its own ``BleStack`` (``self.stacks``, in list order), its supervisor's
loss and return are told to the device manager by index, and the device manager places each
device on one of them (gateway/devices.py, gateway/radios.py). A hub with several radios
starts with those that open: an ``hci:`` radio that cannot be opened yet (a dongle unplugged at
boot, a sim not yet listening) is reported ``down`` with its error and opened later by its
supervisor, and devices are placed on it once it is up; the hub refuses to start only when no
radio opens (``BluetoothUnavailable`` naming each radio and its error). A single radio must
open at start, as before (its ``RadioError`` stops the start). A radio lost later is reopened
by its supervisor while the others carry on.
``bluetooth_report()`` is the health view of them all.

Every task is owned by ``Runtime.tasks`` and cancelled and awaited in ``stop()``. bumble is only
imported for the modes that use it (it costs half a second of start-up).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Self, TypeVar

from ble.supervisor import RadioState, RadioStatus
from gateway.access import AccessChange, AccessPolicy, DeviceAccess
from gateway.config import Settings
from gateway.devices import DeviceManager
from gateway.errors import BluetoothUnavailable, GatewayError
from gateway.events import EventBus
from gateway.health import LoopMonitor
from gateway.programs import Program, builtin_programs
from gateway.radio_report import BluetoothReport, DeviceLinkReport, RadioReport
from gateway.sessions import SessionManager
from gateway.tasks import TaskOwner
from gateway.telemetry import TelemetryHub

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ble.backends import BleakBackends, BleStack
    from ble.sim.peripheral import SimulatedDevice
    from gateway.access_sync import AccessSync
    from gateway.mdns import MdnsAdvertiser
    from gateway.mqtt import MqttBridge
    from gateway.mqtt.plans import PlanSensors
    from gateway.plans.planner import Planner
    from gateway.storage.journal import SessionJournal
    from gateway.storage.reader import StorageReader
    from gateway.storage.writer import StorageWriter

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 24 * 3600.0
_T = TypeVar("_T")

DISCOVERY_ATTEMPTS = 10
SIM_SCAN_S = 0.1
"""One discovery scan for in-process simulated devices: five of their 20 ms advertising
intervals. Short scans repeated until every device is heard make a sim hub ready sooner."""


class Runtime:
    """Everything a running gateway holds. ``async with Runtime(settings) as rt: ...``."""

    def __init__(self, settings: Settings, *, storage: bool = True) -> None:
        self.settings = settings
        self.use_storage = storage
        self.engine: Engine | None = None
        self.writer: StorageWriter | None = None
        self.reader: StorageReader | None = None
        self.journal: SessionJournal | None = None
        self.access_sync: AccessSync | None = None
        self.tasks = TaskOwner("gateway")
        self.bus = EventBus()
        self.hub = TelemetryHub()
        self.stacks: list[BleStack] = []
        """What each radio of ``settings.ble.mode`` opened (ble/backends.py), in list order."""
        self.ble: BleStack | None = None
        """The first radio's stack (the one radio of a single-radio hub); None until
        ``open_ble()``."""
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
        self.access = AccessPolicy(
            pepper=settings.token_pepper.get_secret_value(), session_owner=self._session_owner
        )
        """Who may see and control what (``gateway.access``); loaded from storage at start."""
        self._unlisten_access = self.access.add_listener(self._access_changed)
        self.loop_monitor = LoopMonitor()
        """Event-loop stalls (what the keepalive margin must survive), for /metrics."""
        self.mdns: MdnsAdvertiser | None = None
        """The ``_mcgw._tcp`` announcement on the LAN (``settings.mdns``), while started."""
        self.planner: Planner | None = None
        """Plan events and reminders (``gateway.plans.planner``), while storage is open."""
        self.mqtt: MqttBridge | None = None
        """The MQTT bridge (``settings.mqtt.url``), while started."""
        self.plan_sensors: PlanSensors | None = None
        """Plans on MQTT (``gateway.mqtt.plans``): with the bridge and the planner both."""
        self.started = False

    def _session_owner(self, session_id: str) -> int | None:
        session = self.sessions.find(session_id)
        return None if session is None else int(session.owner)

    def _access_changed(self, change: AccessChange) -> None:
        # A device that changed hands starts a new history: its replay ring must never serve
        # the previous owner's frames to the next one (sessions are filtered too, per frame).
        for address in change.devices_changed:
            self.hub.forget_history(address)
            self._stop_if_no_longer_controlled(address)

    def _stop_if_no_longer_controlled(self, address: str) -> None:
        """S8 across a race: the API refuses a hand-over or forget while a session runs, but a
        start still on its way (awaiting the device) can land just before the change applies.
        Such a session, no longer its owner's to control, is stopped at once."""
        session = self.sessions.active_on(address)
        if session is None:
            return
        owner = self.access.user(int(session.owner))
        if owner is not None and self.access.device_access(owner, address) is DeviceAccess.CONTROL:
            return
        log.warning("stopping session %s: %s changed hands while it started", session.id, address)
        self.tasks.spawn(
            self.sessions.stop(
                session.id,
                actor="hub",
                is_admin=True,
                reason=f"{address} changed hands while the session started",
            ),
            name=f"stop:{session.id}",
        )

    @property
    def radio_state(self) -> RadioState | None:
        """The radio transport's state, for readiness and /metrics; None if not supervised here.

        A ``ble.supervisor.RadioState`` snapshot (frozen; read it again for news): ``status`` is
        ``up``, ``down`` (lost, waiting to retry) or ``reopening`` (an attempt is under way), and
        ``up`` is the boolean of it; ``detail`` is one line for a person; ``last_error`` says why
        it went down or why the latest reopen failed; ``reopens`` counts recoveries since start
        (a Prometheus counter); ``down_since`` is the UNIX time it went down (None while up);
        ``failed_attempts`` counts failed reopens in the current outage. Never waits, no I/O.
        ``hci:`` modes report the supervised transport; ``sim`` modes are always up (the
        in-process radio cannot be lost); ``auto``/``bluez`` give None: BlueZ owns the adapter
        there and bleak does not report its loss.

        With several radios it sums them up: ``up`` while at least one radio is up (the hub
        can still reach devices, so it stays ready; ``bluetooth_report()`` tells which radio
        is down), ``detail`` names each radio's state, ``reopens`` is their total, and
        ``last_error``/``down_since``/``failed_attempts`` come from the radios that are down.
        BlueZ radios count as up (bleak does not report their loss).
        """
        if len(self.stacks) <= 1:
            return self.ble.radio_state if self.ble is not None else None
        return _combined_state(self.stacks)

    def bluetooth_report(self) -> BluetoothReport:
        """The radios and device links now (gateway/radio_report.py), from memory, no I/O."""
        radios = []
        for index, radio in enumerate(self.devices.radios):
            stack = self.stacks[index] if index < len(self.stacks) else None
            state = stack.radio_state if stack is not None else None
            adapter = stack.adapter if stack is not None else None
            radios.append(
                RadioReport(
                    name=radio.name,
                    mode=radio.mode,
                    address=adapter.address if adapter is not None else None,
                    state="unknown" if state is None else state.status.value,
                    slots=radio.slots,
                    slots_used=radio.used,
                    adverts_per_s=radio.adverts_per_s(),
                    connect_attempts=radio.connect_attempts,
                    connect_failures=radio.connect_failures,
                    reopens=state.reopens if state is not None else 0,
                    last_error=state.last_error if state is not None else None,
                )
            )
        devices = []
        for managed in self.devices.all():
            on = managed.radio
            heard = on.heard.get(managed.address) if on is not None else None
            link = managed.link
            devices.append(
                DeviceLinkReport(
                    address=managed.address,
                    name=managed.name,
                    state=str(managed.state),
                    radio=on.name if on is not None else None,
                    signal_dbm=heard.rssi if heard is not None else managed.rssi,
                    mtu=link.mtu if link is not None else None,
                    reconnects=managed.reconnects,
                    last_disconnect_reason=managed.last_disconnect_reason,
                )
            )
        return BluetoothReport(tuple(radios), tuple(devices))

    async def open_ble(self) -> None:
        """Open every radio (and the simulated devices) without supervising any device yet."""
        modes = self.settings.ble.mode
        if not modes.uses_bumble:
            self._check_bluez()
        from ble.backends import BleStack

        several = len(modes) > 1
        for index, mode in enumerate(modes):
            stack = await BleStack.open(
                mode,
                on_down=functools.partial(self.devices.radio_lost, index),
                on_up=functools.partial(self._radio_back, index),
                label=f"radio{index}",
                may_start_down=several,
            )
            self._stack.push_async_callback(stack.close)
            self.stacks.append(stack)
            self._use_backends(index, stack.backends)
        if several and not any(radio.up for radio in self.devices.radios):
            raise BluetoothUnavailable(
                "no radio could be opened: "
                + "; ".join(
                    f"{radio.name} ({radio.mode}): {_open_error(stack)}"
                    for radio, stack in zip(self.devices.radios, self.stacks, strict=True)
                )
                + ". Check that each dongle is plugged in or each `mcgw sim` is running"
            )
        stack = self.ble = self.stacks[0]
        self.sim_devices = stack.sim_devices
        port = self.settings.ble.sim_control_port
        if self.sim_devices and port is not None:
            from ble.sim.control import ControlServer

            control = ControlServer(self.sim_devices, host="127.0.0.1", port=port)
            await control.start()
            self._stack.push_async_callback(control.stop)
            log.info("simulator control endpoint on http://127.0.0.1:%d", control.port)

    def _use_backends(self, index: int, backends: BleakBackends) -> None:
        radio = self.devices.radios[index]
        radio.client_backend = backends.client
        radio.scanner_backend = backends.scanner

    def _radio_back(self, index: int, backends: BleakBackends) -> None:
        self._use_backends(index, backends)
        self.devices.radio_restored(index)

    def _check_bluez(self) -> None:
        import os
        import sys

        if (
            sys.platform.startswith("linux")
            and not os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
            and not os.path.exists("/run/dbus/system_bus_socket")
        ):
            raise BluetoothUnavailable(
                "no D-Bus system bus, so BlueZ cannot be reached. Install and start bluez "
                "(and dbus), run with an HCI dongle (--ble hci:usb:0), or try the simulator "
                "(--ble sim:2)"
            )

    async def _open_storage(self) -> None:
        """The database (migrated), its writer thread, the session journal (recovered), the
        reader and the access snapshot."""
        from gateway.access_sync import AccessSync
        from gateway.recorder import StorageRecorder
        from gateway.storage import session_log
        from gateway.storage.engine import (
            create_engine_from_settings,
            migrate_for_hub,
            needs_upgrade,
        )
        from gateway.storage.reader import StorageReader
        from gateway.storage.writer import StorageWriter

        engine = create_engine_from_settings(
            self.settings.db, application_name=f"mcgw hub {self.settings.hub_id}"
        )
        self.engine = engine
        self._stack.callback(engine.dispose)
        if await asyncio.to_thread(needs_upgrade, engine):
            await asyncio.to_thread(migrate_for_hub, self.settings.db, engine)
        writer = StorageWriter(engine, flush_s=self.settings.db.telemetry_flush_s)
        await writer.start()
        self.writer = writer
        self._stack.push_async_callback(writer.close)
        hub_id = self.settings.hub_id
        journal = await self._recover(writer)
        self.sessions.recorder = StorageRecorder(journal, writer, hub_id=hub_id)
        reader = StorageReader(engine)
        self.reader = reader
        self._stack.callback(reader.close)
        self.sessions.history = session_log.StoredStarts(reader)
        self.access_sync = AccessSync(self.access, reader=reader, writer=writer, hub_id=hub_id)
        await self.access_sync.load()

    async def _recover(self, writer: StorageWriter) -> SessionJournal:
        """Start-up recovery, journal first: records a previous run journaled but the database
        never took go in, in order; then sessions a previous run left open are ended."""
        from gateway.storage import repo, session_log
        from gateway.storage.journal import SessionJournal
        from gateway.storage.journal_applier import applied_rid

        hub_id = self.settings.hub_id
        journal = SessionJournal(
            self.settings.db.journal_file(hub_id),
            on_durable=writer.entries,
            max_bytes=self.settings.db.journal_max_mb * 1024 * 1024,
        )
        writer.use_journal(hub_id=hub_id, on_applied=journal.applied)
        mark = await writer.run(lambda db: applied_rid(session=db, hub_id=hub_id))
        left = [entry for entry in journal.load() if entry.rid > mark]
        if left:
            mark, skipped = await writer.replay(left)
            log.warning(
                "applied %d session record(s) a previous run journaled while the database was "
                "away (%d refused)",
                len(left) - skipped,
                skipped,
            )
        journal.start(applied_rid=mark)
        self.journal = journal
        # Closed before the writer (LIFO): what it writes last still reaches the writer.
        self._stack.callback(journal.close)
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
        return journal

    async def db(self, fn: Callable[..., _T], /, **kwargs: Any) -> _T:
        """Run ``fn(session=<db session>, **kwargs)`` on the storage thread and commit."""
        if self.writer is None:
            raise GatewayError("storage is not open")
        return await self.writer.run(lambda db: fn(session=db, **kwargs))

    async def settle_storage(self) -> None:
        """Every session record and telemetry sample so far in the database (reads that follow
        see them). StorageUnavailable or JournalUnavailable while storage is down."""
        if self.journal is not None:
            await asyncio.wrap_future(self.journal.sync())
        if self.writer is not None:
            await self.writer.flush()

    async def access_changed(self) -> None:
        """Call after an access-changing write through this hub: it applies before you answer."""
        if self.access_sync is not None:
            await self.access_sync.reload()

    async def start(self) -> None:
        """Open storage and the radio, find devices and start supervising them."""
        if self.use_storage:
            await self._open_storage()
        await self.open_ble()
        self._stack.push_async_callback(self.tasks.close)
        for index, stack in enumerate(self.stacks):
            if stack.supervisor is not None:
                self.tasks.spawn(stack.supervisor.run(), name=f"radio{index or ''}")
        if self.sim_devices:
            await self._adopt_sim_devices()
        if self.settings.ble.auto_connect and not self.sim_devices:
            from gateway.discovery import discovery_loop

            self.tasks.spawn(discovery_loop(self.devices, self.settings.ble), name="discovery")
        if self.writer is not None and self.settings.db.telemetry_retention_days > 0:
            self.tasks.spawn(self._retention_loop(), name="retention")
        if self.access_sync is not None:
            self.tasks.spawn(self.access_sync.run(), name="access")
        if self.writer is not None:
            self._start_planner()
        self.tasks.spawn(self.loop_monitor.run(), name="loop-monitor")
        if self.settings.mdns:
            self._advertise()
        if self.settings.mqtt.url:
            self._bridge_mqtt()
        self.started = True

    def _start_planner(self) -> None:
        """Plan events on the bus and, with apprise URLs configured, reminders."""
        from gateway.plans.planner import Planner

        send = None
        urls = [url.get_secret_value() for url in self.settings.reminders.apprise_urls]
        if urls:
            from gateway.plans.reminders import AppriseReminders

            send = AppriseReminders(urls, timeout_s=self.settings.reminders.timeout_s).send
        from gateway.plans.service import zone_seconds

        self.planner = Planner(
            db=self.db,
            bus=self.bus,
            tasks=self.tasks,
            program_seconds=zone_seconds(self.programs.values()),
            settle=self.settle_storage,
            send=send,
        )
        self.tasks.spawn(self.planner.run(), name="planner")

    def _bridge_mqtt(self) -> None:
        """Mirror the hub on MQTT (gateway/mqtt/); a broker that is away never delays start."""
        from gateway.mqtt import MqttBridge, hub_version

        self.mqtt = MqttBridge(
            self.settings.mqtt,
            hub_id=self.settings.hub_id,
            version=hub_version(),
            devices=self.devices,
            sessions=self.sessions,
            access=self.access,
            programs=self.programs,
            bus=self.bus,
            hub=self.hub,
            tasks=self.tasks,
        )
        self.tasks.spawn(self.mqtt.run(), name="mqtt")
        if self.planner is not None:  # each user's "session due" and "adherence this week"
            from gateway.mqtt.plans import PlanSensors

            self.plan_sensors = PlanSensors(
                self.mqtt, bus=self.bus, planner=self.planner, db=self.db, user=self.access.user
            )
            self.tasks.spawn(self.plan_sensors.run(), name="mqtt:plans")

    def _advertise(self) -> None:
        """Announce the hub on the LAN. Announcing takes about a second; it runs as a task
        so that it never delays readiness."""
        from gateway.mdns import MdnsAdvertiser

        self.mdns = MdnsAdvertiser.from_settings(
            self.settings, interfaces=self.settings.mdns_interfaces
        )
        self.tasks.spawn(self.mdns.start(), name="mdns")

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
            for managed in self.devices.all():
                await managed.connected.wait()

    async def stop(self) -> None:
        """Withdraw the mDNS announcement, end sessions, disconnect devices, cancel and await
        every task, close the radio."""
        if self.mdns is not None:
            await self.mdns.close()
            self.mdns = None
        await self.sessions.close()
        await self.devices.close()
        if self.mqtt is not None:
            await self.mqtt.close()  # the sessions' ends first, then ``offline``
            self.mqtt = None
        self.hub.close()
        await self._stack.aclose()
        self._unlisten_access()
        self.started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


def _open_error(stack: BleStack) -> str:
    state = stack.radio_state
    return (state.last_error if state is not None else None) or "not opened"


def _combined_state(stacks: list[BleStack]) -> RadioState:
    """Several radios' states as one (see ``Runtime.radio_state``)."""
    known = [stack.radio_state or RadioState(str(stack.mode)) for stack in stacks]
    down = [state for state in known if not state.up]
    up = len(down) < len(known)
    failing = down[0] if down else None
    return RadioState(
        moniker=",".join(state.moniker for state in known),
        status=RadioStatus.UP if up else known[0].status,
        last_error=failing.last_error if failing is not None else None,
        reopens=sum(state.reopens for state in known),
        down_since=None if up else min(s.down_since or 0.0 for s in known) or None,
        failed_attempts=sum(state.failed_attempts for state in down),
        parts=tuple(known),
    )
