"""An in-process software BLE radio built on bumble's ``LocalLink``.

``VirtualRadio`` owns one shared link. ``attach()`` puts a new software controller on it and
returns a bumble ``Device`` (a full host: GAP, ATT/GATT, SMP) wired to that controller, not yet
powered on. Simulated peripherals (ble/sim/), the hub's central (ble/bumble/adapter.py) and the
HCI-over-TCP server (ble/bumble/hci_server.py) all meet on this link.

Fault injection for tests and simulations: ``drop_links()`` (supervision timeout on both ends),
``vanish()`` / ``reappear()`` (the controller moves to an isolated link and back).

Signal and deafness per listening controller, so several centrals on one air (the HCI clients
of ``mcgw sim``) hear the same devices differently: ``set_signal(device, radio, rssi)`` is the
RSSI the controller at ``radio`` reports for ``device``'s adverts (``DEFAULT_RSSI`` for a pair
never set), and ``set_deaf(radio, True)`` makes that controller hear no adverts at all, so it
can open no new connection either (a central connects on an advert it hears); links it holds
stay up. Both are keyed by the controller's address, so they outlive a reconnecting host.

It deliberately does not: power devices on or off (their owners do), simulate RF beyond that
(no fading, no distance model; scan/connection intervals are ignored, scan responses are not
sent separately), or cross process boundaries (that is ble/bumble/hci_server.py's job).
"""

from __future__ import annotations

import asyncio
import logging

from bumble import hci, ll
from bumble.controller import Connection as LinkConnection
from bumble.controller import Controller
from bumble.core import PhysicalTransport
from bumble.device import Device
from bumble.link import LocalLink

from ble.errors import RadioError

__all__ = ["DEFAULT_RSSI", "SUPERVISION_TIMEOUT", "VirtualController", "VirtualRadio"]

log = logging.getLogger(__name__)

#: HCI reason "Connection Timeout", what a real controller reports when a peer goes out of range.
SUPERVISION_TIMEOUT = hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR
#: The RSSI bumble's software controller reports for every advert; kept for pairs never set.
DEFAULT_RSSI = -50
_REPORTS = (hci.HCI_LE_Advertising_Report_Event, hci.HCI_LE_Extended_Advertising_Report_Event)


class VirtualController(Controller):
    """bumble's software controller with a working ``LE_Create_Connection_Cancel``.

    The stock handler is a stub: it answers success but leaves the pending connection in place
    and never reports the cancellation, so the host's connect-timeout path hangs and every later
    connect fails with COMMAND_DISALLOWED.

    ``air`` (the ``VirtualRadio``, when it made this controller) decides what it hears: whether
    it is deaf and the RSSI of each advert it reports.
    """

    air: VirtualRadio | None = None

    @property
    def own_address(self) -> str:
        """The address its host gave it (random if set, else public), as ``C0:11:...``."""
        random_address = self.random_address
        if random_address is not None and random_address != hci.Address.ANY:
            return _key(random_address)
        return _key(self.public_address)

    def on_advertising_pdu(self, pdu: ll.AdvInd | ll.AdvExtInd) -> None:
        if self.air is not None and self.air.is_deaf(self):
            return  # hears nothing: no report, and no connection made on the advert
        super().on_advertising_pdu(pdu)

    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if self.air is not None and isinstance(packet, _REPORTS):
            for report in packet.reports:
                report.rssi = self.air.rssi(report.address, self)
        super().send_hci_packet(packet)

    def on_hci_le_create_connection_cancel_command(
        self, _command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        pending = self.pending_le_connection
        if pending is None:
            # Vol 4, Part E, 7.8.13: cancel without a pending create is disallowed.
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        # The spec orders Command Complete (sent by our caller after we return) before the
        # LE Connection Complete carrying UNKNOWN_CONNECTION_IDENTIFIER. send_hci_packet
        # itself defers with call_soon, so deferring once more keeps that order.
        asyncio.get_running_loop().call_soon(self._report_connect_cancelled, pending.peer_address)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def _report_connect_cancelled(self, peer_address: hci.Address) -> None:
        self.send_hci_packet(
            hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=peer_address.address_type,
                peer_address=peer_address,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            )
        )

    def create_le_connection(self, peer_address: hci.Address) -> None:
        # The stock controller connects on any advertising PDU from the peer, including one
        # still in flight (queued with call_soon) after the advertiser left the link, and then
        # reports a connection the peer never saw. Only connect to an advertiser that is on
        # our link right now.
        if not self._connectable_on_link(peer_address):
            log.debug("%s: ignoring stale advertisement from %s", self.name, peer_address)
            return
        super().create_le_connection(peer_address)

    def _connectable_on_link(self, address: hci.Address) -> bool:
        for other in self.link.controllers:
            if other is self:
                continue
            legacy = other.le_legacy_advertiser
            if legacy.enabled and legacy.address == address:
                return True
            for advertising_set in other.advertising_sets.values():
                if advertising_set.enabled and advertising_set.address == address:
                    return True
        return False

    # A link that has just gone down still has data in flight in both directions (the host
    # has not yet processed the Disconnection Complete; the peer had queued notifications).
    # A real controller drops such data silently; the stock one logs a warning per packet,
    # which after a stalled process (SIGSTOP, a long GC pause) is a burst of dozens.

    def on_hci_acl_data_packet(self, packet: hci.HCI_AclDataPacket) -> None:
        if self.find_connection_by_handle(packet.connection_handle) is None:
            log.debug(
                "%s: dropped host data for gone link 0x%04X", self.name, packet.connection_handle
            )
            return
        super().on_hci_acl_data_packet(packet)

    def on_link_acl_data(
        self, sender_address: hci.Address, transport: PhysicalTransport, data: bytes
    ) -> None:
        connections = (
            self.le_connections if transport == PhysicalTransport.LE else self.classic_connections
        )
        if sender_address not in connections:
            log.debug("%s: dropped air data from %s (no link)", self.name, sender_address)
            return
        super().on_link_acl_data(sender_address, transport, data)

    def move_to(self, link: LocalLink) -> None:
        """Leave the current link and join ``link``."""
        if self.link is link:
            return
        self.link.remove_controller(self)
        self.link = link
        link.add_controller(self)

    def drop_le_connections(self, peers: list[VirtualController], reason: int) -> int:
        """Report every LE connection of this controller as lost, on both ends.

        ``peers`` are the controllers that may hold the other end. Returns the number dropped.
        """
        dropped = 0
        for connection in list(self.le_connections.values()):
            for peer in peers:
                if peer is self:
                    continue
                other: LinkConnection | None = peer.le_connections.get(connection.self_address)
                if other is not None and other.self_address == connection.peer_address:
                    peer.on_le_disconnected(other, reason)
                    break
            self.on_le_disconnected(connection, reason)
            dropped += 1
        return dropped

    def stop_radio_activity(self) -> None:
        """Stop advertising and any pending connect; used on teardown."""
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        self.pending_le_connection = None


def _key(address: str | hci.Address) -> str:
    try:
        parsed = address if isinstance(address, hci.Address) else hci.Address(address)
    except (ValueError, TypeError) as exc:
        raise RadioError(f"{address!r} is not a Bluetooth address (use 'C0:11:22:33:44:55')") from (
            exc
        )
    return str(parsed.to_string(False))


class VirtualRadio:
    """One shared software link and the controllers attached to it.

    Create it inside a running event loop (bumble's controllers capture the loop).
    """

    def __init__(self) -> None:
        asyncio.get_running_loop()  # fail fast, with Python's own message, outside a loop
        self.link = LocalLink()  # type: ignore[no-untyped-call]
        self._controllers: dict[str, VirtualController] = {}
        self._isolated: dict[str, LocalLink] = {}
        self._anonymous: list[VirtualController] = []
        self._signal: dict[tuple[str, str], int] = {}
        self._deaf: set[str] = set()
        self._closed = False

    # -- what each listening controller hears -------------------------------------------------

    @property
    def listeners(self) -> list[VirtualController]:
        """The controllers of external hosts (HCI clients), in the order they joined."""
        return list(self._anonymous)

    def set_signal(self, device: str, radio: str, rssi: int) -> None:
        """The RSSI the controller at ``radio`` reports for adverts of ``device``."""
        self._signal[(_key(device), _key(radio))] = int(rssi)

    def set_deaf(self, radio: str, deaf: bool) -> None:
        """Make the controller at ``radio`` hear no adverts (``deaf``), or hear again."""
        if deaf:
            self._deaf.add(_key(radio))
        else:
            self._deaf.discard(_key(radio))

    def is_deaf(self, controller: VirtualController) -> bool:
        return bool(self._deaf) and controller.own_address in self._deaf

    def rssi(self, device: hci.Address, controller: VirtualController) -> int:
        if not self._signal:
            return DEFAULT_RSSI
        return self._signal.get((_key(device), controller.own_address), DEFAULT_RSSI)

    # -- controllers -------------------------------------------------------------------------

    def attach(self, name: str, address: str) -> Device:
        """Create a controller on the link; return a bumble Device wired to it (not powered on).

        ``address`` becomes the device's static random address and identifies it for
        ``drop_links``/``vanish``/``reappear``.
        """
        self._check_open()
        key = _key(address)
        if key in self._controllers:
            raise RadioError(f"address {key} is already attached to this radio; pick another one")
        controller = VirtualController(name, link=self.link)
        self._controllers[key] = controller
        device = Device.with_hci(name, hci.Address(key), controller, controller)
        log.debug("attached %s at %s", name, key)
        return device

    def detach(self, address: str) -> None:
        """Take the device at ``address`` off the radio for good; its links drop (0x16).

        No-op if nothing is attached there (or the radio is closed).
        """
        if self._closed:
            return
        controller = self._controllers.get(_key(address))
        if controller is not None:
            self.remove_controller(
                controller, hci.HCI_ErrorCode.CONNECTION_TERMINATED_BY_LOCAL_HOST_ERROR
            )

    def add_controller(self, name: str) -> VirtualController:
        """Create a controller with no host, for an external host (see ble/bumble/hci_server.py).

        Its address is whatever the external host sets; tear it down with ``remove_controller``.
        """
        self._check_open()
        controller = VirtualController(name, link=self.link)
        controller.air = self
        self._anonymous.append(controller)
        return controller

    def remove_controller(
        self, controller: VirtualController, reason: int = SUPERVISION_TIMEOUT
    ) -> None:
        """Drop the controller's connections (peers see ``reason``) and take it off the link."""
        controller.stop_radio_activity()
        controller.drop_le_connections(self._all_controllers(), reason)
        controller.host = None
        if controller in controller.link.controllers:
            controller.link.remove_controller(controller)
        if controller in self._anonymous:
            self._anonymous.remove(controller)
        for key, known in list(self._controllers.items()):
            if known is controller:
                del self._controllers[key]
                self._isolated.pop(key, None)

    # -- fault injection ---------------------------------------------------------------------

    def drop_links(self, address: str, reason: int = SUPERVISION_TIMEOUT) -> int:
        """Force every LE connection of the device at ``address`` down on both ends.

        Both hosts get a Disconnection Complete with ``reason`` (default: supervision timeout).
        Returns how many connections were dropped.
        """
        controller = self._find(address)
        dropped = controller.drop_le_connections(self._all_controllers(), reason)
        log.debug("dropped %d link(s) of %s (reason 0x%02X)", dropped, address, reason)
        return dropped

    def vanish(self, address: str) -> None:
        """Take the device out of range: its links drop and it moves to an isolated link.

        It keeps advertising there, but nobody on the shared link hears it or can connect.
        """
        controller = self._find(address)
        key = _key(address)
        if key in self._isolated:
            return
        controller.drop_le_connections(self._all_controllers(), SUPERVISION_TIMEOUT)
        isolated = LocalLink()  # type: ignore[no-untyped-call]
        self._isolated[key] = isolated
        controller.move_to(isolated)

    def reappear(self, address: str) -> None:
        """Bring a vanished device back onto the shared link."""
        controller = self._find(address)
        if self._isolated.pop(_key(address), None) is not None:
            controller.move_to(self.link)

    # -- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop all radio activity and drop every connection; devices are their owners' to close."""
        if self._closed:
            return
        self._closed = True
        everyone = self._all_controllers()
        for controller in everyone:
            controller.stop_radio_activity()
        for controller in everyone:
            controller.drop_le_connections(
                everyone, hci.HCI_ErrorCode.CONNECTION_TERMINATED_BY_LOCAL_HOST_ERROR
            )
        # Let the Disconnection Complete events queued with call_soon reach the hosts.
        await asyncio.sleep(0)
        for controller in everyone:
            if controller in controller.link.controllers:
                controller.link.remove_controller(controller)
        self._controllers.clear()
        self._anonymous.clear()
        self._isolated.clear()

    # -- internals ---------------------------------------------------------------------------

    def _all_controllers(self) -> list[VirtualController]:
        return [*self._controllers.values(), *self._anonymous]

    def _find(self, address: str) -> VirtualController:
        self._check_open()
        key = _key(address)
        controller = self._controllers.get(key)
        if controller is None:
            for candidate in self._anonymous:
                if key in {_key(candidate.random_address), _key(candidate.public_address)}:
                    return candidate
            raise RadioError(f"no device at {key} is attached to this radio")
        return controller

    def _check_open(self) -> None:
        if self._closed:
            raise RadioError("this VirtualRadio is closed; create a new one")
