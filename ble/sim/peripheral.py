"""A simulated microcurrent device on a virtual radio: the firmware behind a bumble GATT server.

:class:`SimulatedDevice` attaches a bumble ``Device`` to a :class:`~ble.bumble.radio.VirtualRadio`,
serves the Microcurrent GATT profile (ble/sim/profile.py), advertises every 20 ms, accepts
Just Works bonding (LE Secure Connections) and carries bytes between the radio and a
:class:`~ble.sim.firmware.Firmware`:

- a control-point write is handed to the firmware at once, unless the link is not encrypted and
  it is not a well-formed STOP (then ATT error 0x0F); its ACK/NACK goes out as an indication;
- an owned tick task advances the firmware on absolute ``loop.time()`` deadlines every
  :data:`TICK_MS` and sends its telemetry and status notifications;
- a link loss tells the firmware at once (output off, queue cleared).

The scenario API (``set_on_skin``, ``dry_gel``, ``stall``, ``refuse_commands``...) injects the
faults and situations tests need; ble/sim/control.py exposes it to other processes. Times in
the firmware are milliseconds since the :class:`SimulatedDevice` was created.

It deliberately does not: decide anything about output (the firmware does), run a central, or
cross process boundaries by itself (ble/bumble/hci_server.py and ble/sim/process.py do).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Self

from bumble import pairing
from bumble.att import ATT_Error, ErrorCode
from bumble.device import Connection, Device

from ble import protocol as p
from ble.bumble.radio import VirtualRadio
from ble.errors import ProtocolError
from ble.sim.firmware import DEFAULT_LIMITS, Firmware
from ble.sim.physics import PhysicsConfig
from ble.sim.profile import advertising_data, build_profile
from ble.sim.transmitter import Outbound, Transmitter

log = logging.getLogger(__name__)

TICK_MS = 5
"""Firmware tick period: well under a 20 ms (50 Hz) telemetry period."""
QUIET_TICK_MS = 100
"""Longest wait between ticks while the firmware is quiet (no session, no output): it wakes
for its next sample, and at once when a command or a scenario change comes in."""
ADVERTISING_INTERVAL_MS = 20
FIRMWARE_REVISION = "sim-1"
STOP_TIMEOUT_S = 1.0
"""Upper bound for each teardown step (disconnect, power off)."""
ATT_VALUE_OVERHEAD = 3
"""Bytes of an ATT notification PDU that are not the value (opcode, handle)."""
CANCEL_ROUNDS = 10
CANCEL_ROUND_S = 0.1


class SimulatedDevice:
    """One simulated device. ``async with SimulatedDevice(radio, ...)`` or start()/stop()."""

    def __init__(
        self,
        radio: VirtualRadio,
        *,
        name: str,
        address: str,
        seed: int = 0,
        limits: p.DeviceLimits = DEFAULT_LIMITS,
        model: int = 1,
        physics: PhysicsConfig | None = None,
    ) -> None:
        self.radio = radio
        self.name = name
        self.address = address
        self.model = model
        self.firmware = Firmware(limits, seed, physics_config=physics)
        self.device: Device = radio.attach(name, address)
        self.connection: Connection | None = None
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._tasks: set[asyncio.Task[None]] = set()
        self._advertised: bytes = b""
        self._started = False
        self._running = False
        self._wake = asyncio.Event()
        self._profile = build_profile(
            on_control_write=self._on_control_write,
            read_status=self._guard_read(lambda: bytes(self.firmware.status())),
            read_limits=self._guard_read(lambda: bytes(self.firmware.limits)),
            read_battery=self._guard_read(lambda: self.firmware.physics.battery_level),
            model=f"MC-SIM-{model}",
            serial=address.replace(":", ""),
            firmware_revision=FIRMWARE_REVISION,
        )
        self.transmitter = Transmitter(self.device, self._profile, seed)
        self._battery_notified = self.firmware.physics.battery_level

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Power on, advertise, and start the tick and send tasks."""
        if self._started:
            return
        self._started = True
        device = self.device
        device.add_services(self._profile.services)
        device.pairing_config_factory = _just_works
        device.on(Device.EVENT_CONNECTION, _guard(self._on_connection, "connection"))
        self._advertised = self._advertising_data()
        device.advertising_data = self._advertised
        await device.power_on()
        await device.start_advertising(
            auto_restart=True,  # bumble re-advertises by itself after every disconnection
            advertising_interval_min=ADVERTISING_INTERVAL_MS,
            advertising_interval_max=ADVERTISING_INTERVAL_MS,
        )
        self._running = True
        self._spawn(self._tick_loop(), "tick")
        self._spawn(self.transmitter.run(), "send")

    async def stop(self) -> None:
        """Cancel and await every task, drop the link (output off), power off."""
        self._running = False
        self.transmitter.close()
        await self._cancel_tasks()
        # Silence the controller first: powering the host off does not stop its advertising,
        # and auto_restart would re-advertise after the disconnection below.
        if self.device.powered_on:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self.device.stop_advertising()
        connection = self.connection
        if connection is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await connection.disconnect()
            self._link_lost()
        if self.device.powered_on:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self.device.power_off()
        self._started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    @property
    def is_connected(self) -> bool:
        return self.connection is not None

    def now_ms(self) -> int:
        """Firmware time: milliseconds since this object was created."""
        return int((self._loop.time() - self._t0) * 1000)

    def sync(self) -> Firmware:
        """Bring the firmware up to now and send what it produced; return it for inspection.

        Also wakes a quiet tick loop: the caller may be about to change the scenario."""
        self._advance()
        self._wake.set()
        return self.firmware

    def _advance(self) -> None:
        self.firmware.tick(self.now_ms())
        self._flush()

    # -- scenario API --------------------------------------------------------------------------

    def set_on_skin(self, on_skin: bool) -> None:
        self.sync().physics.set_on_skin(on_skin)

    def dry_gel(self, minutes: float) -> None:
        """Age the gel by ``minutes`` at once (impedance rises; past ~2 h contact is lost)."""
        self.sync().physics.dry_gel(minutes)

    def apply_gel(self) -> None:
        self.sync().physics.apply_gel()

    def set_battery(self, pct: float) -> None:
        self.sync().physics.set_battery(pct)

    def set_charging(self, charging: bool) -> None:
        self.sync().physics.set_charging(charging)

    def set_temperature(self, celsius: float) -> None:
        self.sync().physics.set_temperature(celsius)

    def inject_over_current(self, ua: float) -> None:
        """The next current measurement reads ``ua`` (above cap + 10 % latches FAULT)."""
        self.sync().physics.inject_over_current(ua)

    def inject_hardware_fault(self, active: bool = True) -> None:
        self.sync().physics.set_hardware_fault(active)

    def refuse_commands(self, n: int, opcodes: Iterable[int] | None = None) -> None:
        """NACK the next ``n`` commands (of ``opcodes`` only, if given) REFUSED, unexecuted."""
        self.sync().refuse_commands(n, opcodes)

    def drop_link(self) -> int:
        """Supervision timeout on both ends; returns how many links dropped."""
        return self.radio.drop_links(self.address)

    def vanish(self) -> None:
        """Out of range: the link drops and nobody hears the device until reappear()."""
        self.radio.vanish(self.address)

    def reappear(self) -> None:
        self.radio.reappear(self.address)

    def set_radio_latency(self, ms: float) -> None:
        """Delay every notification and indication (ACKs included) by ``ms`` from now on."""
        self.transmitter.latency_s = max(0.0, ms) / 1000

    def stall(self, ms: float) -> None:
        """Radio silent for ``ms``: nothing goes out, writes wait and are processed after."""
        self.transmitter.stall(ms / 1000)

    def send_malformed(self, n: int) -> None:
        """Garble the next ``n`` notifications (telemetry, status) so they fail to decode."""
        self.transmitter.garble_left = max(0, n)

    def snapshot(self) -> dict[str, Any]:
        """Observable state as plain data (for the control endpoint and logs)."""
        fw = self.sync()
        physics = fw.physics
        return {
            "name": self.name,
            "address": self.address,
            "connected": self.is_connected,
            "state": fw.state.name,
            "faults": [flag.name for flag in p.FaultFlags if flag and flag in fw.faults],
            "output_ua": fw.output_ua,
            "max_output_ua": fw.max_output_ua,
            "queue": [seg.segment_id for seg in fw.queue],
            "intensity_pct": fw.intensity_pct,
            "contact": physics.contact,
            "impedance_ohm": physics.impedance_ohm,
            "battery_pct": physics.battery_level,
            "temperature_c": round(physics.temperature_c, 2),
            "counters": {
                "firmware": dataclasses.asdict(fw.counters),
                "radio": dataclasses.asdict(self.transmitter.counters),
            },
        }

    # -- bumble callbacks (guarded: an exception inside one breaks bumble's packet processing) --

    def _on_connection(self, connection: Connection) -> None:
        self.connection = connection
        self.transmitter.connection = connection
        connection.on(Connection.EVENT_DISCONNECTION, _guard(self._on_disconnection, "disconnect"))
        connection.on(
            Connection.EVENT_CONNECTION_ATT_MTU_UPDATE, _guard(self._on_mtu_update, "MTU update")
        )
        self._on_mtu_update()
        log.debug("%s connected to %s", self.name, connection.peer_address)

    def _on_mtu_update(self) -> None:
        connection = self.connection
        if connection is not None:
            self.firmware.max_notification_bytes = connection.att_mtu - ATT_VALUE_OVERHEAD

    def _on_disconnection(self, reason: int) -> None:
        log.debug("%s lost its link (reason 0x%02X)", self.name, reason)
        self._link_lost()

    def _link_lost(self) -> None:
        self.connection = None
        self.transmitter.connection = None
        self.firmware.on_disconnect(self.now_ms())
        self.transmitter.drop_pending()

    async def _on_control_write(self, connection: Connection, value: bytes) -> None:
        if not connection.is_encrypted and not _is_stop(value):
            raise ATT_Error(ErrorCode.INSUFFICIENT_ENCRYPTION)
        try:
            await self.transmitter.wait_while_stalled()
            if self.connection is not connection:
                # The link this write came on dropped during the stall. Answering now would put
                # the response on whatever link reuses its handle; a dead link gets no answer
                # (bumble sends no response for a cancelled write handler).
                raise asyncio.CancelledError  # noqa: TRY301 - bumble must not answer
            # Send what the firmware produced before this command first: notifications queued
            # before an ACK predate the command (e.g. the telemetry rate it changes).
            now = self.now_ms()
            self.firmware.tick(now)
            self._flush()
            response = self.firmware.handle(value, encrypted=connection.is_encrypted, now_ms=now)
            if response is not None:
                self.transmitter.send(Outbound.RESPONSE, bytes(response))
            self._flush()
            self._wake.set()  # a command may end the quiet (START) or change the sample clock
        except Exception as exc:
            log.exception("%s failed to handle a control-point write", self.name)
            raise ATT_Error(ErrorCode.UNLIKELY_ERROR) from exc

    def _guard_read(self, read: Callable[[], Any]) -> Callable[[Connection], Any]:
        def reader(_connection: Connection) -> Any:
            try:
                self.sync()
                return read()
            except Exception as exc:
                log.exception("%s failed to serve a read", self.name)
                raise ATT_Error(ErrorCode.UNLIKELY_ERROR) from exc

        return reader

    # -- time and output -------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        """Tick every TICK_MS on absolute deadlines while the firmware works; while it is quiet,
        only for its next sample (at most QUIET_TICK_MS apart), or when woken."""
        tick_s = TICK_MS / 1000
        deadline = self._loop.time()
        while self._running:
            deadline += tick_s
            if self.firmware.quiet:
                # A millisecond late, so the firmware clock (whole ms) has reached the sample.
                sample_at = self._t0 + (self.firmware.next_sample_ms + 1) / 1000
                deadline = max(deadline, min(sample_at, self._loop.time() + QUIET_TICK_MS / 1000))
            delay = deadline - self._loop.time()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            elif delay < -10 * tick_s:
                deadline = self._loop.time()  # far behind (a paused process): do not burst
            if self._wake.is_set():
                deadline = self._loop.time()  # woken: tick now, then on a fresh grid
            self._advance()
            await self._refresh_advertising()

    def _flush(self) -> None:
        for frame in self.firmware.drain_outbox():
            if isinstance(frame, p.Telemetry):
                self.transmitter.send(Outbound.TELEMETRY, bytes(frame))
            else:
                self.transmitter.send(Outbound.STATUS, bytes(frame))
                if frame.battery_pct != self._battery_notified:
                    self._battery_notified = frame.battery_pct
                    self.transmitter.send(Outbound.BATTERY, b"")

    def _advertising_data(self) -> bytes:
        fw = self.firmware
        advert = p.AdvertData(self.model, fw.state, fw.physics.battery_level)
        return advertising_data(self.name, advert)

    async def _refresh_advertising(self) -> None:
        # Only while advertising: nobody hears it during a connection, and an HCI command per
        # battery percent during a session is traffic for nothing.
        if self.connection is not None:
            return
        data = self._advertising_data()
        advertising_set = self.device.legacy_advertising_set
        if data == self._advertised or advertising_set is None:
            return
        self._advertised = data
        self.device.advertising_data = data
        try:
            await advertising_set.set_advertising_data(data)
        except Exception:
            log.exception("%s could not update its advertising data", self.name)

    async def _cancel_tasks(self) -> None:
        # Python 3.11's asyncio.wait_for, which bumble awaits inside HCI commands and
        # indications, can swallow a cancellation that races with its result; so cancel again
        # until every task is done, rather than awaiting one that may never end.
        pending, self._tasks = set(self._tasks), set()
        for _ in range(CANCEL_ROUNDS):
            if not pending:
                return
            for task in pending:
                task.cancel()
            _done, pending = await asyncio.wait(pending, timeout=CANCEL_ROUND_S)
        log.error("%s: tasks did not stop: %s", self.name, [t.get_name() for t in pending])

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.create_task(coro, name=f"sim {self.name}: {what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task %s failed", self.name, task.get_name(), exc_info=task.exception())


def _is_stop(value: bytes) -> bool:
    try:
        return isinstance(p.decode_command(value), p.Stop)
    except ProtocolError:
        return False


def _just_works(_connection: Connection) -> pairing.PairingConfig:
    # No display, no keyboard: LE Secure Connections Just Works, bonded.
    delegate = pairing.PairingDelegate(
        io_capability=pairing.PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT
    )
    return pairing.PairingConfig(sc=True, mitm=False, bonding=True, delegate=delegate)


def _guard(callback: Callable[..., None], what: str) -> Callable[..., None]:
    def guarded(*args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("simulated device %s handler raised; ignored", what)

    return guarded
