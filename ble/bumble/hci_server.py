"""HCI over TCP onto a ``VirtualRadio``: how another process joins the in-process radio.

Each TCP client is a bumble host (``tcp-client:HOST:PORT``, e.g. ``BumbleAdapter.open`` in the
gateway) and gets its OWN software controller on the radio's shared link, so it sees the
radio's simulated peripherals as ordinary BLE peripherals. When a client goes away (closed,
killed, network gone) its controller leaves the link and each of its connections is reported
to the peer as a supervision timeout, exactly as if the central had walked out of range.

Why not bumble's ``tcp-server`` transport: it drives a single controller for every client, and
its HCI_Reset does nothing, so a client that dies leaves stale connections behind.

``radios()`` lists the connected clients' controllers (their address as the client set it, deaf
or not, links held) and ``drop(address)`` cuts that client's TCP connection as if its dongle
had been pulled: the client sees its transport closed, its peers a supervision timeout. The
sim's control endpoint serves both (ble/sim/control.py).

The wire format is bumble's H4 stream (packet-type byte + HCI packet), both directions.
It deliberately does not: authenticate clients (bind to 127.0.0.1 unless the network is
trusted), or relay anything but HCI.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import cast

from bumble import core
from bumble.transport.common import PacketParser

from ble.bumble.radio import SUPERVISION_TIMEOUT, VirtualController, VirtualRadio
from ble.errors import RadioError

__all__ = ["HciTcpServer"]

log = logging.getLogger(__name__)


class _HciSession(asyncio.Protocol):
    """One TCP client and the controller it drives."""

    def __init__(self, server: HciTcpServer, name: str) -> None:
        self._server = server
        self.name = name
        self._name = name
        self._transport: asyncio.Transport | None = None
        self._controller: VirtualController | None = None
        self._parser = PacketParser(_ToController(self))

    # asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        try:
            self._controller = self._server.radio.add_controller(self._name)
        except RadioError:
            log.warning("%s: the radio is closed; refusing the HCI client", self._name)
            self._transport.close()
            return
        # The controller sends HCI to whatever its host is: this session.
        self._controller.host = self
        self._server.sessions.add(self)
        log.info("%s: HCI client connected from %s", self._name, _peer(transport))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except core.InvalidPacketError:
            # The stream is out of sync and cannot be resynchronised: drop the client.
            log.warning("%s: malformed HCI stream; closing the connection", self._name)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.sessions.discard(self)
        controller, self._controller = self._controller, None
        if controller is not None:
            # Peers see a supervision timeout, as with a central that went out of range.
            self._server.radio.remove_controller(controller, SUPERVISION_TIMEOUT)
        self._transport = None
        log.info("%s: HCI client gone (%s); its links are down", self._name, exc or "closed")

    # controller -> host ----------------------------------------------------------------------

    def on_packet(self, packet: bytes) -> None:
        """The controller's host sink: forward its HCI packet to the TCP client."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(packet)

    # host -> controller ----------------------------------------------------------------------

    def to_controller(self, packet: bytes) -> None:
        controller = self._controller
        if controller is None:
            return
        try:
            controller.on_packet(packet)
        except Exception:
            # A packet the software controller chokes on must not kill the session (nor the
            # parser mid-stream); log it and carry on like a real controller ignoring junk.
            log.exception("%s: controller failed on an HCI packet; ignored", self._name)

    @property
    def controller(self) -> VirtualController | None:
        return self._controller

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _ToController:
    """Parser sink: each complete HCI packet from the TCP client goes to the controller."""

    def __init__(self, session: _HciSession) -> None:
        self._session = session

    def on_packet(self, packet: bytes) -> None:
        self._session.to_controller(packet)


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


class HciTcpServer:
    """TCP server handing each client its own controller on ``radio``."""

    def __init__(self, radio: VirtualRadio, host: str = "127.0.0.1", port: int = 0) -> None:
        self.radio = radio
        self.host = host
        self.port = port
        self.sessions: set[_HciSession] = set()
        self._server: asyncio.Server | None = None
        self._counter = itertools.count(1)

    async def start(self) -> None:
        """Start listening; the bound port is then in ``self.port``."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _HciSession(self, f"hci-tcp-{next(self._counter)}"),
                self.host,
                self.port,
            )
        except OSError as exc:
            raise RadioError(
                f"cannot listen for HCI on {self.host}:{self.port}: {exc.strerror}; "
                "pick another port or stop the process holding it"
            ) from exc
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("HCI over TCP listening on %s:%d", self.host, self.port)

    def radios(self) -> list[dict[str, object]]:
        """One entry per connected client: ``{"address", "deaf", "connections"}``."""
        return [
            {
                "address": controller.own_address,
                "deaf": self.radio.is_deaf(controller),
                "connections": len(controller.le_connections),
            }
            for controller in self.radio.listeners
            if any(session.controller is controller for session in self.sessions)
        ]

    def drop(self, address: str) -> None:
        """Cut the TCP connection of the client whose controller has ``address`` (any case).
        RadioError if no connected client has it."""
        wanted = address.upper()
        for session in list(self.sessions):
            controller = session.controller
            if controller is not None and controller.own_address == wanted:
                log.info("%s: dropping the HCI client at %s", session.name, wanted)
                session.close()
                return
        known = ", ".join(str(radio["address"]) for radio in self.radios()) or "none"
        raise RadioError(f"no HCI client with controller address {address}; connected: {known}")

    async def close(self) -> None:
        """Stop accepting, drop every client (their links go down) and wait for the server."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for session in list(self.sessions):
            session.close()
        await server.wait_closed()
        # Transport.close() reports connection_lost on the next loop iteration.
        await asyncio.sleep(0)

    async def __aenter__(self) -> HciTcpServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
