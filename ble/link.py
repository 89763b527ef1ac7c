"""The link to one microcurrent device over bleak.

A :class:`DeviceLink` connects (with bleak-retry-connector's retries), bonds, subscribes to the
response, telemetry and status characteristics, reads the device limits, runs the version
handshake and then sends commands and matches each to its ACK or NACK by sequence number.
Malformed frames from the device are counted and dropped; they never raise into the caller.

It speaks only bleak's public API, so the same code runs on BlueZ and on the bumble backend;
which backend to use is the caller's choice (``client_backend``). It knows nothing of sessions,
programs or safety policy: the gateway installs a ``write_guard`` that sees the exact bytes of
every command before they go on air and may veto them (STOP is never vetoed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError
from bleak_retry_connector import establish_connection

from ble import protocol as p
from ble.errors import CommandRefused, LinkError, ProtocolError, translate

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 3
SETUP_STEP_TIMEOUT_S = 2.0
"""The link's bound on one step of its setup: a subscription or the limits read."""
BOND_TIMEOUT_S = 2 * SETUP_STEP_TIMEOUT_S
"""The link's bound on bonding during setup (the backend may allow its pairing longer)."""
ACK_TIMEOUT_S = 1.0
"""How long a command waits for the device's ACK/NACK indication."""
STOP_CONFIRM_TIMEOUT_S = 1.0
"""S3: a STOP not confirmed within this time makes the link drop (the device stops on loss)."""
DISCONNECT_TIMEOUT_S = 2.0
"""How long ``close()`` waits for the backend's disconnect before letting the link go."""

TelemetryCallback = Callable[[p.Telemetry], None]
StatusCallback = Callable[[p.DeviceStatus], None]
WriteGuard = Callable[[p.Command, bytes], None]


@dataclass(slots=True)
class LinkCounters:
    """What crossed the link; exported as metrics by the gateway."""

    commands_sent: int = 0
    nacks: int = 0
    ack_timeouts: int = 0
    telemetry_frames: int = 0
    malformed_frames: int = 0


class DeviceLink:
    """One connection to one device. Create, ``await connect()``, send commands, ``close()``."""

    def __init__(
        self,
        device: BLEDevice,
        *,
        client_backend: type[BaseBleakClient] | None = None,
        on_telemetry: TelemetryCallback | None = None,
        on_status: StatusCallback | None = None,
        on_disconnect: Callable[[], None] | None = None,
        write_guard: WriteGuard | None = None,
        pair: bool = True,
    ) -> None:
        self.device = device
        self.counters = LinkCounters()
        self.limits: p.DeviceLimits | None = None
        self.last_status: p.DeviceStatus | None = None
        self._backend = client_backend
        self._on_telemetry = on_telemetry
        self._on_status = on_status
        self._on_disconnect = on_disconnect
        self.write_guard = write_guard
        self._pair = pair
        self._client: BleakClient | None = None
        self._seq = 0
        self._pending: dict[int, asyncio.Future[p.Response]] = {}
        self._closing = False
        self.telemetry_hz: int | None = None
        """The telemetry rate the device last acknowledged (None before the handshake)."""

    @property
    def address(self) -> str:
        return self.device.address

    @property
    def is_connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    @property
    def mtu(self) -> int | None:
        """The link's ATT MTU while connected (None otherwise); no I/O."""
        client = self._client
        if client is None or not client.is_connected:
            return None
        try:
            return int(client.mtu_size)
        except Exception:  # a backend that cannot tell without I/O  # noqa: BLE001
            return None

    async def connect(self, *, telemetry_hz: int = 50, samples_per_notification: int = 1) -> None:
        """Connect, bond, subscribe, read limits and handshake. Raises LinkError on failure."""
        try:
            # bleak-retry-connector hands extra keyword arguments to BleakClient, so the
            # backend (None: bleak's own for this platform) rides along.
            client = await establish_connection(
                BleakClient,
                self.device,
                self.device.name or self.device.address,
                disconnected_callback=self._handle_disconnect,
                max_attempts=CONNECT_ATTEMPTS,
                use_services_cache=False,
                backend=self._backend,
            )
        except (BleakError, TimeoutError) as exc:
            raise translate(
                exc,
                f"could not connect to {self.address}",
                advice=". Is the device on, in range and not connected to another hub?",
            ) from exc
        self._client = client
        self._closing = False
        try:
            await self._setup(client, telemetry_hz, samples_per_notification)
        except BaseException:
            await self.close()
            raise

    async def _setup(self, client: BleakClient, telemetry_hz: int, per_notification: int) -> None:
        try:
            if self._pair:
                async with asyncio.timeout(BOND_TIMEOUT_S):
                    await client.pair()
            async with asyncio.timeout(SETUP_STEP_TIMEOUT_S):
                await client.start_notify(p.RESPONSE_UUID, self._handle_response)
            async with asyncio.timeout(SETUP_STEP_TIMEOUT_S):
                await client.start_notify(p.TELEMETRY_UUID, self._handle_telemetry)
            async with asyncio.timeout(SETUP_STEP_TIMEOUT_S):
                await client.start_notify(p.STATUS_UUID, self._handle_status)
            async with asyncio.timeout(SETUP_STEP_TIMEOUT_S):
                raw_limits = await client.read_gatt_char(p.LIMITS_UUID)
        except (BleakError, TimeoutError) as exc:
            raise translate(exc, f"setting up {self.address} failed") from exc
        try:
            self.limits = p.DeviceLimits.from_bytes(bytes(raw_limits))
        except ProtocolError as exc:
            raise LinkError(f"{self.address} reported unreadable limits: {exc}") from exc
        if self.limits.protocol_version != p.PROTOCOL_VERSION:
            raise LinkError(
                f"{self.address} speaks protocol v{self.limits.protocol_version}; this gateway "
                f"speaks v{p.PROTOCOL_VERSION}. Update the gateway or the device firmware."
            )
        await self.send(p.Hello())
        await self.set_telemetry_rate(telemetry_hz, per_notification)

    async def set_telemetry_rate(self, hz: int, per_notification: int = 1) -> int:
        """SET_TELEMETRY_RATE (capped at the device's ``telemetry_max_hz``); the rate set."""
        if self.limits is not None:
            hz = min(hz, self.limits.telemetry_max_hz)
        await self.send(p.SetTelemetryRate(rate_hz=hz, samples_per_notification=per_notification))
        self.telemetry_hz = hz
        return hz

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    async def send(self, command: p.Command, *, timeout_s: float = ACK_TIMEOUT_S) -> p.Response:
        """Write one command and wait for its ACK. Raises CommandRefused on a NACK.

        The link stamps its next sequence number on the command (whatever ``seq`` it was built
        with), so the ACK is matched to this write and callers never count sequence numbers.
        """
        client = self._client
        if client is None or not client.is_connected:
            raise LinkError(f"{self.address} is not connected")
        command = dataclasses.replace(command, seq=self._next_seq())
        data = bytes(command)
        if self.write_guard is not None and not isinstance(command, p.Stop):
            self.write_guard(command, data)
        future: asyncio.Future[p.Response] = asyncio.get_running_loop().create_future()
        self._pending[command.seq] = future
        try:
            async with asyncio.timeout(timeout_s):
                await client.write_gatt_char(p.CONTROL_POINT_UUID, data, response=True)
                self.counters.commands_sent += 1
                response = await future
        except TimeoutError as exc:
            self.counters.ack_timeouts += 1
            raise LinkError(
                f"{self.address} did not acknowledge {command.OPCODE.name} within {timeout_s} s"
            ) from exc
        except BleakError as exc:
            raise translate(exc, f"writing {command.OPCODE.name} to {self.address} failed") from exc
        finally:
            _settle(self._pending.pop(command.seq, future))
        if not response.ok:
            self.counters.nacks += 1
            raise CommandRefused(command.OPCODE.name, response.status.name)
        return response

    async def stop(self) -> None:
        """S3: send STOP; if it is not confirmed within a second, drop the link."""
        try:
            await self.send(p.Stop(), timeout_s=STOP_CONFIRM_TIMEOUT_S)
        except LinkError:
            log.warning("STOP to %s not confirmed; dropping the link", self.address)
            await self.close()
            # close() silences the disconnect callback (it is for links that drop by
            # themselves); this drop was not asked for by the owner, so tell it.
            self._report_lost()
            raise

    async def close(self) -> None:
        """Disconnect; the device turns its output off when the link goes."""
        self._closing = True
        client, self._client = self._client, None
        self._fail_pending(LinkError(f"{self.address}: link closed"))
        if client is not None:
            with contextlib.suppress(BleakError, TimeoutError):
                async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                    await client.disconnect()

    def _fail_pending(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    # Callbacks run inside the BLE stack's packet processing: they must never raise.

    def _handle_disconnect(self, _client: BleakClient) -> None:
        self._fail_pending(LinkError(f"{self.address}: link lost"))
        if not self._closing:
            self._report_lost()

    def _report_lost(self) -> None:
        if self._on_disconnect is not None:
            try:
                self._on_disconnect()
            except Exception:
                log.exception("disconnect handler for %s failed", self.address)

    def _handle_response(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        try:
            response = p.Response.from_bytes(bytes(data))
        except ProtocolError as exc:
            self.counters.malformed_frames += 1
            log.debug("dropped malformed response from %s: %s", self.address, exc)
            return
        future = self._pending.get(response.seq)
        if future is not None and not future.done():
            future.set_result(response)

    def _handle_telemetry(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        try:
            telemetry = p.Telemetry.from_bytes(bytes(data))
        except ProtocolError as exc:
            self.counters.malformed_frames += 1
            log.debug("dropped malformed telemetry from %s: %s", self.address, exc)
            return
        self.counters.telemetry_frames += len(telemetry.samples)
        if self._on_telemetry is not None:
            try:
                self._on_telemetry(telemetry)
            except Exception:
                log.exception("telemetry handler for %s failed", self.address)

    def _handle_status(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        try:
            status = p.DeviceStatus.from_bytes(bytes(data))
        except ProtocolError as exc:
            self.counters.malformed_frames += 1
            log.debug("dropped malformed status from %s: %s", self.address, exc)
            return
        self.last_status = status
        if self._on_status is not None:
            try:
                self._on_status(status)
            except Exception:
                log.exception("status handler for %s failed", self.address)


def _settle(future: asyncio.Future[p.Response]) -> None:
    """Mark a command's ACK future as dealt with once its ``send`` has finished.

    A link lost while the write itself is in flight fails the future (``_fail_pending``) and
    the write, and ``send`` raises the write's error: the future's own exception is then never
    retrieved, which asyncio reports when the future is collected.
    """
    if not future.done():
        future.cancel()
    elif not future.cancelled():
        future.exception()
