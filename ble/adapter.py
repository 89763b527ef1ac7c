"""The hub's Bluetooth adapter: one bumble ``Device`` acting as LE central.

``BumbleAdapter.open(moniker)`` opens a bumble transport by moniker (``"virtual"`` with a
``VirtualRadio``, ``"tcp-client:HOST:PORT"`` for a ``mcgw sim`` process, ``"usb:0"``,
``"serial:/dev/ttyUSB0"``, any other bumble transport) and powers a central on it. The bleak
backend (ble/bumble_client.py, ble/bumble_scanner.py) drives every BLE operation through it.

What it adds over a bare bumble Device, each measured as necessary:
- one pending LE connect at a time (the controller refuses a second one), with the controller's
  create-connection cancelled when a connect times out or is abandoned;
- ATT MTU 247 requested after each connect (bumble does not exchange it by itself);
- bonding keys in an in-memory keystore, and re-encryption on reconnect to a bonded peer;
- advertisement fan-out to any number of scanners, scanning only while one is listening;
- every callback handed to bumble is guarded: an exception in a bumble event handler breaks its
  packet processing, so ours log and swallow instead.

It deliberately does not: persist bonds across restarts, retry (bleak-retry-connector's job),
or speak GATT (the client does).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, Self

from bumble import att, core, hci
from bumble.device import Advertisement, Connection, Device
from bumble.keys import MemoryKeyStore
from bumble.transport import open_transport
from bumble.transport.common import Transport

from ble.errors import LinkError, RadioError
from ble.radio import VirtualRadio

__all__ = [
    "ATT_MTU",
    "CONNECT_TIMEOUT_S",
    "AdvertisementListener",
    "BumbleAdapter",
    "BumbleDeviceDetails",
    "guarded",
]

logger = logging.getLogger(__name__)

#: ATT MTU requested after every connect: the largest that fits one LE data PDU (251 - 4).
ATT_MTU = 247
#: Default budget for one LE connect when the caller gives none.
CONNECT_TIMEOUT_S = 10.0
#: Opening a transport (TCP connect, USB open) and powering the controller on.
OPEN_TIMEOUT_S = 10.0
#: One HCI command round trip (scan enable, create-connection cancel, disconnect).
HCI_COMMAND_TIMEOUT_S = 5.0
#: Re-encrypting a link with stored bonding keys; a peer that lost its keys fails fast.
ENCRYPT_TIMEOUT_S = 5.0
#: The ATT MTU exchange after connecting.
MTU_EXCHANGE_TIMEOUT_S = 5.0
#: Waiting for a Disconnection Complete after asking for a disconnect.
DISCONNECT_TIMEOUT_S = 5.0
#: Typed addresses remembered from advertisements (busy real-world air has many random ones).
_ADDRESS_CACHE_SIZE = 1024

_P = ParamSpec("_P")

AdvertisementListener = Callable[[Advertisement], None]


def guarded(callback: Callable[_P, object], what: str) -> Callable[_P, None]:
    """Wrap ``callback`` so an exception is logged instead of escaping into bumble."""

    @functools.wraps(callback)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            callback(*args, **kwargs)
        except Exception:
            logger.exception("%s raised; ignored so bumble keeps processing packets", what)

    return wrapper


@dataclass(frozen=True, slots=True)
class BumbleDeviceDetails:
    """``BLEDevice.details`` for devices seen through a ``BumbleAdapter``.

    Deliberately not a dict: bleak-retry-connector takes BlueZ code paths for dicts with "path".
    """

    adapter: BumbleAdapter
    address: hci.Address

    def __repr__(self) -> str:
        return f"BumbleDeviceDetails({self.address!s}, {self.adapter.moniker})"


class BumbleAdapter:
    """One bumble central on one transport. Create with ``await BumbleAdapter.open(...)``."""

    def __init__(
        self,
        device: Device,
        *,
        moniker: str,
        transport: Transport | None = None,
        radio: VirtualRadio | None = None,
        radio_address: str | None = None,
    ) -> None:
        self.device = device
        self.moniker = moniker
        self._transport = transport
        self._radio = radio
        self._radio_address = radio_address
        self._connect_lock = asyncio.Lock()
        self._scan_lock = asyncio.Lock()
        self._listeners: dict[object, tuple[AdvertisementListener, bool]] = {}
        self._scanning_active: bool | None = None
        self._address_types: dict[str, hci.Address] = {}
        self._closed = False
        self._transport_lost = False
        device.on(Device.EVENT_ADVERTISEMENT, guarded(self._on_advertisement, "advertisement"))

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        moniker: str,
        radio: VirtualRadio | None = None,
        *,
        name: str = "mcgw-hub",
        address: str | None = None,
    ) -> Self:
        """Open the transport named by ``moniker`` and power a central on it.

        ``address`` is the central's static random address (generated when omitted).
        Raises ``RadioError`` when the transport cannot be opened or the controller does not
        come up.
        """
        own_address = address or str(hci.Address.generate_static_address().to_string(False))
        transport: Transport | None = None
        if moniker == "virtual":
            if radio is None:
                raise RadioError('the "virtual" transport needs radio=VirtualRadio()')
            device = radio.attach(name, own_address)
        else:
            try:
                async with asyncio.timeout(OPEN_TIMEOUT_S):
                    transport = await open_transport(moniker)
            except (core.BaseBumbleError, OSError, TimeoutError) as exc:
                raise RadioError(
                    f"cannot open bumble transport {moniker!r}: {exc!s}; check the moniker "
                    "(tcp-client:HOST:PORT, usb:0, serial:/dev/ttyX) and that the far end is up"
                ) from exc
            device = Device.with_hci(
                name, hci.Address(own_address), transport.source, transport.sink
            )
        # Bonds live in memory for the process lifetime; persisting them is the gateway's call.
        device.keystore = MemoryKeyStore()
        adapter = cls(
            device,
            moniker=moniker,
            transport=transport,
            radio=radio if moniker == "virtual" else None,
            radio_address=own_address if moniker == "virtual" else None,
        )
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                await device.power_on()
        except (core.BaseBumbleError, OSError, TimeoutError) as exc:
            await adapter.close()
            raise RadioError(
                f"the controller behind {moniker!r} did not power on: {exc!s}"
            ) from exc
        terminated = getattr(transport.source, "terminated", None) if transport else None
        if isinstance(terminated, asyncio.Future):
            terminated.add_done_callback(
                guarded(adapter._on_transport_lost, "transport-lost handler")
            )
        logger.info("bumble adapter up on %s as %s", moniker, own_address)
        return adapter

    async def close(self) -> None:
        """Disconnect every link, stop scanning, power off and close the transport."""
        if self._closed:
            return
        self._closed = True
        self._listeners.clear()
        if self._transport_lost:
            # Nobody is listening at the other end: HCI commands would only time out.
            await self._release()
            return
        for connection in list(self.device.connections.values()):
            with contextlib.suppress(core.BaseBumbleError, TimeoutError):
                async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                    await connection.disconnect()
        if self.device.is_scanning:
            with contextlib.suppress(core.BaseBumbleError, TimeoutError):
                async with asyncio.timeout(HCI_COMMAND_TIMEOUT_S):
                    await self.device.stop_scanning()
        await self._release()

    async def _release(self) -> None:
        with contextlib.suppress(core.BaseBumbleError, TimeoutError):
            async with asyncio.timeout(HCI_COMMAND_TIMEOUT_S):
                await self.device.power_off()
        if self._radio is not None and self._radio_address is not None:
            self._radio.detach(self._radio_address)
        if self._transport is not None:
            await self._transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        """False once closed or once its transport is lost."""
        return not (self._closed or self._transport_lost)

    # -- scanning ----------------------------------------------------------------------------

    async def add_advertisement_listener(
        self, listener: AdvertisementListener, *, active: bool = True
    ) -> Callable[[], Awaitable[None]]:
        """Deliver every advertisement to ``listener`` until the returned callable is awaited.

        The controller scans while at least one listener is registered (actively if any
        listener asked for it).
        """
        self._check_open()
        token = object()
        self._listeners[token] = (guarded(listener, "advertisement listener"), active)
        try:
            await self._update_scanning()
        except BaseException:
            self._listeners.pop(token, None)
            raise

        async def remove() -> None:
            if self._listeners.pop(token, None) is not None and not self._closed:
                await self._update_scanning()

        return remove

    async def _update_scanning(self) -> None:
        async with self._scan_lock:
            wanted: bool | None = None
            if self._listeners:
                wanted = any(active for _, active in self._listeners.values())
            if wanted == self._scanning_active:
                return
            try:
                async with asyncio.timeout(HCI_COMMAND_TIMEOUT_S):
                    if self._scanning_active is not None:
                        await self.device.stop_scanning()
                        self._scanning_active = None
                    if wanted is not None:
                        # Duplicates are filtered per scanner, not by the controller: a
                        # controller-side filter would hide advertisement data changes.
                        await self.device.start_scanning(active=wanted, filter_duplicates=False)
                        self._scanning_active = wanted
            except (core.BaseBumbleError, TimeoutError) as exc:
                raise RadioError(f"cannot change scanning on {self.moniker}: {exc!s}") from exc

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        address = advertisement.address
        key = str(address.to_string(False))
        self._address_types.pop(key, None)
        self._address_types[key] = address
        if len(self._address_types) > _ADDRESS_CACHE_SIZE:
            del self._address_types[next(iter(self._address_types))]
        for listener, _ in list(self._listeners.values()):
            listener(advertisement)

    async def resolve_address(self, address: str, *, timeout_s: float) -> hci.Address:
        """The typed address (public/random) of a peer given as a string, scanning if needed.

        Raises ``TimeoutError`` if it is not heard within ``timeout_s`` seconds.
        """
        key = address.upper()
        if (known := self._address_types.get(key)) is not None:
            return known
        heard: asyncio.Future[hci.Address] = asyncio.get_running_loop().create_future()

        def on_advertisement(advertisement: Advertisement) -> None:
            if not heard.done() and advertisement.address.to_string(False) == key:
                heard.set_result(advertisement.address)

        remove = await self.add_advertisement_listener(on_advertisement, active=False)
        try:
            async with asyncio.timeout(timeout_s):
                return await heard
        finally:
            await remove()

    # -- connections -------------------------------------------------------------------------

    async def connect(
        self,
        address: hci.Address,
        *,
        timeout_s: float = CONNECT_TIMEOUT_S,
        on_disconnect: Callable[[int], None] | None = None,
    ) -> Connection:
        """Connect to ``address``; re-encrypt if bonded; exchange the ATT MTU.

        ``on_disconnect(reason)`` is registered (guarded) as soon as the link exists, so a loss
        during setup is not missed. Raises ``TimeoutError`` if the peer was not reached within
        ``timeout_s`` (the controller's create-connection is cancelled), ``LinkError`` otherwise.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with self._connect_lock:
            if self.device.find_connection_by_bd_addr(address, transport=core.PhysicalTransport.LE):
                raise LinkError(
                    f"already connected to {address}; disconnect the other client first"
                )
            remaining = max(deadline - loop.time(), 0.001)
            connection = await self._create_connection(address, remaining)
        if on_disconnect is not None:
            connection.on(
                connection.EVENT_DISCONNECTION, guarded(on_disconnect, "disconnect handler")
            )
        if not self.is_live(connection):
            # Lost between the Connection Complete and this task resuming: no event will come.
            raise LinkError(f"the link to {address} dropped while it was being set up")
        try:
            await self._secure_if_bonded(connection)
            await self._exchange_mtu(connection)
        except BaseException as exc:
            await self.disconnect(connection)
            if isinstance(exc, asyncio.CancelledError) and not _cancelled_by_peer():
                raise
            if isinstance(exc, core.BaseBumbleError | asyncio.CancelledError):
                raise LinkError(f"link to {address} failed during setup: {exc!s}") from exc
            raise
        return connection

    async def _create_connection(self, address: hci.Address, timeout_s: float) -> Connection:
        try:
            # bumble's own timeout sends LE_Create_Connection_Cancel (the radio makes that work);
            # the outer one is a safety net in case the controller never answers the cancel.
            async with asyncio.timeout(timeout_s + HCI_COMMAND_TIMEOUT_S):
                connection: Connection = await self.device.connect(
                    address, transport=core.PhysicalTransport.LE, timeout=timeout_s
                )
        except core.TimeoutError as exc:
            raise TimeoutError(
                f"{address} did not answer within {timeout_s:.1f} s; it may be out of range, "
                "powered off, or connected to another central"
            ) from exc
        except BaseException as exc:
            # Cancelled (caller or safety net) or refused: leave the controller with no pending
            # connect and no orphan link, or every later connect fails.
            await asyncio.shield(self._abort_connect(address))
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"connecting to {address} timed out") from exc
            if isinstance(exc, core.BaseBumbleError):
                raise LinkError(f"cannot connect to {address}: {exc!s}") from exc
            raise
        return connection

    async def _abort_connect(self, address: hci.Address) -> None:
        with contextlib.suppress(core.BaseBumbleError, TimeoutError):
            async with asyncio.timeout(HCI_COMMAND_TIMEOUT_S):
                await self.device.send_command(hci.HCI_LE_Create_Connection_Cancel_Command())
        stray = self.device.find_connection_by_bd_addr(address, transport=core.PhysicalTransport.LE)
        if stray is not None:
            await self.disconnect(stray)

    async def _exchange_mtu(self, connection: Connection) -> None:
        try:
            async with asyncio.timeout(MTU_EXCHANGE_TIMEOUT_S):
                await connection.gatt_client.request_mtu(ATT_MTU)
        except att.ATT_Error as exc:
            # A server may refuse the exchange; the link still works at the default MTU (23).
            logger.info("%s refused the ATT MTU exchange (%s)", connection.peer_address, exc)

    async def _secure_if_bonded(self, connection: Connection) -> None:
        keystore = self.device.keystore
        keys = await keystore.get(str(connection.peer_address)) if keystore else None
        if keys is None or (keys.ltk is None and keys.ltk_central is None):
            return
        try:
            async with asyncio.timeout(ENCRYPT_TIMEOUT_S):
                await connection.encrypt()
        except (core.BaseBumbleError, TimeoutError) as exc:
            # The peer may have dropped its bond; carry on unencrypted so the caller can pair
            # again rather than lose the link.
            logger.warning(
                "re-encrypting %s with stored keys failed (%s); link stays unencrypted",
                connection.peer_address,
                exc,
            )

    async def pair(self, connection: Connection, *, timeout_s: float) -> None:
        """Pair (and bond) on ``connection`` unless it is already encrypted with stored keys."""
        keystore = self.device.keystore
        if (
            connection.is_encrypted
            and keystore
            and await keystore.get(str(connection.peer_address))
        ):
            return
        try:
            async with asyncio.timeout(timeout_s):
                await connection.pair()
        except core.BaseBumbleError as exc:
            raise LinkError(f"pairing with {connection.peer_address} failed: {exc!s}") from exc

    async def forget(self, address: hci.Address) -> None:
        """Delete the stored bonding keys for ``address`` (no-op if there are none)."""
        keystore = self.device.keystore
        if keystore is not None:
            with contextlib.suppress(KeyError):
                await keystore.delete(str(address))

    def is_live(self, connection: Connection) -> bool:
        """True while ``connection`` is one of the device's current links."""
        return self.device.connections.get(connection.handle) is connection

    async def disconnect(self, connection: Connection) -> None:
        """Disconnect ``connection``; returns once the controller confirms or the link is gone."""
        if not self.is_live(connection):
            return
        with contextlib.suppress(core.BaseBumbleError, TimeoutError):
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await connection.disconnect()

    # -- internals ---------------------------------------------------------------------------

    def _on_transport_lost(self, _future: asyncio.Future[Any]) -> None:
        if not self._closed:
            self._transport_lost = True
            logger.error("HCI transport %s was lost; every link on it is down", self.moniker)

    def _check_open(self) -> None:
        if self._closed:
            raise RadioError(f"the bumble adapter on {self.moniker} is closed; open a new one")
        if self._transport_lost:
            raise RadioError(
                f"the HCI transport {self.moniker} was lost; close this adapter and open a new "
                "one once the controller (or mcgw sim) is back"
            )


def _cancelled_by_peer() -> bool:
    """True when bumble cancelled a pending request (link loss), not our own task."""
    task = asyncio.current_task()
    return task is None or task.cancelling() == 0
