"""A BlueZ-shaped service on a D-Bus bus, so bleak's own BlueZ backend can be tested without
kernel Bluetooth.

:class:`BluezService` owns the name ``org.bluez`` on a bus (a private ``dbus-daemon`` in
tests; a process under test finds it through ``DBUS_SYSTEM_BUS_ADDRESS``) and exports what
bleak's BlueZ backend reads and calls (bleak/backends/bluezdbus/manager.py, client.py,
scanner.py of bleak 3.1): the ObjectManager (``GetManagedObjects``, ``InterfacesAdded`` /
``InterfacesRemoved``), ``org.bluez.Adapter1`` per adapter (``StartDiscovery``,
``StopDiscovery``, ``SetDiscoveryFilter``, ``RemoveDevice``; ``Address``, ``Powered``,
``Discovering``, ``Roles``...), ``org.bluez.Device1`` per device heard (``Connect``,
``Disconnect``, ``Pair``, ``CancelPairing``; ``Address``, ``Name``, ``Alias``, ``RSSI``,
``UUIDs``, ``ManufacturerData``, ``ServiceData``, ``Connected``, ``Paired``, ``Bonded``,
``Trusted``, ``ServicesResolved``...) and, while a device is connected, its GATT objects
(ble/sim/bluez_gatt.py), with every change sent as ``PropertiesChanged``.

Like bluetoothd, it is a host stack over a controller: each adapter is a bumble central
(``BumbleAdapter``) on the same virtual air as the simulated devices, and each D-Bus call is
carried out over that air by a bleak client on bumble. The devices at the far end are the
simulated devices themselves (ble/sim/peripheral.py with its firmware), so what bleak's BlueZ
backend talks to is the same firmware the rest of the suite tests, reached over a real link
with real pairing. ``mcgw sim --bluez-bus ADDRESS`` serves it beside HCI over TCP.

What it cannot show compared with real BlueZ (and the kernel under it):
- the version check: bleak asks ``bluetoothctl --version``; nothing here answers it. Tests put
  a ``bluetoothctl`` on PATH that prints a version (tests/e2e/bluez_bus.py), as a host with
  BlueZ installed has; without one bleak logs that it assumes 5.55+;
- D-Bus policy: the private bus lets anyone own and call anything, so permission problems
  (the ``bluetooth`` group) do not appear; discovery sessions are counted, not tracked per
  D-Bus client, and a client that vanishes does not end its session;
- the discovery filter is accepted and stored but not applied (bleak filters by UUID again
  itself); advertisements are sent as ``PropertiesChanged`` only when a value changes, as
  BlueZ does without ``DuplicateData``, and ``RSSI`` is invalidated when discovery stops;
- devices are never removed by themselves (BlueZ drops unconnected, unpaired devices some time
  after discovery stops); only ``RemoveDevice`` removes one;
- a bonded device is re-encrypted by ``Connect`` at once, where the kernel does it on demand;
  ``AcquireNotify``/``AcquireWrite``, ``TxPower``, ``Appearance``, agents, LE Audio, BR/EDR and
  the kernel's connection and MTU parameters are not there;
- timing: every call crosses one more process and the virtual air, and no controller quirk
  (stuck discovery, ``le-connection-abort-by-local``, ``InProgress`` answers) is reproduced.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from bleak import BleakClient
from bleak.exc import BleakError
from bumble.device import Advertisement
from dbus_fast import BusType, DBusError, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusBool,
    DBusInt16,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
)
from dbus_fast.constants import PropertyAccess, RequestNameReply
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from ble.bumble.adapter import BumbleAdapter
from ble.bumble.client import BumbleClient
from ble.bumble.host import guarded
from ble.bumble.scanner import advertisement_data
from ble.errors import BleError, RadioError
from ble.sim.bluez_gatt import DBusOptions, DBusStrList, GattTree, bluez_error

__all__ = ["BLUEZ_NAME", "BluezService"]

log = logging.getLogger(__name__)

BLUEZ_NAME = "org.bluez"
CONNECT_TIMEOUT_S = 10.0
"""A ``Connect`` that has not reached the device by then fails (BlueZ: about 20 s)."""

DBusManufacturerData = Annotated[dict[int, Variant], DBusSignature("a{qv}")]
DBusServiceData = Annotated[dict[str, Variant], DBusSignature("a{sv}")]


class BluezService:
    """``org.bluez`` on a bus, one adapter per bumble central. ``start(address)``, ``close()``."""

    def __init__(self, adapters: Mapping[str, BumbleAdapter], *, powered: bool = True) -> None:
        """``adapters`` by BlueZ name (``{"hci0": ...}``); ``powered=False`` starts them off."""
        self._bus: MessageBus | None = None
        self.adapters = {
            name: AdapterObject(self, name, adapter, powered=powered)
            for name, adapter in adapters.items()
        }

    @property
    def bus(self) -> MessageBus:
        assert self._bus is not None, "start() first"
        return self._bus

    async def start(self, bus_address: str | None = None) -> None:
        """Connect to the bus (``None``: the system bus) and own ``org.bluez`` on it."""
        if bus_address is None:
            bus = MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True)
        else:
            bus = MessageBus(bus_address=bus_address, negotiate_unix_fd=True)
        try:
            await bus.connect()
            for adapter in self.adapters.values():
                bus.export(adapter.path, adapter)
            reply = await bus.request_name(BLUEZ_NAME)
        except Exception as exc:
            bus.disconnect()
            raise RadioError(f"cannot serve {BLUEZ_NAME} on {bus_address}: {exc}") from exc
        if reply is not RequestNameReply.PRIMARY_OWNER:
            bus.disconnect()
            raise RadioError(f"{BLUEZ_NAME} is already owned on {bus_address}")
        self._bus = bus

    async def close(self) -> None:
        """Disconnect every device, stop discovery, leave the bus."""
        for adapter in self.adapters.values():
            await adapter.shut_down()
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None


class AdapterObject(ServiceInterface):
    """``org.bluez.Adapter1`` at ``/org/bluez/<name>`` over one bumble central."""

    def __init__(
        self, service: BluezService, name: str, adapter: BumbleAdapter, *, powered: bool
    ) -> None:
        super().__init__("org.bluez.Adapter1")
        self.service = service
        self.hci = name
        self.path = f"/org/bluez/{name}"
        self.central = adapter
        self.devices: dict[str, DeviceObject] = {}
        self._powered = powered
        self._sessions = 0
        self._filter: dict[str, Variant] = {}
        self._stop_listening: Callable[[], Awaitable[None]] | None = None

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return self.central.address

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        return "random"

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return f"mcgw-sim-{self.hci}"

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        return f"mcgw-sim-{self.hci}"

    @dbus_property(access=PropertyAccess.READ)
    def Class(self) -> DBusUInt32:
        return 0

    @dbus_property()
    def Powered(self) -> DBusBool:
        return self._powered

    @Powered.setter  # type: ignore[no-redef]
    def Powered(self, value: DBusBool) -> None:
        self._powered = value
        self.emit_properties_changed({"Powered": value})

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> DBusBool:
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Pairable(self) -> DBusBool:
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Discovering(self) -> DBusBool:
        return self._sessions > 0

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> DBusStrList:
        return []

    @dbus_property(access=PropertyAccess.READ)
    def Modalias(self) -> DBusStr:
        return "usb:v1D6Bp0246d0542"  # the Linux Foundation's id, as BlueZ's own default

    @dbus_property(access=PropertyAccess.READ)
    def Roles(self) -> DBusStrList:
        return ["central", "peripheral"]

    @dbus_method()
    async def StartDiscovery(self) -> None:
        if not self._powered:
            raise DBusError("org.bluez.Error.NotReady", "Resource Not Ready")
        self._sessions += 1
        if self._sessions > 1:
            return
        try:
            self._stop_listening = await self.central.add_advertisement_listener(
                guarded(self._heard, f"{self.hci} advertisement"), active=True
            )
        except BleError as exc:
            self._sessions = 0
            raise DBusError("org.bluez.Error.Failed", str(exc)) from exc
        self.emit_properties_changed({"Discovering": True})

    @dbus_method()
    async def StopDiscovery(self) -> None:
        if self._sessions == 0:
            raise DBusError("org.bluez.Error.Failed", "No discovery started")
        self._sessions -= 1
        if self._sessions == 0:
            await self._stop_discovery()

    async def _stop_discovery(self) -> None:
        stop, self._stop_listening = self._stop_listening, None
        if stop is not None:
            with contextlib.suppress(BleError):
                await stop()
        self.emit_properties_changed({"Discovering": False})
        for device in self.devices.values():
            device.discovery_stopped()

    @dbus_method()
    def SetDiscoveryFilter(self, properties: DBusOptions) -> None:
        self._filter = dict(properties)

    @dbus_method()
    def GetDiscoveryFilters(self) -> DBusStrList:
        return ["UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable"]

    @dbus_method()
    async def RemoveDevice(self, device: DBusObjectPath) -> None:
        found = next((d for d in self.devices.values() if d.path == device), None)
        if found is None:
            raise DBusError("org.bluez.Error.DoesNotExist", "Does Not Exist")
        await found.forget()
        del self.devices[found.address]
        self.service.bus.unexport(found.path, found)

    def _heard(self, advertisement: Advertisement) -> None:
        adv = advertisement_data(advertisement)
        address = str(advertisement.address.to_string(False))
        device = self.devices.get(address)
        if device is None:
            device = DeviceObject(self, address, advertisement.address.is_random)
            device.update(
                adv.local_name,
                adv.rssi,
                adv.service_uuids,
                adv.manufacturer_data,
                adv.service_data,
                signal=False,
            )
            self.devices[address] = device
            self.service.bus.export(device.path, device)  # InterfacesAdded with every property
        else:
            device.update(
                adv.local_name, adv.rssi, adv.service_uuids, adv.manufacturer_data, adv.service_data
            )

    async def shut_down(self) -> None:
        if self._sessions:
            self._sessions = 0
            await self._stop_discovery()
        for device in self.devices.values():
            await device.drop()


class DeviceObject(ServiceInterface):
    """``org.bluez.Device1`` for one address an adapter heard; its link is a bleak client on
    bumble, and while connected its GATT objects are exported under its path."""

    def __init__(self, adapter: AdapterObject, address: str, random: bool) -> None:
        super().__init__("org.bluez.Device1")
        self.adapter = adapter
        self.address = address
        self.path = f"{adapter.path}/dev_{address.replace(':', '_')}"
        self._random = random
        self._name = ""
        self._rssi = -127
        self._uuids: list[str] = []
        self._manufacturer: dict[int, bytes] = {}
        self._service_data: dict[str, bytes] = {}
        self._client: BleakClient | None = None
        self._gatt: GattTree | None = None
        self._paired = False
        self._trusted = False
        self._resolved = False
        self._busy = asyncio.Lock()
        self._drops = 0
        """Counts ``drop()`` calls: a ``Disconnect`` during a ``Connect`` cancels it (BlueZ too)."""

    # -- properties --------------------------------------------------------------------------

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return self.address

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        return "random" if self._random else "public"

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return self._name

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        # BlueZ's alias for a nameless device is its address with dashes (bleak knows it).
        return self._name or self.address.replace(":", "-")

    @dbus_property(access=PropertyAccess.READ)
    def Adapter(self) -> DBusObjectPath:
        return self.adapter.path

    @dbus_property(access=PropertyAccess.READ)
    def RSSI(self) -> DBusInt16:
        return self._rssi

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> DBusStrList:
        return self._uuids

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(self) -> DBusManufacturerData:
        return {k: Variant("ay", v) for k, v in self._manufacturer.items()}

    @dbus_property(access=PropertyAccess.READ)
    def ServiceData(self) -> DBusServiceData:
        return {k: Variant("ay", v) for k, v in self._service_data.items()}

    @dbus_property(access=PropertyAccess.READ)
    def Connected(self) -> DBusBool:
        return self._client is not None

    @dbus_property(access=PropertyAccess.READ)
    def Paired(self) -> DBusBool:
        return self._paired

    @dbus_property(access=PropertyAccess.READ)
    def Bonded(self) -> DBusBool:
        return self._paired

    @dbus_property()
    def Trusted(self) -> DBusBool:
        return self._trusted

    @Trusted.setter  # type: ignore[no-redef]
    def Trusted(self, value: DBusBool) -> None:
        self._trusted = value
        self.emit_properties_changed({"Trusted": value})

    @dbus_property(access=PropertyAccess.READ)
    def Blocked(self) -> DBusBool:
        return False

    @dbus_property(access=PropertyAccess.READ)
    def LegacyPairing(self) -> DBusBool:
        return False

    @dbus_property(access=PropertyAccess.READ)
    def ServicesResolved(self) -> DBusBool:
        return self._resolved

    def update(
        self,
        name: str | None,
        rssi: int,
        uuids: list[str],
        manufacturer: dict[int, bytes],
        service_data: dict[str, bytes],
        *,
        signal: bool = True,
    ) -> None:
        """What one advertisement said; only what changed is signalled."""
        changed: dict[str, object] = {}
        if name and name != self._name:
            self._name = name
            changed.update(Name=name, Alias=name)
        if rssi != self._rssi:
            self._rssi = rssi
            changed["RSSI"] = rssi
        if uuids and set(uuids) - set(self._uuids):
            self._uuids = sorted({*self._uuids, *uuids})
            changed["UUIDs"] = self._uuids
        if manufacturer and manufacturer != self._manufacturer:
            self._manufacturer = dict(manufacturer)
            changed["ManufacturerData"] = self.ManufacturerData
        if service_data and service_data != self._service_data:
            self._service_data = dict(service_data)
            changed["ServiceData"] = self.ServiceData
        if signal and changed:
            self.emit_properties_changed(changed)

    def discovery_stopped(self) -> None:
        # BlueZ forgets the signal of every device when discovery stops: the next
        # advertisement heard sets RSSI again, which is how bleak sees the device anew.
        self._rssi = -127
        self.emit_properties_changed({}, ["RSSI"])

    # -- methods -----------------------------------------------------------------------------

    @dbus_method()
    async def Connect(self) -> None:
        async with self._busy:
            await self._connect()

    @dbus_method()
    async def Pair(self) -> None:
        async with self._busy:
            if self._paired:
                raise DBusError("org.bluez.Error.AlreadyExists", "Already Exists")
            await self._connect()
            assert self._client is not None
            try:
                await self._client.pair()
            except (BleakError, TimeoutError) as exc:
                raise DBusError("org.bluez.Error.AuthenticationFailed", f"{exc}") from exc
            self._paired = True
            self.emit_properties_changed({"Paired": True, "Bonded": True})

    @dbus_method()
    def CancelPairing(self) -> None:
        raise DBusError("org.bluez.Error.DoesNotExist", "No pairing in progress")

    @dbus_method()
    async def Disconnect(self) -> None:
        await self.drop()

    async def _connect(self) -> None:
        if self._client is not None:
            return
        if not self.adapter.Powered:
            raise DBusError("org.bluez.Error.NotReady", "Resource Not Ready")
        drops = self._drops
        client = BleakClient(
            self.address,
            backend=BumbleClient.bound_to(self.adapter.central),
            disconnected_callback=lambda c: self._lost(c),
            timeout=CONNECT_TIMEOUT_S,
        )
        try:
            await client.connect()
            if self._paired:
                await client.pair()  # a bonded link is encrypted again with the stored keys
        except (BleakError, TimeoutError) as exc:
            with contextlib.suppress(BleakError, TimeoutError):
                await client.disconnect()
            raise bluez_error(exc, "Connect") from exc
        if drops != self._drops:  # the caller gave up (bleak sends Disconnect on a timeout)
            with contextlib.suppress(BleakError, TimeoutError):
                await client.disconnect()
            raise DBusError("org.bluez.Error.Failed", "Operation was cancelled")
        self._client = client
        self.emit_properties_changed({"Connected": True})
        self._gatt = GattTree(self.adapter.service.bus, self.path, client)
        self._gatt.export()
        self._resolved = True
        self.emit_properties_changed({"ServicesResolved": True})

    def _lost(self, client: BleakClient) -> None:
        if client is self._client:
            self._gone()

    def _gone(self) -> None:
        self._client = None
        if self._gatt is not None:
            self._gatt.unexport()
            self._gatt = None
        if self._resolved:
            self._resolved = False
            self.emit_properties_changed({"ServicesResolved": False})
        self.emit_properties_changed({"Connected": False})

    async def drop(self) -> None:
        """Disconnect (no-op when not connected); cancels a ``Connect`` under way."""
        self._drops += 1
        client = self._client
        if client is None:
            return
        self._gone()
        with contextlib.suppress(BleakError, TimeoutError):
            await client.disconnect()

    async def forget(self) -> None:
        """Disconnect and delete the bond (``RemoveDevice``)."""
        await self.drop()
        if self._paired:
            self._paired = False
            with contextlib.suppress(TimeoutError):
                peer = await self.adapter.central.resolve_address(self.address, timeout_s=1.0)
                await self.adapter.central.forget(peer)
