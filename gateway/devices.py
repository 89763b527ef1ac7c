"""The device manager: known and discovered devices, one supervised connection per device.

Each known device gets one owned task that connects (bleak-retry-connector inside
``ble.link.DeviceLink``), bonds, handshakes and reads the limits, then waits for the link to drop
and reconnects with capped exponential backoff and jitter.

The hub may have several radios (``self.radios``, one ``gateway.radios.Radio`` per entry of the
``--ble`` list). Scans listen on every radio that is up and note what each heard (a radio
that stopped hearing a device another radio still hears forgets it after the scan:
``gateway.radios.forget_unheard``); each connect attempt takes a slot on the radio
``gateway.radios.place`` picks (the one that hears the device loudest with a free slot) and
gives it back when the attempt failed or the link is gone, in a ``finally`` so no path
(failure, cancellation, a radio lost mid-connect) leaks it. A device whose link is lost (its
radio died, or it went away) is placed again on its next attempt, so it moves to another radio
that hears it. While a radio is down (``radio_lost``) nothing is placed
on it; when it is back (``radio_restored``, with its new backends already set) every device
sleeping a backoff tries again at once, with its backoff reset. State changes (discovered,
connecting, connected, bonded, lost) are published on the event bus.

Telemetry from a device goes to the telemetry hub and, first, to whoever listens to the device
(``ManagedDevice.listen``, which returns the function that stops exactly that listener): the
session holding the device.

The telemetry rate follows need, through the protocol's SET_TELEMETRY_RATE: the full rate
(``telemetry_hz``) while something holds it (``hold_full_rate``: a session, from before its
first pulse to its end) or a subscriber of the hub wants every frame, the rate a slower watcher
asks for, and ``idle_telemetry_hz`` otherwise, so idle connected devices cost the hub (and a
battery-powered device) next to nothing. No safety check depends on idle telemetry: a device
without a session has no output, and a fault or charging comes as a status notification.

Other parts look devices up through ``get``/``find``/``all``; the table itself is private.
This module decides nothing about treatment: sessions and safety do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bleak import BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner

from ble import protocol as p
from ble.errors import BleError, ProtocolError
from ble.link import DeviceLink, LinkCounters
from gateway.config import BleSettings, SafetySettings
from gateway.errors import DeviceUnavailable, NotFound
from gateway.events import DeviceStateChanged, EventBus
from gateway.radios import Radio, forget_unheard, place
from gateway.safety import SafetySupervisor
from gateway.states import DeviceState
from gateway.tasks import TaskOwner
from gateway.telemetry import TelemetryHub

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.2
"""First reconnect delay; doubles per failure up to BleSettings.reconnect_max_backoff_s."""

SampleListener = Callable[[p.TelemetrySample], tuple[str | None, p.Zone | None]]
"""Sees each sample first; the device's holder answers (session id, zone) to tag the frame."""
StatusListener = Callable[[p.DeviceStatus], None]
LinkListener = Callable[[bool], None]
"""Told True when a link is up (bonded, handshaken), False when it is gone."""
Unlisten = Callable[[], None]


@dataclass(frozen=True, eq=False, slots=True)
class _Listener:
    on_sample: SampleListener | None
    on_status: StatusListener | None
    on_link: LinkListener | None


@dataclass(frozen=True, slots=True)
class Discovered:
    """A device seen in a scan."""

    address: str
    name: str
    rssi: int
    battery_pct: int | None
    state: str | None


@dataclass(slots=True)
class ManagedDevice:
    """One device the hub looks after."""

    ble_device: BLEDevice
    supervisor: SafetySupervisor
    name: str = ""
    state: DeviceState = DeviceState.DISCOVERED
    rssi: int | None = None
    battery_pct: int | None = None
    contact_quality: int | None = None
    link: DeviceLink | None = None
    last_status: p.DeviceStatus | None = None
    _listeners: tuple[_Listener, ...] = field(default=(), init=False, repr=False)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event | None = None
    """Set when the present link is gone, however it went (see ``DeviceManager.stop_output``)."""
    reconnects: int = 0
    past_links: LinkCounters = field(default_factory=LinkCounters)
    """Counters of every earlier link, so totals never go backwards across reconnects."""
    task: asyncio.Task[None] | None = None
    full_rate_holds: int = 0
    """Holders of the full telemetry rate (the session on it); see ``hold_full_rate``."""
    retune: asyncio.Task[None] | None = None
    """The task bringing the link's telemetry rate to what is wanted, while one runs."""
    radio: Radio | None = None
    """The radio whose slot its link (or connect attempt) holds; None between attempts."""
    failed_on: Radio | None = None
    """The radio its last connect attempt failed on (tried after the others next time)."""
    last_disconnect_reason: str | None = None

    @property
    def address(self) -> str:
        """Upper-case, as every table of the hub is keyed (BLE addresses ignore case)."""
        return self.ble_device.address.upper()

    def link_totals(self) -> LinkCounters:
        """Counters of this device's links, the current one included, since the hub started."""
        totals = LinkCounters(**dataclasses.asdict(self.past_links))
        if self.link is not None:
            for name, value in dataclasses.asdict(self.link.counters).items():
                setattr(totals, name, getattr(totals, name) + value)
        return totals

    def listen(
        self,
        *,
        on_sample: SampleListener | None = None,
        on_status: StatusListener | None = None,
        on_link: LinkListener | None = None,
    ) -> Unlisten:
        """Hear this device's samples, status notifications and link changes; call the
        returned function to stop (it removes exactly this registration; calling it again
        does nothing)."""
        listener = _Listener(on_sample, on_status, on_link)
        self._listeners = (*self._listeners, listener)

        def unlisten() -> None:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unlisten

    def tell_sample(self, sample: p.TelemetrySample) -> tuple[str | None, p.Zone | None]:
        """Hand a sample to the listeners; the first tag (session id, zone) given is kept."""
        tag: tuple[str | None, p.Zone | None] = (None, None)
        for listener in self._listeners:
            if listener.on_sample is not None:
                got = listener.on_sample(sample)
                if tag == (None, None):
                    tag = got
        return tag

    def tell_status(self, status: p.DeviceStatus) -> None:
        for listener in self._listeners:
            if listener.on_status is not None:
                listener.on_status(status)

    def tell_link(self, *, up: bool) -> None:
        """Tell the link listeners; one that fails is logged and does not stop the others."""
        for listener in self._listeners:
            if listener.on_link is None:
                continue
            try:
                listener.on_link(up)
            except Exception:
                log.exception("link listener for %s failed", self.address)

    def require_link(self) -> DeviceLink:
        link = self.link
        if link is None or not link.is_connected:
            raise DeviceUnavailable(
                f"device {self.address} is not connected (state: {self.state}); wait for it to "
                "reconnect or check that it is on and in range"
            )
        return link


class DeviceManager:
    """Finds devices and keeps a supervised connection to each known one."""

    def __init__(
        self,
        *,
        ble: BleSettings,
        safety: SafetySettings,
        bus: EventBus,
        hub: TelemetryHub,
        tasks: TaskOwner,
        client_backend: type[BaseBleakClient] | None = None,
        scanner_backend: type[BaseBleakScanner] | None = None,
    ) -> None:
        self.settings = ble
        self.safety = safety
        self.bus = bus
        self.hub = hub
        self.tasks = tasks
        self.radios = [
            Radio(f"radio{index}", str(mode), ble.slots_for(index))
            for index, mode in enumerate(ble.mode)
        ]
        """One per entry of ``ble.mode``, in list order (``radio0``...)."""
        self.client_backend = client_backend
        self.scanner_backend = scanner_backend
        self._devices: dict[str, ManagedDevice] = {}
        self.discovered: dict[str, Discovered] = {}
        self._seen: dict[str, BLEDevice] = {}
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._changed = asyncio.Event()
        """Set (and replaced) when a slot is given back or a radio comes back."""
        self._radio_back = asyncio.Event()
        """Set (and replaced) each time a radio comes back: wakes devices sleeping a backoff."""
        self._unwatch = hub.add_demand_listener(self._on_demand)

    # --- the radios ------------------------------------------------------------------------

    @property
    def client_backend(self) -> type[BaseBleakClient] | None:
        """The first radio's client backend (the one radio of a single-radio hub)."""
        return self.radios[0].client_backend

    @client_backend.setter
    def client_backend(self, backend: type[BaseBleakClient] | None) -> None:
        self.radios[0].client_backend = backend

    @property
    def scanner_backend(self) -> type[BaseBleakScanner] | None:
        return self.radios[0].scanner_backend

    @scanner_backend.setter
    def scanner_backend(self, backend: type[BaseBleakScanner] | None) -> None:
        self.radios[0].scanner_backend = backend

    @property
    def radio_up(self) -> bool:
        """True while at least one radio is up (see ``gateway.runtime.Runtime.radio_state``)."""
        return any(radio.up for radio in self.radios)

    async def wait_radio(self) -> None:
        """Return once a radio is up (at once if one is)."""
        while not self.radio_up:
            await self._changed.wait()

    def radio_lost(self, index: int = 0) -> None:
        """The transport of radio ``index`` is gone: place nothing on it until it is back (its
        links are reported lost by the adapter, and their devices are placed again)."""
        self.radios[index].up = False

    def radio_restored(self, index: int = 0) -> None:
        """Radio ``index`` is back (set its new backends first): devices sleeping a backoff
        try again at once."""
        self.radios[index].up = True
        back, self._radio_back = self._radio_back, asyncio.Event()
        back.set()
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- discovery -------------------------------------------------------------------------

    async def scan(self, timeout_s: float | None = None) -> list[Discovered]:
        """Scan for microcurrent devices (by service UUID) on every radio that is up, note what
        each radio heard (for placement; see ``gateway.radios.forget_unheard``), and remember
        what was found (loudest advert wins). Fails only when every radio's scan failed (with
        the first radio's error)."""
        timeout = timeout_s or self.settings.scan_timeout_s
        found: dict[str, tuple[BLEDevice, AdvertisementData]] = {}
        radios = [radio for radio in self.radios if radio.up] or self.radios[:1]
        outcomes = await asyncio.gather(
            *(self._scan_radio(radio, timeout, found) for radio in radios),
            return_exceptions=True,
        )
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        for error in errors:
            if not isinstance(error, Exception):
                raise error  # cancellation and the like
        if errors and len(errors) == len(radios):
            raise errors[0]
        rounds: dict[Radio, set[str]] = {}
        for radio, outcome in zip(radios, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("scan on %s (%s) failed: %s", radio.name, radio.mode, outcome)
            else:
                rounds[radio] = outcome
        forget_unheard(rounds)  # a radio that stopped hearing a device is not preferred for it
        result = []
        for device, adv in found.values():
            item = self._describe(device, adv)
            self.discovered[device.address] = item
            managed = self._devices.get(device.address)
            if managed is not None:
                managed.rssi = adv.rssi
                managed.ble_device = device
            else:
                self.bus.publish(DeviceStateChanged(device.address, DeviceState.DISCOVERED))
            self._seen[device.address.upper()] = device
            result.append(item)
        return sorted(result, key=lambda d: d.address)

    @staticmethod
    async def _scan_radio(
        radio: Radio, timeout_s: float, found: dict[str, tuple[BLEDevice, AdvertisementData]]
    ) -> set[str]:
        """Scan on ``radio``; the addresses it heard."""
        addresses: set[str] = set()

        def heard(device: BLEDevice, adv: AdvertisementData) -> None:
            if p.SERVICE_UUID not in (uuid.lower() for uuid in adv.service_uuids):
                return
            radio.hear(device, adv.rssi)
            addresses.add(device.address.upper())
            best = found.get(device.address)
            if best is None or adv.rssi > best[1].rssi:
                found[device.address] = (device, adv)

        if radio.scanner_backend is None:
            scanner = BleakScanner(heard, service_uuids=[p.SERVICE_UUID])
        else:
            scanner = BleakScanner(
                heard, service_uuids=[p.SERVICE_UUID], backend=radio.scanner_backend
            )
        async with scanner:
            await asyncio.sleep(timeout_s)
        return addresses

    def _describe(self, device: BLEDevice, adv: AdvertisementData) -> Discovered:
        battery = state = None
        raw = adv.manufacturer_data.get(p.COMPANY_ID)
        if raw is not None:
            try:
                advert = p.AdvertData.from_bytes(raw)
                battery, state = advert.battery_pct, advert.state.name.lower()
            except ProtocolError:
                log.debug("ignoring malformed advertising data from %s", device.address)
        name = adv.local_name or device.name or device.address
        return Discovered(device.address, name, adv.rssi, battery, state)

    # --- supervision -----------------------------------------------------------------------

    def get(self, address: str) -> ManagedDevice:
        """The managed device at ``address`` (any case); NotFound if the hub has none."""
        managed = self._devices.get(address.upper())
        if managed is None:
            raise NotFound(f"no device {address} on this hub; scan and claim it first")
        return managed

    def find(self, address: str) -> ManagedDevice | None:
        """The managed device at ``address`` (any case), or None."""
        return self._devices.get(address.upper())

    def all(self) -> list[ManagedDevice]:
        """Every managed device, in the order the hub took them on (a copy)."""
        return list(self._devices.values())

    def addresses(self) -> list[str]:
        """The managed devices' addresses (upper case), sorted."""
        return sorted(self._devices)

    def find_discovered(self, address: str) -> Discovered | None:
        """What the scans heard of ``address`` (any case), or None."""
        key = address.upper()
        return next((d for a, d in self.discovered.items() if a.upper() == key), None)

    def discovered_addresses(self) -> set[str]:
        """Every address the scans heard (upper case)."""
        return {address.upper() for address in self.discovered}

    def seen(self, address: str) -> BLEDevice:
        """The BLEDevice of a device found by the last scans; NotFound if none was."""
        try:
            return self._seen[address.upper()]
        except KeyError:
            raise NotFound(f"device {address} was not seen in a scan; scan first") from None

    def manage(self, ble_device: BLEDevice, name: str | None = None) -> ManagedDevice:
        """Start looking after a device: connect now and reconnect whenever it drops."""
        address = ble_device.address.upper()
        existing = self._devices.get(address)
        if existing is not None:
            return existing
        managed = ManagedDevice(
            ble_device=ble_device,
            supervisor=SafetySupervisor(address, self.safety),
            name=name or ble_device.name or address,
        )
        self._devices[address] = managed
        managed.task = self.tasks.spawn(self._supervise(managed), name=f"device:{address}")
        return managed

    async def forget(self, address: str) -> None:
        """Stop looking after a device and forget it was seen (until a new scan sees it)."""
        key = address.upper()
        managed = self._devices.pop(key, None)
        seen = self._seen.pop(key, None)
        for name in [a for a in self.discovered if a.upper() == key]:
            del self.discovered[name]
        if managed is None:
            if seen is None:
                raise NotFound(f"no device {address} on this hub")
            return
        if managed.task is not None:
            managed.task.cancel()
        link, managed.link = managed.link, None
        managed.connected.clear()
        if link is not None:
            await link.close()
            # A session on it must not think the link is still there (it never comes back).
            managed.tell_link(up=False)
        self._set_state(managed, DeviceState.FORGOTTEN)

    async def drop_link(self, address: str) -> None:
        """Disconnect a device that stopped answering; it reconnects like any lost link."""
        managed = self.find(address)
        link = managed.link if managed is not None else None
        if managed is None or link is None:
            return
        # Taken before the await: by the time the close returns, a new link (with its own
        # event) may stand, and it must not be mistaken for this one.
        lost = managed.lost
        log.warning("dropping the link to %s: it stopped answering", managed.address)
        await link.close()
        if lost is not None:
            lost.set()

    async def stop_output(self, address: str) -> None:
        """S3: STOP at once, bypassing every queue of the gateway; no-op without a link.

        If the device does not confirm within ``STOP_CONFIRM_TIMEOUT_S`` the link is dropped
        (the device turns its output off on disconnect) and reconnected like any lost link; the
        ``LinkError`` is raised so the caller can record why.
        """
        managed = self.find(address)
        link = managed.link if managed is not None else None
        if managed is None or link is None or not link.is_connected:
            return
        lost = managed.lost  # this link's, whatever stands when the STOP has failed
        try:
            await link.stop()
        except BleError:
            # DeviceLink.stop closed the link itself, which does not report a disconnection to
            # us: tell the supervising task, or it would hold a dead link and never reconnect.
            if lost is not None:
                lost.set()
            raise

    # --- the telemetry rate ------------------------------------------------------------------

    def wanted_hz(self, managed: ManagedDevice) -> int:
        """The telemetry rate ``managed`` should stream at now (see the module docstring)."""
        full = self.settings.telemetry_hz
        if managed.full_rate_holds:
            return full
        watched = self.hub.wanted_hz(managed.address)
        return min(full, max(self.settings.idle_telemetry_hz, math.ceil(min(watched, full))))

    def hold_full_rate(self, managed: ManagedDevice) -> Callable[[], None]:
        """Stream ``managed`` at the full rate until the returned function is called (once is
        enough; calling it again does nothing). ``rate_settled`` waits for the device's ACK."""
        managed.full_rate_holds += 1
        self._retune(managed)
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                managed.full_rate_holds -= 1
                self._retune(managed)

        return release

    async def rate_settled(self, managed: ManagedDevice) -> None:
        """Wait until the device acknowledged the rate asked for last (never raises: a rate
        that could not be set is logged by the retune task and costs only telemetry)."""
        task = managed.retune
        if task is not None and not task.done():
            await asyncio.wait({task})

    def _on_demand(self, device: str | None) -> None:
        targets = self._devices.values() if device is None else [self._devices.get(device)]
        for managed in targets:
            if managed is not None:
                self._retune(managed)

    def _retune(self, managed: ManagedDevice) -> None:
        link = managed.link
        if link is None or link.telemetry_hz == self.wanted_hz(managed):
            return
        if managed.retune is None or managed.retune.done():
            managed.retune = self.tasks.spawn(
                self._apply_rate(managed), name=f"telemetry-rate:{managed.address}"
            )

    async def _apply_rate(self, managed: ManagedDevice) -> None:
        """Send SET_TELEMETRY_RATE until the link's rate is the wanted one (the want may change
        while a command is in flight); one attempt per change, a failure is logged once."""
        while (link := managed.link) is not None and link.is_connected:
            hz = self.wanted_hz(managed)
            if link.telemetry_hz == hz:
                return
            try:
                await link.set_telemetry_rate(hz)
            except BleError as exc:
                log.warning("could not set %s's telemetry to %d Hz: %s", managed.address, hz, exc)
                return

    def _set_state(self, managed: ManagedDevice, state: DeviceState, detail: str = "") -> None:
        if managed.state != state:
            managed.state = state
            self.bus.publish(DeviceStateChanged(managed.address, state, detail))

    async def _supervise(self, managed: ManagedDevice) -> None:
        backoff = BACKOFF_START_S
        while True:
            radio = await self._take_slot(managed)
            back = self._radio_back  # taken before the attempt: a return during it counts
            try:
                connected = await self._connect_once(managed, radio)
            finally:
                # The slot is held from the attempt to the link's end, and given back here
                # however that came: failure, a lost link, cancellation (forget, shutdown).
                managed.radio = None
                radio.release()
                self._notify()
            managed.failed_on = None if connected else radio
            if connected:
                backoff = BACKOFF_START_S
                continue
            # Sleep outside the slot so a device that is away does not block the others.
            if await self._rest(backoff * (0.5 + self._rng.random()), back):
                backoff = BACKOFF_START_S  # a new radio: the old failures say nothing
            else:
                backoff = min(backoff * 2, self.settings.reconnect_max_backoff_s)

    async def _take_slot(self, managed: ManagedDevice) -> Radio:
        """Wait for a radio with a free slot and take a slot on the best one for ``managed``."""
        while True:
            changed = self._changed
            radio = place(self.radios, managed.address, avoid=managed.failed_on)
            if radio is not None:
                managed.radio = radio
                return radio
            await changed.wait()

    def slots_held(self) -> dict[str, int]:
        """Radio name -> the devices whose link or connect attempt is on it (the truth the
        radios' ``used`` counters must equal)."""
        held = {radio.name: 0 for radio in self.radios}
        for managed in self._devices.values():
            if managed.radio is not None:
                held[managed.radio.name] += 1
        return held

    @staticmethod
    async def _rest(delay_s: float, back: asyncio.Event) -> bool:
        """Sleep ``delay_s``, or less if the radio comes back (``back`` is set; then True)."""
        try:
            async with asyncio.timeout(delay_s):
                await back.wait()
        except TimeoutError:
            return False
        return True

    async def _connect_once(self, managed: ManagedDevice, radio: Radio) -> bool:
        """Connect through ``radio`` and hold the link until it drops. False if the connect
        itself failed."""
        lost = asyncio.Event()
        managed.lost = lost
        self._set_state(managed, DeviceState.CONNECTING)
        link = DeviceLink(
            radio.device_for(managed.address, managed.ble_device, managed.name),
            client_backend=radio.client_backend,
            on_telemetry=lambda t: self._on_telemetry(managed, t),
            on_status=lambda s: self._on_status(managed, s),
            on_disconnect=lost.set,
            write_guard=managed.supervisor.check_command,
        )
        try:
            await link.connect(telemetry_hz=self.wanted_hz(managed))
        except BleError as exc:
            radio.connect_failures += 1
            self._set_state(managed, DeviceState.LOST, str(exc))
            return False
        except Exception as exc:
            radio.connect_failures += 1
            log.exception("unexpected error connecting to %s", managed.address)
            self._set_state(managed, DeviceState.LOST, f"unexpected error: {exc}")
            return False
        managed.link = link
        self._retune(managed)  # the need may have changed while it connected
        managed.connected.set()
        self._set_state(managed, DeviceState.CONNECTED)
        self._set_state(managed, DeviceState.BONDED)
        managed.tell_link(up=True)
        try:
            await lost.wait()
        finally:
            managed.connected.clear()
            managed.link = None
            for name, value in dataclasses.asdict(link.counters).items():
                setattr(managed.past_links, name, getattr(managed.past_links, name) + value)
            # Always (close is idempotent): a link given up on must be taken down, or its
            # connection stays up with nobody holding it and no new link to the device is
            # possible.
            await link.close()
        managed.reconnects += 1
        managed.last_disconnect_reason = (
            "link lost" if radio.up else f"link lost: {radio.name} went down"
        )
        self._set_state(managed, DeviceState.LOST, managed.last_disconnect_reason)
        managed.tell_link(up=False)
        return True

    def _on_telemetry(self, managed: ManagedDevice, telemetry: p.Telemetry) -> None:
        received = time.monotonic()
        for sample in telemetry.samples:
            managed.battery_pct = sample.battery_pct
            managed.contact_quality = sample.contact_quality
            session_id, zone = managed.tell_sample(sample)
            self.hub.publish(
                managed.address, sample, session_id=session_id, zone=zone, received_at=received
            )

    def _on_status(self, managed: ManagedDevice, status: p.DeviceStatus) -> None:
        managed.last_status = status
        managed.battery_pct = status.battery_pct
        managed.tell_status(status)

    async def close(self) -> None:
        """Disconnect every device (the devices stop output on disconnect)."""
        self._unwatch()
        for managed in list(self._devices.values()):
            if managed.task is not None:
                managed.task.cancel()
            if managed.link is not None:
                await managed.link.close()
