"""A bleak client backend that runs on bumble: ``BleakClient(device, backend=BumbleClient)``.

Gateway code stays plain bleak. The backend finds its ``BumbleAdapter`` in the ``BLEDevice``
that ``BumbleScanner`` produced (``details`` is a ``BumbleDeviceDetails``), or in the
``bumble_adapter=`` keyword when connecting by address string. A ``BLEDevice`` seen through an
adapter that has since closed (its transport was lost and reopened) connects through the
backend's bound adapter instead: ``bound_to(new_adapter)`` is how a reopened radio takes over.

Translation rules at this boundary:
- ATT error responses become ``BleakGATTProtocolError(code)``;
- a connect that does not reach the peer in time is ``asyncio.TimeoutError`` (the exception
  bleak-retry-connector retries on); other connect failures are ``BleakError``;
- a GATT request that bumble cancels because the link dropped is ``BleakError``, never a bare
  ``CancelledError`` (which would look like our own task being cancelled);
- every await runs under a named timeout, because a central can believe in a link to a peer that
  has gone, and bumble would then wait 30 s per request; the ATT transaction itself is never
  cancelled midway (``BumbleAdapter.bounded``): a timed-out one is abandoned with its link.

It deliberately does not: retry, cache services across connections, or expose bumble objects
beyond ``BleakGATT*.obj``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from bleak.args import SizedBuffer
from bleak.assigned_numbers import gatt_char_props_to_strs
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError
from bumble import att, core, hci
from bumble.device import Connection
from bumble.gatt import GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR
from bumble.gatt_client import CharacteristicProxy, Client, ServiceProxy

from ble.bumble.adapter import LE_CONNECT_TIMEOUT_S, BumbleAdapter, BumbleDeviceDetails
from ble.bumble.host import guarded
from ble.errors import BleError, LinkError

__all__ = [
    "ATT_TRANSACTION_TIMEOUT_S",
    "DISCOVERY_TIMEOUT_S",
    "PAIRING_PROCEDURE_TIMEOUT_S",
    "BumbleClient",
    "resolve_adapter",
]

log = logging.getLogger(__name__)

#: The backend's bound on one ATT transaction (a GATT read, write or subscribe; measured at
#: about 1 ms, the margin covers load). The link bounds its own setup steps tighter.
ATT_TRANSACTION_TIMEOUT_S = 10.0
#: Full service, characteristic and descriptor discovery.
DISCOVERY_TIMEOUT_S = 15.0
#: Pairing, generous because passkey entry waits for a human.
PAIRING_PROCEDURE_TIMEOUT_S = 30.0

_T = TypeVar("_T")


def bleak_uuid(value: core.UUID) -> str:
    """bumble UUID -> the lower-case 128-bit string bleak uses everywhere."""
    return str(uuid.UUID(bytes=bytes(reversed(value.uuid_128_bytes))))


def resolve_adapter(
    kwargs: dict[str, Any], details: object = None, bound: BumbleAdapter | None = None
) -> BumbleAdapter | None:
    """Find the BumbleAdapter among a backend's keyword arguments or a BLEDevice's details.

    Accepted, first match wins: ``bumble_adapter=``; ``adapter=`` (bleak 3.1 warns that this
    name is deprecated, so prefer ``bumble_adapter=``); ``bluez={"adapter": ...}``, which is
    where bleak moves ``adapter=``; then ``BumbleDeviceDetails.adapter`` while that adapter is
    open; then ``bound`` (the adapter of a backend made with ``bound_to``); then the details'
    closed adapter (whose operations then say it is closed).
    """
    bluez = kwargs.get("bluez") or {}
    for candidate in (
        kwargs.get("bumble_adapter"),
        kwargs.get("adapter"),
        bluez.get("adapter") if isinstance(bluez, dict) else None,
    ):
        if isinstance(candidate, BumbleAdapter):
            return candidate
    seen_through = details.adapter if isinstance(details, BumbleDeviceDetails) else None
    if seen_through is not None and (seen_through.is_open or bound is None):
        return seen_through
    return bound


class BumbleClient(BaseBleakClient):
    """bleak client backend over a ``BumbleAdapter``. Use through ``bleak.BleakClient``."""

    #: Set on the subclasses ``bound_to()`` makes.
    bound_adapter: ClassVar[BumbleAdapter | None] = None

    @classmethod
    def bound_to(cls, adapter: BumbleAdapter) -> type[BumbleClient]:
        """This backend with ``adapter`` built in: ``BleakClient(addr, backend=...)``.

        The typed alternative to ``bumble_adapter=``, which bleak's type hints do not know.
        """
        # Same name as the base: bleak reports it as backend_id.
        return type(cls.__name__, (cls,), {"bound_adapter": adapter})

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None = None,
        timeout: float = LE_CONNECT_TIMEOUT_S,
        services: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device,
            disconnected_callback=disconnected_callback,
            timeout=timeout,
            **kwargs,
        )
        details = (
            address_or_ble_device.details if isinstance(address_or_ble_device, BLEDevice) else None
        )
        adapter = resolve_adapter(kwargs, details, self.bound_adapter)
        if adapter is None:
            raise BleakError(
                "BumbleClient needs a BumbleAdapter: pass a BLEDevice found by BumbleScanner, "
                "or use backend=BumbleClient.bound_to(adapter) when connecting by address"
            )
        self._adapter = adapter
        self._background: set[asyncio.Task[None]] = set()
        self._peer: hci.Address | None = (
            details.address if isinstance(details, BumbleDeviceDetails) else None
        )
        self._device_name = (
            address_or_ble_device.name if isinstance(address_or_ble_device, BLEDevice) else None
        )
        self._service_filter = services
        self._connection: Connection | None = None
        self._subscriptions: dict[int, Callable[[bytes], None]] = {}

    # -- properties --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._device_name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        if self._connection is None:
            return att.ATT_DEFAULT_MTU
        return int(self._connection.att_mtu)

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    # -- connection --------------------------------------------------------------------------

    async def connect(self, pair: bool = False, **kwargs: Any) -> None:
        """Connect, then pair if asked and not bonded, then discover services.

        ``timeout=`` (seconds, bleak-retry-connector passes it) overrides the constructor's.
        """
        if self._connection is not None:
            return
        timeout_s = float(kwargs.get("timeout") or self._timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        peer = self._peer
        if peer is None:
            try:
                peer = await self._adapter.resolve_address(self.address, timeout_s=timeout_s)
            except TimeoutError as exc:
                raise BleakDeviceNotFoundError(
                    self.address, f"{self.address} was not heard within {timeout_s:.1f} s"
                ) from exc
            self._peer = peer
        try:
            connection = await self._adapter.connect(
                peer,
                timeout_s=max(deadline - loop.time(), 0.001),
                on_disconnect=self._on_disconnect,
            )
        except BleError as exc:
            raise BleakError(str(exc)) from exc
        if not self._adapter.is_live(connection):
            # Dropped after setup but before this task resumed; its event has already fired.
            raise BleakError(f"{self.address} disconnected while connecting; try again")
        self._connection = connection
        try:
            if pair:
                await self._adapter.pair(connection, timeout_s=PAIRING_PROCEDURE_TIMEOUT_S)
            self.services = await self._adapter.bounded(
                self._discover(connection.gatt_client), DISCOVERY_TIMEOUT_S, "service discovery"
            )
        except BaseException as exc:
            await self._adapter.disconnect(connection)
            self._connection = None
            self._raise_translated(exc, f"setting up the link to {self.address}")
            raise

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        await self._adapter.disconnect(connection)
        # The disconnection event normally clears this; do it here too in case the controller
        # never answered (the link is unusable to us either way).
        self._forget_link()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        connection = self._require_connection()
        try:
            await self._adapter.pair(connection, timeout_s=PAIRING_PROCEDURE_TIMEOUT_S)
        except BleError as exc:
            raise BleakError(str(exc)) from exc

    async def unpair(self) -> None:
        """Forget the bond and disconnect (as bleak's BlueZ and WinRT backends do)."""
        if self._peer is not None:
            await self._adapter.forget(self._peer)
        await self.disconnect()

    def _on_disconnect(self, reason: int) -> None:
        log.debug("%s disconnected (reason 0x%02X)", self.address, reason)
        self._forget_link()
        callback = self._disconnected_callback
        if callback is not None:
            # bleak schedules the callback rather than calling it from inside the stack.
            asyncio.get_running_loop().call_soon(guarded(callback, "disconnected callback"))

    def _forget_link(self) -> None:
        self._connection = None
        self._subscriptions.clear()

    # -- discovery ---------------------------------------------------------------------------

    async def _discover(self, client: Client) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        for service_proxy in await client.discover_services():
            service_uuid = bleak_uuid(service_proxy.uuid)
            if self._service_filter and service_uuid not in self._service_filter:
                continue
            service = BleakGATTService(service_proxy, service_proxy.handle, service_uuid)
            collection.add_service(service)
            await self._discover_characteristics(client, service_proxy, service, collection)
        return collection

    async def _discover_characteristics(
        self,
        client: Client,
        service_proxy: ServiceProxy,
        service: BleakGATTService,
        collection: BleakGATTServiceCollection,
    ) -> None:
        for char_proxy in await client.discover_characteristics((), service_proxy):
            characteristic = BleakGATTCharacteristic(
                char_proxy,
                char_proxy.handle,
                bleak_uuid(char_proxy.uuid),
                sorted(gatt_char_props_to_strs(int(char_proxy.properties))),
                self._max_write_without_response_size,
                service,
            )
            collection.add_characteristic(characteristic)
            for descriptor_proxy in await client.discover_descriptors(char_proxy):
                collection.add_descriptor(
                    BleakGATTDescriptor(
                        descriptor_proxy,
                        descriptor_proxy.handle,
                        bleak_uuid(descriptor_proxy.type),
                        characteristic,
                    )
                )

    def _max_write_without_response_size(self) -> int:
        return self.mtu_size - 3

    # -- GATT I/O ----------------------------------------------------------------------------

    async def read_gatt_char(
        self,
        characteristic: BleakGATTCharacteristic,
        *,
        use_cached: bool = False,
        **kwargs: Any,
    ) -> bytearray:
        return await self._read(characteristic.handle, use_cached, f"read of {characteristic}")

    async def read_gatt_descriptor(
        self,
        descriptor: BleakGATTDescriptor,
        *,
        use_cached: bool = False,
        **kwargs: Any,
    ) -> bytearray:
        return await self._read(descriptor.handle, use_cached, f"read of {descriptor}")

    async def _read(self, handle: int, use_cached: bool, what: str) -> bytearray:
        if use_cached and self._connection is not None:
            cached = self._connection.gatt_client.cached_values.get(handle)
            if cached is not None:
                return bytearray(cached[1])
        value = await self._gatt(what, lambda client: client.read_value(handle))
        return bytearray(value)

    async def write_gatt_char(
        self,
        characteristic: BleakGATTCharacteristic,
        data: SizedBuffer,
        response: bool,
        **kwargs: Any,
    ) -> None:
        payload = bytes(data)
        await self._gatt(
            f"write to {characteristic}",
            lambda client: client.write_value(
                characteristic.handle, payload, with_response=response
            ),
        )

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer, **kwargs: Any
    ) -> None:
        payload = bytes(data)
        await self._gatt(
            f"write to {descriptor}",
            lambda client: client.write_value(descriptor.handle, payload, with_response=True),
        )

    async def start_notify(
        self,
        characteristic: BleakGATTCharacteristic,
        callback: NotifyCallback,
        **kwargs: Any,
    ) -> None:
        """Subscribe with notifications if the characteristic has them, else indications."""
        proxy = _proxy(characteristic)
        if not any(
            d.uuid == bleak_uuid(GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR)
            for d in characteristic.descriptors
        ):
            raise BleakError(f"{characteristic} has no CCCD; it cannot notify or indicate")

        def on_value(value: bytes) -> None:
            callback(bytearray(value))

        subscriber = guarded(on_value, f"notification callback for {characteristic.uuid}")
        await self._gatt(
            f"subscribe to {characteristic}",
            lambda client: client.subscribe(proxy, subscriber, prefer_notify=True),
        )
        self._subscriptions[characteristic.handle] = subscriber

    async def stop_notify(self, characteristic: BleakGATTCharacteristic, **kwargs: Any) -> None:
        subscriber = self._subscriptions.pop(characteristic.handle, None)
        proxy = _proxy(characteristic)
        await self._gatt(
            f"unsubscribe from {characteristic}",
            lambda client: client.unsubscribe(proxy, subscriber),
        )

    async def _gatt(self, what: str, operation: Callable[[Client], Awaitable[_T]]) -> _T:
        """Run one GATT operation under ATT_TRANSACTION_TIMEOUT_S and translate bumble's errors."""
        connection = self._require_connection()
        try:
            return await self._adapter.bounded(
                operation(connection.gatt_client), ATT_TRANSACTION_TIMEOUT_S, what
            )
        except BaseException as exc:
            if isinstance(exc, TimeoutError | asyncio.CancelledError):
                self._abandon(connection, what)
            self._raise_translated(exc, what)
            raise

    def _abandon(self, connection: Connection, what: str) -> None:
        """Drop a link whose ATT transaction was abandoned (timed out or cancelled).

        ATT allows one outstanding request per bearer and has no request ids (Core Vol 3 Part F
        3.3.3): after a timeout the late response would be taken as the answer to the NEXT
        request, and bumble raises inside its packet handler. The spec's remedy is to stop
        using the bearer; for a device that also means output off at once.
        """
        if self._connection is not connection:
            return
        # DEBUG: the caller sees the timeout and the disconnect; it decides what to log.
        log.debug("%s on %s was abandoned; dropping the link", what, self.address)
        task = asyncio.get_running_loop().create_task(
            self._adapter.disconnect(connection), name=f"abandon:{self.address}"
        )
        self._background.add(task)
        task.add_done_callback(self._abandoned)

    def _abandoned(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.debug("dropping the link to %s failed: %s", self.address, exc)

    def _raise_translated(self, exc: BaseException, what: str) -> None:
        """Raise the bleak-facing form of ``exc``; return only if it should pass unchanged."""
        if isinstance(exc, att.ATT_Error):
            raise BleakGATTProtocolError(exc.error_code) from exc
        if isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                return  # our caller cancelled us: let CancelledError through
            raise BleakError(f"{what} aborted: {self.address} disconnected") from exc
        if isinstance(exc, TimeoutError):
            raise TimeoutError(f"{what} timed out; is {self.address} still in range?") from exc
        if type(exc) is LinkError:  # bumble aborted it: the link dropped (see bounded())
            raise BleakError(f"{what} aborted: {self.address} disconnected") from exc
        if isinstance(exc, core.BaseBumbleError | BleError):
            raise BleakError(f"{what} failed: {exc!s}") from exc

    def _require_connection(self) -> Connection:
        if self._connection is None:
            raise BleakError(f"not connected to {self.address}; call connect() first")
        return self._connection


def _proxy(characteristic: BleakGATTCharacteristic) -> CharacteristicProxy[bytes]:
    proxy = characteristic.obj
    if not isinstance(proxy, CharacteristicProxy):
        raise BleakError(f"{characteristic} was not discovered by BumbleClient")
    return proxy
