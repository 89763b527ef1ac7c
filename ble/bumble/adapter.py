"""The hub's Bluetooth adapter: one bumble ``Device`` acting as LE central.

``BumbleAdapter.open(moniker)`` opens a bumble transport by moniker (``"virtual"`` with a
``VirtualRadio``, ``"tcp-client:HOST:PORT"`` for a ``mcgw sim`` process, ``"usb:0"``,
``"serial:/dev/ttyUSB0"``, any other bumble transport) and powers a central on it. The bleak
backend (ble/bumble/client.py, ble/bumble/scanner.py) drives every BLE operation through it.

What it adds over a bare bumble Device, each measured as necessary:
- one pending LE connect at a time (the controller refuses a second one), with the controller's
  create-connection cancelled when a connect times out or is abandoned;
- ATT MTU 247 requested after each connect (bumble does not exchange it by itself);
- bonding keys in an in-memory keystore, and re-encryption on reconnect to a bonded peer;
- advertisement fan-out to any number of scanners, scanning only while one is listening (its
  part in ble/bumble/scanning.py);
- every callback handed to bumble is guarded: an exception in a bumble event handler breaks its
  packet processing, so ours log and swallow instead;
- every bumble procedure (HCI command, ATT request, pairing) runs to its own end while only the
  wait for it is bounded (``bounded()``): bumble matches each answer to whatever is pending, so a
  procedure cancelled midway leaves its late answer to the next one, or to a future that is
  already cancelled (an ``InvalidStateError`` raised inside bumble's packet handler);
- loss of the transport is one event, whatever its cause (the far end closed it, an I/O error,
  or a controller that has not answered an HCI command for ``CONTROLLER_STALL_S``): every link
  on it drops, every waiter is released, and ``on_lost`` listeners hear it once (the radio
  supervisor, ble/supervisor.py, then opens a new adapter).

It deliberately does not: persist bonds across restarts, retry (bleak-retry-connector's job),
reopen its own transport (an adapter that lost it stays lost), or speak GATT (the client does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

from bumble import att, core, hci
from bumble.device import Connection, Device
from bumble.keys import KeyStore, MemoryKeyStore
from bumble.transport import open_transport
from bumble.transport.common import Transport

from ble.bumble.host import (
    HCI_COMMAND_TIMEOUT_S,
    TransportHost,
    cancelled_by_peer,
    cancels_requested,
    guarded,
    restore_swallowed_cancel,
)
from ble.bumble.radio import VirtualRadio
from ble.bumble.scanning import AdvertisementListener, Scanning
from ble.errors import BleError, LinkError, RadioError, describe, translate

__all__ = [
    "ATT_MTU",
    "CONTROLLER_STALL_S",
    "LE_CONNECT_TIMEOUT_S",
    "BumbleAdapter",
    "BumbleDeviceDetails",
    "LossListener",
]

log = logging.getLogger(__name__)

#: ATT MTU requested after every connect: the largest that fits one LE data PDU (251 - 4).
ATT_MTU = 247
#: Default budget for one LE connect when the caller gives none.
LE_CONNECT_TIMEOUT_S = 10.0
#: Opening a transport (TCP connect, USB open) and powering the controller on.
TRANSPORT_OPEN_TIMEOUT_S = 10.0
#: Re-encrypting a link with stored bonding keys; a peer that lost its keys fails fast.
ENCRYPT_TIMEOUT_S = 5.0
#: The ATT MTU exchange after connecting.
MTU_EXCHANGE_TIMEOUT_S = 5.0
#: Waiting for a Disconnection Complete after asking for a disconnect.
DISCONNECTION_COMPLETE_TIMEOUT_S = 5.0
#: An HCI command unanswered this long means the controller (or the process serving it) has
#: hung: the adapter declares its transport lost. Real controllers answer in milliseconds; a
#: ``mcgw sim`` stopped for a few seconds stays below it and resumes where it was.
CONTROLLER_STALL_S = 10.0

_T = TypeVar("_T")

#: Called once with the reason when the adapter's transport is lost.
LossListener = Callable[[str], None]


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
        self._closing = False
        self._closed = False
        self._failure: str | None = None
        self._loss_listeners: dict[object, LossListener] = {}
        self._procedures: set[asyncio.Future[Any]] = set()
        self._leaving: set[Connection] = set()
        """Links we asked to disconnect whose Disconnection Complete has not come yet."""
        self._scanning = Scanning(
            device,
            moniker=moniker,
            bounded=self.bounded,
            check_open=self._check_open,
            is_open=lambda: self.is_open,
        )
        if isinstance(device.host, TransportHost):
            device.host.on_lost = lambda what: self._fail(f"the HCI transport {moniker} {what}")
            device.command_timeout = CONTROLLER_STALL_S

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        moniker: str,
        radio: VirtualRadio | None = None,
        *,
        name: str = "mcgw-hub",
        address: str | None = None,
        keystore: KeyStore | None = None,
    ) -> Self:
        """Open the transport named by ``moniker`` and power a central on it.

        ``address`` is the central's static random address (generated when omitted) and
        ``keystore`` holds its bonds (a new in-memory one when omitted): pass the previous
        adapter's to reopen a lost transport as the same hub, with the same bonds.
        Raises ``RadioError`` when the transport cannot be opened or the controller does not
        come up.
        """
        own_address = address or str(hci.Address.generate_static_address().to_string(False))
        device, transport = await cls._attach(moniker, radio, name, own_address)
        # Bonds live in memory for the process lifetime; persisting them is the gateway's call.
        device.keystore = keystore or MemoryKeyStore()
        adapter = cls(
            device,
            moniker=moniker,
            transport=transport,
            radio=radio if moniker == "virtual" else None,
            radio_address=own_address if moniker == "virtual" else None,
        )
        await adapter._power_on()
        if adapter.failure is not None:
            await adapter.close()
            raise RadioError(f"{moniker!r} was lost while powering on: {adapter.failure}")
        terminated = getattr(transport.source, "terminated", None) if transport else None
        if isinstance(terminated, asyncio.Future):
            terminated.add_done_callback(
                guarded(adapter._on_transport_terminated, "transport-lost handler")
            )
        log.debug("bumble adapter up on %s as %s", moniker, own_address)
        return adapter

    @staticmethod
    async def _attach(
        moniker: str, radio: VirtualRadio | None, name: str, own_address: str
    ) -> tuple[Device, Transport | None]:
        """A bumble Device for the central: on the virtual radio, or on a transport opened
        from ``moniker``."""
        if moniker == "virtual":
            if radio is None:
                raise RadioError('the "virtual" transport needs radio=VirtualRadio()')
            return radio.attach(name, own_address), None
        try:
            async with asyncio.timeout(TRANSPORT_OPEN_TIMEOUT_S):
                transport = await open_transport(moniker)
        except (core.BaseBumbleError, OSError, TimeoutError) as exc:
            raise translate(
                exc,
                f"cannot open bumble transport {moniker!r}",
                into=RadioError,
                advice="; check the moniker (tcp-client:HOST:PORT, usb:0, serial:/dev/ttyX) "
                "and that the far end is up",
            ) from exc
        host = TransportHost(controller_source=transport.source, controller_sink=transport.sink)
        return Device(name=name, address=hci.Address(own_address), host=host), transport

    async def _power_on(self) -> None:
        """Power the controller on, or close everything and raise RadioError."""
        moniker = self.moniker
        cancels = cancels_requested()
        try:
            async with asyncio.timeout(TRANSPORT_OPEN_TIMEOUT_S):
                await self.device.power_on()
            restore_swallowed_cancel(cancels)
        except BaseException as exc:
            # Cancelled or failed half-way: never leave a transport open behind us.
            await self.close()
            if isinstance(exc, asyncio.CancelledError) and not cancelled_by_peer():
                raise
            # A CancelledError not ours: the transport went while a command was pending.
            if isinstance(
                exc, core.BaseBumbleError | OSError | TimeoutError | asyncio.CancelledError
            ):
                raise RadioError(
                    f"the controller behind {moniker!r} did not power on: "
                    f"{self.failure or describe(exc)}"
                ) from exc
            raise

    @property
    def address(self) -> str:
        """The central's own static random address."""
        return str(self.device.static_address.to_string(False))

    @property
    def keystore(self) -> KeyStore | None:
        """Where the central's bonds live (hand it to the adapter that replaces this one)."""
        keystore: KeyStore | None = self.device.keystore
        return keystore

    async def close(self) -> None:
        """Disconnect every link, stop scanning, power off and close the transport."""
        if self._closing:
            return
        self._closing = True
        self._scanning.clear()
        if self._failure is None:
            for connection in list(self.device.connections.values()):
                await self.disconnect(connection)
            if self.device.is_scanning:
                with contextlib.suppress(core.BaseBumbleError, BleError, TimeoutError):
                    await self.bounded(
                        self.device.stop_scanning(), HCI_COMMAND_TIMEOUT_S, "stopping the scan"
                    )
        # else nobody is listening at the other end: HCI commands would only time out.
        self._closed = True
        self._loss_listeners.clear()
        with contextlib.suppress(core.BaseBumbleError, TimeoutError):
            async with asyncio.timeout(HCI_COMMAND_TIMEOUT_S):
                await self.device.power_off()
        if self._radio is not None and self._radio_address is not None:
            self._radio.detach(self._radio_address)
        if self._transport is not None:
            await self._transport.close()
        # Whatever still waits on the closed transport would never get an answer now.
        for procedure in list(self._procedures):
            procedure.cancel()

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
        """False once closing or closed, or once its transport is lost."""
        return not (self._closing or self._failure is not None)

    @property
    def failure(self) -> str | None:
        """Why the transport was lost, or None while it works."""
        return self._failure

    def on_lost(self, listener: LossListener) -> Callable[[], None]:
        """Call ``listener(reason)`` once when the transport is lost; returns an unsubscribe.

        Called at once (on the next loop iteration) if it is lost already. The listener runs
        before the links on the transport are reported down, so it can mark the radio down
        first.
        """
        token = object()
        if self._failure is not None:
            asyncio.get_running_loop().call_soon(guarded(listener, "loss listener"), self._failure)
        else:
            self._loss_listeners[token] = guarded(listener, "loss listener")

        def unsubscribe() -> None:
            self._loss_listeners.pop(token, None)

        return unsubscribe

    # -- bounded procedures ------------------------------------------------------------------

    async def bounded(self, operation: Awaitable[_T], timeout_s: float, what: str) -> _T:
        """Await one bumble procedure for at most ``timeout_s`` without abandoning it midway.

        The procedure runs as its own task to its natural end (its answer, the link's loss or
        the transport's); only this wait is bounded, so no answer is ever taken by the next
        procedure. Raises ``TimeoutError`` when the wait runs out, ``RadioError`` when the
        transport was lost meanwhile, ``LinkError`` when bumble aborted the procedure because
        its link dropped, and the procedure's own exception otherwise. ``CancelledError`` only
        when the caller itself is cancelled.
        """
        procedure = asyncio.ensure_future(operation)
        self._procedures.add(procedure)
        procedure.add_done_callback(self._procedure_done)
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(procedure)
        except asyncio.CancelledError:
            if not procedure.cancelled() or not cancelled_by_peer():
                raise
            if self._failure is not None:
                raise RadioError(f"{what} failed: {self._failure}") from None
            raise LinkError(f"{what} aborted: the link dropped") from None
        except core.BaseBumbleError as exc:
            if self._failure is not None:  # e.g. the command that found the controller hung
                raise RadioError(f"{what} failed: {self._failure}") from exc
            raise

    def _procedure_done(self, procedure: asyncio.Future[Any]) -> None:
        self._procedures.discard(procedure)
        # Retrieve the outcome: a procedure nobody waits for any more must not end up as
        # "Task exception was never retrieved".
        if not procedure.cancelled() and (exc := procedure.exception()) is not None:
            log.debug("bumble procedure ended with %s", describe(exc))

    # -- scanning (ble/bumble/scanning.py) ---------------------------------------------------

    async def add_advertisement_listener(
        self, listener: AdvertisementListener, *, active: bool = True
    ) -> Callable[[], Awaitable[None]]:
        """Deliver every advertisement to ``listener`` until the returned callable is awaited.

        The controller scans while at least one listener is registered (actively if any
        listener asked for it).
        """
        self._check_open()
        return await self._scanning.add_listener(listener, active=active)

    async def resolve_address(self, address: str, *, timeout_s: float) -> hci.Address:
        """The typed address (public/random) of a peer given as a string, scanning if needed.

        Raises ``TimeoutError`` if it is not heard within ``timeout_s`` seconds.
        """
        return await self._scanning.resolve_address(address, timeout_s=timeout_s)

    # -- connections -------------------------------------------------------------------------

    async def connect(
        self,
        address: hci.Address,
        *,
        timeout_s: float = LE_CONNECT_TIMEOUT_S,
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
            existing = self.device.find_connection_by_bd_addr(
                address, transport=core.PhysicalTransport.LE
            )
            if existing is not None and existing in self._leaving:
                # Our own disconnect of an earlier link (abandoned, or dropped by its owner) is
                # still under way: a controller holds one link per peer, so wait for it to go.
                await self._departure(existing, max(deadline - loop.time(), 0.001))
            elif existing is not None:
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
            if isinstance(exc, asyncio.CancelledError) and not cancelled_by_peer():
                raise
            if isinstance(exc, core.BaseBumbleError | asyncio.CancelledError):
                raise translate(exc, f"link to {address} failed during setup") from exc
            raise
        return connection

    async def _create_connection(self, address: hci.Address, timeout_s: float) -> Connection:
        cancels = cancels_requested()
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
                raise translate(exc, f"cannot connect to {address}") from exc
            raise
        if cancels_requested() > cancels:
            # Leave no link behind a cancelled connect (see restore_swallowed_cancel).
            await asyncio.shield(self.disconnect(connection))
            restore_swallowed_cancel(cancels)
        return connection

    async def _abort_connect(self, address: hci.Address) -> None:
        if not self.is_open:
            return
        with contextlib.suppress(core.BaseBumbleError, BleError, TimeoutError):
            await self.bounded(
                self.device.send_command(hci.HCI_LE_Create_Connection_Cancel_Command()),
                HCI_COMMAND_TIMEOUT_S,
                "cancelling a connect",
            )
        stray = self.device.find_connection_by_bd_addr(address, transport=core.PhysicalTransport.LE)
        if stray is not None:
            await self.disconnect(stray)

    async def _exchange_mtu(self, connection: Connection) -> None:
        try:
            await self.bounded(
                connection.gatt_client.request_mtu(ATT_MTU),
                MTU_EXCHANGE_TIMEOUT_S,
                "the ATT MTU exchange",
            )
        except att.ATT_Error as exc:
            # A server may refuse the exchange; the link still works at the default MTU (23).
            log.info("%s refused the ATT MTU exchange (%s)", connection.peer_address, exc)

    async def _secure_if_bonded(self, connection: Connection) -> None:
        keystore = self.device.keystore
        keys = await keystore.get(str(connection.peer_address)) if keystore else None
        if keys is None or (keys.ltk is None and keys.ltk_central is None):
            return
        try:
            await self.bounded(connection.encrypt(), ENCRYPT_TIMEOUT_S, "re-encryption")
        except (core.BaseBumbleError, TimeoutError) as exc:
            # The peer may have dropped its bond; carry on unencrypted so the caller can pair
            # again rather than lose the link.
            log.warning(
                "re-encrypting %s with stored keys failed (%s): it may have lost its bond; "
                "the link stays unencrypted until it is paired again",
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
            await self.bounded(connection.pair(), timeout_s, "pairing")
        except core.BaseBumbleError as exc:
            raise translate(exc, f"pairing with {connection.peer_address} failed") from exc

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
        if not self.is_live(connection) or self._closed or self._failure is not None:
            return
        if connection not in self._leaving:
            self._leaving.add(connection)
            connection.once(
                connection.EVENT_DISCONNECTION, lambda _reason: self._leaving.discard(connection)
            )
        with contextlib.suppress(core.BaseBumbleError, BleError, TimeoutError):
            await self.bounded(
                connection.disconnect(), DISCONNECTION_COMPLETE_TIMEOUT_S, "disconnecting"
            )

    async def _departure(self, connection: Connection, timeout_s: float) -> None:
        """Wait until ``connection`` is gone; ``TimeoutError`` if it is still there after that."""
        gone = asyncio.Event()
        connection.once(connection.EVENT_DISCONNECTION, lambda _reason: gone.set())
        if not self.is_live(connection):
            return
        try:
            async with asyncio.timeout(timeout_s):
                await gone.wait()
        except TimeoutError as exc:
            raise TimeoutError(
                f"the previous link to {connection.peer_address} is still being taken down"
            ) from exc

    # -- internals ---------------------------------------------------------------------------

    def _on_transport_terminated(self, future: asyncio.Future[Any]) -> None:
        # Some transports end their source with an exception (I/O error): retrieve it, or
        # asyncio reports "Future exception was never retrieved" when it is collected.
        exc = None if future.cancelled() else future.exception()
        detail = f"failed: {describe(exc)}" if exc is not None else "closed"
        self._fail(f"the HCI transport {self.moniker} {detail}")

    def _fail(self, reason: str) -> None:
        """The transport is gone (or its controller hung): tell listeners, then drop every link.

        Logged at DEBUG only: whoever supervises the radio logs the loss once.
        """
        if self._failure is not None or self._closed:
            return
        self._failure = reason
        log.debug("%s; every link on it is down", reason)
        listeners = list(self._loss_listeners.values())
        self._loss_listeners.clear()
        for listener in listeners:
            listener(reason)
        host = self.device.host
        if isinstance(host, TransportHost):
            host.release_everything()

    def _check_open(self) -> None:
        if self._closing:
            raise RadioError(f"the bumble adapter on {self.moniker} is closed; open a new one")
        if self._failure is not None:
            raise RadioError(
                f"the HCI transport {self.moniker} was lost ({self._failure}); close this "
                "adapter and open a new one once the controller (or mcgw sim) is back"
            )
