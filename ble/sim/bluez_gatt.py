"""The GATT side of the BlueZ-shaped service: ``org.bluez.GattService1``, ``GattCharacteristic1``
and ``GattDescriptor1`` objects for one connected device (see ble/sim/bluez_dbus.py).

Each object stands for one attribute the service's central discovered on the device, and each
method is passed to that central (a bleak client on bumble) as it comes: ``ReadValue`` reads,
``WriteValue`` writes (``type`` ``request`` or ``command``), ``StartNotify``/``StopNotify``
subscribe, and every notification or indication sets ``Value`` and is sent as
``PropertiesChanged``, which is how BlueZ hands notifications to bleak. Errors come back as
BlueZ names them (``org.bluez.Error.Failed`` "Operation failed with ATT error: 0x0f"), so
bleak's own translation turns them into ``BleakGATTProtocolError`` with the ATT code.

It deliberately does not: keep a GATT cache across connections, or offer ``AcquireNotify`` /
``AcquireWrite`` (bleak uses ``StartNotify`` unless told otherwise and never acquires a write).
"""

# No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus signatures from the
# annotations, and a postponed ``-> None`` is not one it understands.
from typing import Annotated, Any

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.service import BleakGATTService
from bleak.exc import BleakError, BleakGATTProtocolError
from dbus_fast import DBusError, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusBool,
    DBusBytes,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt16,
)
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

__all__ = ["GattTree", "bluez_error"]

DBusStrList = Annotated[list[str], DBusSignature("as")]
DBusPathList = Annotated[list[str], DBusSignature("ao")]
DBusOptions = Annotated[dict[str, Variant], DBusSignature("a{sv}")]


def bluez_error(exc: BaseException, what: str) -> DBusError:
    """The D-Bus error BlueZ answers with when ``what`` failed with ``exc``."""
    if isinstance(exc, BleakGATTProtocolError):
        return DBusError(
            "org.bluez.Error.Failed", f"Operation failed with ATT error: 0x{exc.code:02x}"
        )
    if isinstance(exc, TimeoutError):
        return DBusError("org.bluez.Error.Failed", f"{what}: Operation timed out")
    return DBusError("org.bluez.Error.Failed", f"{what}: {exc or type(exc).__name__}")


class _Service(ServiceInterface):
    def __init__(self, path: str, device_path: str, service: BleakGATTService) -> None:
        super().__init__("org.bluez.GattService1")
        self.path = path
        self._device_path = device_path
        self._uuid = service.uuid

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> DBusBool:
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Device(self) -> DBusObjectPath:
        return self._device_path

    @dbus_property(access=PropertyAccess.READ)
    def Includes(self) -> DBusPathList:
        return []


class _Characteristic(ServiceInterface):
    def __init__(
        self,
        path: str,
        service_path: str,
        characteristic: BleakGATTCharacteristic,
        client: BleakClient,
    ) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self.path = path
        self._service_path = service_path
        self._char = characteristic
        self._client = client
        self._value = b""
        self._notifying = False

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self._char.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> DBusObjectPath:
        return self._service_path

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> DBusBytes:
        return self._value

    @dbus_property(access=PropertyAccess.READ)
    def Notifying(self) -> DBusBool:
        return self._notifying

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> DBusStrList:
        return list(self._char.properties)

    @dbus_property(access=PropertyAccess.READ)
    def MTU(self) -> DBusUInt16:
        return self._client.mtu_size

    def _set_value(self, value: bytes) -> None:
        self._value = value
        self.emit_properties_changed({"Value": value})

    @dbus_method()
    async def ReadValue(self, options: DBusOptions) -> DBusBytes:
        try:
            value = bytes(await self._client.read_gatt_char(self._char))
        except (BleakError, TimeoutError) as exc:
            raise bluez_error(exc, "ReadValue") from exc
        self._set_value(value)  # BlueZ updates Value (and signals it) after a read too
        return value

    @dbus_method()
    async def WriteValue(self, value: DBusBytes, options: DBusOptions) -> None:
        kind = options["type"].value if "type" in options else ""
        if not kind:
            kind = "request" if "write" in self._char.properties else "command"
        try:
            await self._client.write_gatt_char(self._char, value, response=kind != "command")
        except (BleakError, TimeoutError) as exc:
            raise bluez_error(exc, "WriteValue") from exc

    @dbus_method()
    async def StartNotify(self) -> None:
        if self._notifying:
            return
        if not {"notify", "indicate"} & set(self._char.properties):
            raise DBusError("org.bluez.Error.NotSupported", "Operation is not supported")
        try:
            await self._client.start_notify(
                self._char, lambda _c, data: self._set_value(bytes(data))
            )
        except (BleakError, TimeoutError) as exc:
            raise bluez_error(exc, "StartNotify") from exc
        self._notifying = True
        self.emit_properties_changed({"Notifying": True})

    @dbus_method()
    async def StopNotify(self) -> None:
        if not self._notifying:
            raise DBusError("org.bluez.Error.Failed", "No notify session started")
        self._notifying = False
        self.emit_properties_changed({"Notifying": False})
        try:
            await self._client.stop_notify(self._char)
        except (BleakError, TimeoutError) as exc:
            raise bluez_error(exc, "StopNotify") from exc


class _Descriptor(ServiceInterface):
    def __init__(
        self, path: str, char_path: str, descriptor: BleakGATTDescriptor, client: BleakClient
    ) -> None:
        super().__init__("org.bluez.GattDescriptor1")
        self.path = path
        self._char_path = char_path
        self._descriptor = descriptor
        self._client = client
        self._value = b""

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self._descriptor.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Characteristic(self) -> DBusObjectPath:
        return self._char_path

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> DBusBytes:
        return self._value

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> DBusStrList:
        return ["read", "write"]

    @dbus_method()
    async def ReadValue(self, options: DBusOptions) -> DBusBytes:
        try:
            self._value = bytes(await self._client.read_gatt_descriptor(self._descriptor))
        except (BleakError, TimeoutError) as exc:
            raise bluez_error(exc, "ReadValue") from exc
        return self._value

    @dbus_method()
    async def WriteValue(self, value: DBusBytes, options: DBusOptions) -> None:
        try:
            await self._client.write_gatt_descriptor(self._descriptor, value)
        except (BleakError, TimeoutError) as exc:
            raise bluez_error(exc, "WriteValue") from exc
        self._value = value


class GattTree:
    """The GATT objects of one connection, exported under the device's path while it lasts."""

    def __init__(self, bus: MessageBus, device_path: str, client: BleakClient) -> None:
        self._bus = bus
        self._objects: list[ServiceInterface] = []
        for service in client.services:
            service_path = f"{device_path}/service{service.handle:04x}"
            self._objects.append(_Service(service_path, device_path, service))
            for char in service.characteristics:
                char_path = f"{service_path}/char{char.handle:04x}"
                self._objects.append(_Characteristic(char_path, service_path, char, client))
                for descriptor in char.descriptors:
                    self._objects.append(
                        _Descriptor(
                            f"{char_path}/desc{descriptor.handle:04x}",
                            char_path,
                            descriptor,
                            client,
                        )
                    )

    def export(self) -> None:
        for obj in self._objects:
            self._bus.export(_path(obj), obj)

    def unexport(self) -> None:
        for obj in reversed(self._objects):
            self._bus.unexport(_path(obj), obj)
        self._objects.clear()


def _path(obj: Any) -> str:
    path: str = obj.path
    return path
