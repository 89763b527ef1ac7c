"""The simulated device's way out: notifications and indications, with radio impairments.

:class:`Transmitter` queues what the firmware sends (ACK/NACK indications, telemetry and status
notifications, battery level) and sends it in order from one owned task, applying the radio
impairments the scenario API asks for:

- latency: each frame leaves ``latency_s`` after it was queued;
- stall: nothing leaves until the stall ends (control-point writes wait for it too, see
  :meth:`Transmitter.wait_while_stalled`), then everything held goes out in order;
- garbling: the next ``garble_left`` notifications are corrupted (truncated, or a wrong version
  byte) so that every one of them fails to decode.

A notification that does not fit the link's ATT MTU is dropped and counted in ``too_big``, never
truncated (bumble would truncate it silently). The firmware refuses a telemetry setting that
does not fit, so this only happens to the default one-sample frames (25 bytes) before the
gateway has exchanged the MTU. Frames queued for a link that has since dropped are discarded,
never sent on the next link.

It deliberately does not produce frames (the firmware does) or decide timing beyond the
impairments.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from dataclasses import dataclass

from bumble.device import Connection, Device

from ble.sim.profile import Profile

log = logging.getLogger(__name__)

INDICATION_TIMEOUT_S = 2.0
"""How long an ACK/NACK indication may wait for its confirmation before it is given up."""
_ATT_NOTIFY_OVERHEAD = 3


class Outbound(enum.Enum):
    RESPONSE = "response"
    TELEMETRY = "telemetry"
    STATUS = "status"
    BATTERY = "battery"


@dataclass(slots=True)
class TransmitterCounters:
    """What went out (or did not), for tests and the health view."""

    notifications: int = 0
    indications: int = 0
    garbled: int = 0
    dropped: int = 0
    too_big: int = 0


@dataclass(frozen=True, slots=True)
class _Frame:
    due: float
    epoch: int
    kind: Outbound
    payload: bytes


class Transmitter:
    """Ordered, impaired sending of one device's notifications and indications."""

    def __init__(self, device: Device, profile: Profile, seed: int) -> None:
        self._device = device
        self._profile = profile
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_Frame] = asyncio.Queue()
        # Its own generator, so garbling does not shift the firmware's noise sequence.
        self._rng = random.Random(seed ^ 0x5EED)  # noqa: S311 - reproducible, not secret
        self._epoch = 0
        self._stalled_until = 0.0
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._stall_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._indications: set[asyncio.Task[None]] = set()
        self.connection: Connection | None = None
        self.latency_s = 0.0
        self.garble_left = 0
        self.counters = TransmitterCounters()

    # -- producers -----------------------------------------------------------------------------

    def send(self, kind: Outbound, frame: bytes) -> None:
        """Queue ``frame`` for the present link; without a link it is dropped."""
        connection = self.connection
        if connection is None:
            self.counters.dropped += 1
            return
        if len(frame) > connection.att_mtu - _ATT_NOTIFY_OVERHEAD:
            # Normal for the few samples taken between connecting and the MTU exchange; a
            # gateway that never exchanges the MTU sees no telemetry (and this counter grow).
            self.counters.too_big += 1
            return
        due = self._loop.time() + self.latency_s
        self._queue.put_nowait(_Frame(due, self._epoch, kind, frame))

    def stall(self, seconds: float) -> None:
        """Hold everything until ``seconds`` from now (a running stall is only ever extended)."""
        until = max(self._stalled_until, self._loop.time() + max(0.0, seconds))
        self._stalled_until = until
        self._unstalled.clear()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        self._stall_timer = self._loop.call_at(until, self._unstalled.set)

    async def wait_while_stalled(self) -> None:
        await self._unstalled.wait()

    def close(self) -> None:
        """Release waiters and the stall timer (the sending task is its owner's to cancel)."""
        self._closed = True
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        self._unstalled.set()
        self._cancel_indications()

    def drop_pending(self) -> None:
        """The link is gone: whatever is queued belongs to it and must not reach the next."""
        self._epoch += 1
        self._cancel_indications()

    def _cancel_indications(self) -> None:
        # Safe once the link is gone: no confirmation can arrive for it any more.
        for task in list(self._indications):
            task.cancel()

    # -- the sending task ----------------------------------------------------------------------

    async def run(self) -> None:
        while not self._closed:
            frame = await self._queue.get()
            delay = frame.due - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._unstalled.wait()
            connection = self.connection
            if connection is None or frame.epoch != self._epoch:
                self.counters.dropped += 1
                continue
            try:
                await self._transmit(connection, frame)
            except Exception:
                # A failed send must not end the task. The usual cause is a link that went down
                # mid-send; the disconnection handler reports that, so a debug line is enough.
                self.counters.dropped += 1
                log.debug("send of %s failed", frame.kind.value, exc_info=True)

    async def _transmit(self, connection: Connection, frame: _Frame) -> None:
        profile = self._profile
        if frame.kind is Outbound.RESPONSE:
            self.counters.indications += 1
            await self._indicate(connection, frame.payload)
            return
        self.counters.notifications += 1
        if frame.kind is Outbound.BATTERY:
            # value=None reads the characteristic, i.e. the battery level right now.
            await self._device.notify_subscriber(connection, profile.battery)
            return
        payload = frame.payload
        if self.garble_left > 0:
            self.garble_left -= 1
            self.counters.garbled += 1
            payload = self._garble(payload)
        target = profile.telemetry if frame.kind is Outbound.TELEMETRY else profile.status
        await self._device.notify_subscriber(connection, target, payload)

    async def _indicate(self, connection: Connection, payload: bytes) -> None:
        """Indicate, waiting at most INDICATION_TIMEOUT_S for the confirmation.

        The indication itself runs on to its confirmation in its own task: cancelling it midway
        would leave a late confirmation (from a central that was paused a few seconds) to be
        set on a cancelled future inside bumble's packet handler, an InvalidStateError logged
        with a traceback. It is cancelled only once its link is gone.
        """
        task = asyncio.ensure_future(
            self._device.indicate_subscriber(connection, self._profile.response, payload)
        )
        self._indications.add(task)
        task.add_done_callback(self._indication_done)
        try:
            async with asyncio.timeout(INDICATION_TIMEOUT_S):
                await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                # Cancelled by drop_pending, not this task's owner: the sending task goes on.
                raise ConnectionError("the link dropped before the confirmation") from None
            raise

    def _indication_done(self, task: asyncio.Task[None]) -> None:
        self._indications.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.debug("indication failed: %s", exc)

    def _garble(self, data: bytes) -> bytes:
        # Both corruptions are guaranteed decode failures: every v1 device frame has an exact
        # length, and only version 1 exists.
        if self._rng.random() < 0.5:
            return data[:-1]
        return bytes([0xEE]) + data[1:]
