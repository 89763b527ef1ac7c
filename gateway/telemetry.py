"""The telemetry hub: numbers device samples, keeps a replay ring, fans them out to subscribers.

:class:`TelemetryHub` takes every decoded :class:`~ble.protocol.TelemetrySample` from the BLE
notification callback through the synchronous :meth:`TelemetryHub.publish` and

* numbers it with a per-device 64-bit ``seq`` by unwrapping the device's 16-bit frame counter,
  so frames the device lost show as holes in ``seq`` (and are counted per device);
* appends it to a per-device ring of the last ``ring_size`` frames, from which a reconnecting
  client resumes with ``subscribe(device=..., from_seq=...)``;
* offers it to every matching :class:`Subscription`, a bounded queue per subscriber. When a queue
  is full the OLDEST frame of that subscriber is dropped: live telemetry is about *now* (contact
  quality, current), a phone that falls behind wants the latest state, not a backlog of stale
  samples, and dropping at the head keeps the hole contiguous, so the :class:`Dropped` marker
  delivered before the next frame sits exactly where the missing frames were. A slow subscriber
  only ever costs itself frames; publish never waits for anyone;
* calls in-process listeners (the session layer), isolating the hub from their exceptions;
  ``add_listener`` returns the callable that removes the listener again.

A :class:`TelemetryFrame` serialises itself to JSON once, lazily (``json_text``), and every
consumer sends that same text. The figures of one session (dose per zone, "apply more gel")
are derived from its frames in ``gateway.figures``.

This module deliberately does not: speak HTTP or WebSocket (api/ sends ``json_text``), import
bleak or touch a radio (ble/ decodes samples, the device manager calls ``publish``), persist
anything (storage batches frames from a listener), decide what a warning or a fault *does*
(sessions and the safety supervisor do), or run any task of its own. Everything must be called
from the event loop's thread: ``publish`` wakes waiting consumers with loop futures.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import orjson

from ble.protocol import NO_SEGMENT, TelemetrySample, Zone, fault_names
from gateway.listeners import ClosesOnExit, Listeners

log = logging.getLogger(__name__)

DEFAULT_RING_SIZE = 3000
"""Frames kept per device for replay: 60 s at 50 Hz."""
DEFAULT_QUEUE_SIZE = 256
"""Frames a subscriber may fall behind before its oldest ones are dropped: ~5 s at 50 Hz."""

_COUNTER_MOD = 1 << 16

TelemetryListener = Callable[["TelemetryFrame"], None]
"""A synchronous in-process consumer of every published frame."""


@dataclass(frozen=True, slots=True)
class TelemetryFrame:
    """One sample as the hub publishes it: the device's sample plus the hub's context."""

    device: str
    seq: int
    """Per-device, strictly increasing; a jump of n+1 means the device lost n frames."""
    sample: TelemetrySample
    session_id: str | None
    zone: Zone | None
    received_at: float
    _json: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def json_text(self) -> str:
        """The frame as a JSON object, built on first use and shared by every consumer.

        Kept as text: WebSocket frames go out as text, so every subscriber sends this one
        string, with no per-subscriber decode."""
        text = self._json
        if text is None:
            text = orjson.dumps(self.as_dict()).decode()
            object.__setattr__(self, "_json", text)
        return text

    @property
    def json_bytes(self) -> bytes:
        """``json_text`` encoded (for consumers that want bytes; not cached)."""
        return self.json_text.encode()

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape: ``type`` is ``"telemetry"``; names are lower case; units in keys."""
        sample = self.sample
        faults = sample.faults
        return {
            "type": "telemetry",
            "device": self.device,
            "seq": self.seq,
            "session_id": self.session_id,
            "zone": None if self.zone is None else self.zone.name.lower(),
            "received_at": self.received_at,
            "frame": sample.frame,
            "device_time_ms": sample.device_time_ms,
            "state": sample.state.name.lower(),
            "segment_id": None if sample.segment_id == NO_SEGMENT else sample.segment_id,
            "segment_elapsed_ms": sample.segment_elapsed_ms,
            "current_mean_ua": sample.current_mean_ua,
            "current_peak_ua": sample.current_peak_ua,
            "impedance_ohm": sample.impedance_ohm,
            "contact_quality": sample.contact_quality,
            "battery_pct": sample.battery_pct,
            "temperature_c": sample.temperature_c,
            "faults": list(fault_names(faults)) if faults else [],
        }


class _Marker:
    """A note in a subscriber's stream about frames it will not get; JSON like a frame."""

    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def json_bytes(self) -> bytes:
        return orjson.dumps(self.as_dict())


@dataclass(frozen=True, slots=True)
class Dropped(_Marker):
    """This subscriber's queue overflowed: ``count`` frames right before the next one are lost."""

    count: int

    def as_dict(self) -> dict[str, Any]:
        return {"type": "dropped", "count": self.count}


@dataclass(frozen=True, slots=True)
class Gap(_Marker):
    """A replay asked for frames the ring no longer holds: ``missed`` sequence numbers are gone.

    ``missed`` counts sequence numbers, so frames the device itself lost in that span are in it.
    """

    missed: int

    def as_dict(self) -> dict[str, Any]:
        return {"type": "gap", "missed": self.missed}


TelemetryItem = TelemetryFrame | Dropped | Gap


@dataclass(frozen=True, slots=True)
class TelemetryCounters:
    """A snapshot of the hub's counters, for metrics. All counts since the hub was built."""

    frames_in: int
    """Samples published."""
    frames_out: int
    """Frames handed to subscribers (replayed ones included; markers not)."""
    frames_dropped: int
    """Frames dropped from full subscriber queues, summed over subscribers."""
    device_frames_lost: int
    """Frames missing from the devices' frame counters, summed over devices."""
    device_frames_lost_by_device: dict[str, int]
    listener_errors: int


class _Counters:
    __slots__ = ("frames_dropped", "frames_in", "frames_out")

    def __init__(self) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.frames_dropped = 0


class _Device:
    """Per-device state: the counter unwrapping and the replay ring."""

    __slots__ = ("first_seq", "last_counter", "last_seq", "lost", "resync", "ring")

    def __init__(self, ring_size: int, counter: int) -> None:
        self.ring: deque[TelemetryFrame] = deque(maxlen=ring_size)
        self.first_seq = counter
        self.last_seq = counter - 1
        self.last_counter = (counter - 1) % _COUNTER_MOD
        self.lost = 0
        self.resync = False


class Subscription(ClosesOnExit):
    """One consumer's view of the hub: an async iterator of :data:`TelemetryItem`.

    Built by :meth:`TelemetryHub.subscribe`. Use it as a (sync or async) context manager or call
    :meth:`close`; closing ends the iteration at once, discarding anything still queued. Only one
    task may wait on a subscription at a time.
    """

    __slots__ = (
        "_backlog",
        "_closed",
        "_counters",
        "_detach",
        "_dropped",
        "_queue",
        "_queue_size",
        "_waiter",
        "device",
        "dropped_total",
        "rate_hz",
        "session_id",
    )

    def __init__(
        self,
        *,
        device: str | None,
        session_id: str | None,
        queue_size: int,
        backlog: deque[TelemetryItem],
        counters: _Counters,
        detach: Callable[[Subscription], None],
        rate_hz: float | None = None,
    ) -> None:
        self.device = device
        self.session_id = session_id
        self.rate_hz = rate_hz
        """How many frames a second this consumer wants (None: every frame)."""
        self.dropped_total = 0
        """Frames this subscriber has lost to a full queue, over its lifetime."""
        self._queue: deque[TelemetryFrame] = deque(maxlen=queue_size)
        self._queue_size = queue_size
        # The replay (and its Gap marker) lives apart from the bounded live queue: a replay longer
        # than the queue must not be dropped by the first live frame.
        self._backlog = backlog
        self._dropped = 0
        self._counters = counters
        self._detach = detach
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _offer(self, frame: TelemetryFrame) -> None:
        # The per-subscriber hot path: no allocation beyond the deque slot, no await.
        queue = self._queue
        if len(queue) == self._queue_size:
            self._dropped += 1  # append below evicts the oldest frame
            self.dropped_total += 1
            self._counters.frames_dropped += 1
        queue.append(frame)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def get_nowait(self) -> TelemetryItem | None:
        """The next item if one is ready, else None (also once closed)."""
        if self._closed:
            return None
        if self._backlog:
            item = self._backlog.popleft()
            if isinstance(item, TelemetryFrame):
                self._counters.frames_out += 1
            return item
        if self._dropped:
            count, self._dropped = self._dropped, 0
            # Take the frame the marker refers to out of reach of further drops, so the marker
            # is always followed by that frame and never by a second marker.
            self._backlog.append(self._queue.popleft())
            return Dropped(count)
        if self._queue:
            self._counters.frames_out += 1
            return self._queue.popleft()
        return None

    def close(self) -> None:
        """Stop receiving; wakes a waiting consumer, which then ends its iteration. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._backlog.clear()
        self._detach(self)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> TelemetryItem:
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            if self._closed:
                raise StopAsyncIteration
            if self._waiter is not None:
                raise RuntimeError("another task is already waiting on this subscription")
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None


class TelemetryHub:
    """Numbers, buffers and fans out telemetry frames; see the module docstring."""

    def __init__(
        self, *, ring_size: int = DEFAULT_RING_SIZE, queue_size: int = DEFAULT_QUEUE_SIZE
    ) -> None:
        if ring_size < 1 or queue_size < 1:
            raise ValueError(f"ring_size ({ring_size}) and queue_size ({queue_size}) must be >= 1")
        self._ring_size = ring_size
        self._queue_size = queue_size
        self._devices: dict[str, _Device] = {}
        self._counters = _Counters()
        # Copy-on-write tuples: publish iterates them while a listener may (un)subscribe.
        self._by_device: dict[str, tuple[Subscription, ...]] = {}
        self._by_session: dict[str, tuple[Subscription, ...]] = {}
        self._everyone: tuple[Subscription, ...] = ()
        self._listeners: Listeners[TelemetryFrame] = Listeners(
            log,
            # Once per failure streak: at 50 Hz a broken listener would flood the log.
            "telemetry listener %r failed; frames keep flowing and it will be called again "
            "(failures are counted in listener_errors until it recovers)",
            recovered="telemetry listener %r recovered",
        )
        self._subscriber_count = 0
        self._demand: Listeners[str | None] = Listeners(log, "telemetry demand listener %r failed")

    @property
    def subscriber_count(self) -> int:
        """Open subscriptions."""
        return self._subscriber_count

    @property
    def counters(self) -> TelemetryCounters:
        counters = self._counters
        lost = {name: device.lost for name, device in self._devices.items()}
        return TelemetryCounters(
            frames_in=counters.frames_in,
            frames_out=counters.frames_out,
            frames_dropped=counters.frames_dropped,
            device_frames_lost=sum(lost.values()),
            device_frames_lost_by_device=lost,
            listener_errors=self._listeners.errors,
        )

    def publish(
        self,
        device: str,
        sample: TelemetrySample,
        *,
        session_id: str | None,
        zone: Zone | None,
        received_at: float,
    ) -> TelemetryFrame:
        """Number, buffer and fan out one sample. Synchronous; never blocks."""
        state = self._devices.get(device)
        if state is None:
            state = self._devices[device] = _Device(self._ring_size, sample.frame)
        delta = (sample.frame - state.last_counter) % _COUNTER_MOD
        if delta == 0 or state.resync:
            # A repeated counter is a restarted device or a duplicate, not 65,535 lost frames.
            delta = 1
            state.resync = False
        elif delta > 1:
            state.lost += delta - 1
        seq = state.last_seq + delta
        state.last_seq = seq
        state.last_counter = sample.frame
        frame = TelemetryFrame(device, seq, sample, session_id, zone, received_at)
        state.ring.append(frame)
        self._counters.frames_in += 1

        for sub in self._by_device.get(device, ()):
            if sub.session_id is None or sub.session_id == session_id:
                sub._offer(frame)
        if session_id is not None:
            for sub in self._by_session.get(session_id, ()):
                sub._offer(frame)
        for sub in self._everyone:
            sub._offer(frame)

        self._listeners.notify(frame)
        return frame

    def resync_device(self, device: str) -> None:
        """The device's frame counter restarted (reboot): don't count the jump as lost frames.

        The next frame from ``device`` gets the previous ``seq`` + 1, so ``seq`` stays monotonic.
        """
        state = self._devices.get(device)
        if state is not None:
            state.resync = True

    def forget_history(self, device: str) -> None:
        """Empty ``device``'s replay ring (it changed hands); numbering goes on unchanged.

        A later ``from_seq`` into the emptied span replays nothing older than this call.
        """
        state = self._devices.get(device)
        if state is not None:
            state.ring.clear()
            state.first_seq = state.last_seq + 1

    def subscribe(
        self,
        *,
        device: str | None = None,
        session_id: str | None = None,
        from_seq: int | None = None,
        queue_size: int | None = None,
        rate_hz: float | None = None,
    ) -> Subscription:
        """Receive frames of ``device`` and/or ``session_id`` (None = any).

        ``rate_hz`` says how often the consumer wants a frame (None: every frame); it is what
        :meth:`wanted_hz` reports, so the device manager can set the devices' rate to the need.

        With ``from_seq`` (needs ``device``: ``seq`` counts per device) the subscription first
        replays the ring from that seq on, preceded by a :class:`Gap` if the ring no longer holds
        all of it. A ``from_seq`` beyond the newest frame (e.g. from before a hub restart) replays
        nothing and the subscription starts live.
        """
        size = self._queue_size if queue_size is None else queue_size
        if size < 1:
            raise ValueError(f"queue_size must be >= 1, not {size}")
        backlog: deque[TelemetryItem] = deque()
        if from_seq is not None:
            if device is None:
                raise ValueError(
                    "from_seq needs device=...: sequence numbers count per device; "
                    "resume each device separately"
                )
            backlog.extend(self._replay(device, session_id, from_seq))
        sub = Subscription(
            device=device,
            session_id=session_id,
            queue_size=size,
            backlog=backlog,
            counters=self._counters,
            detach=self._detach,
            rate_hz=rate_hz,
        )
        if device is not None:
            self._by_device[device] = (*self._by_device.get(device, ()), sub)
        elif session_id is not None:
            self._by_session[session_id] = (*self._by_session.get(session_id, ()), sub)
        else:
            self._everyone = (*self._everyone, sub)
        self._subscriber_count += 1
        if session_id is None:
            self._demand.notify(device)
        return sub

    def wanted_hz(self, device: str) -> float:
        """The highest rate any subscriber watching ``device`` asked for: ``inf`` when one
        wants every frame, 0.0 when nobody watches. Subscribers to a session are left out:
        a session streams at full rate while it runs anyway."""
        wanted = 0.0
        for sub in (*self._by_device.get(device, ()), *self._everyone):
            if sub.rate_hz is None:
                return float("inf")
            wanted = max(wanted, sub.rate_hz)
        return wanted

    def add_demand_listener(self, callback: Callable[[str | None], None]) -> Callable[[], None]:
        """Call ``callback(device)`` when the watchers of ``device`` change (``None``: of every
        device); returns the idempotent remover. Ask :meth:`wanted_hz` for the new demand."""
        return self._demand.add(callback)

    def _replay(self, device: str, session_id: str | None, from_seq: int) -> list[TelemetryItem]:
        state = self._devices.get(device)
        if state is None or not state.ring or from_seq > state.ring[-1].seq:
            return []
        frames = list(state.ring)
        oldest = frames[0].seq
        items: list[TelemetryItem] = []
        start = max(from_seq, state.first_seq)
        if start < oldest:
            items.append(Gap(oldest - start))
        else:
            frames = frames[bisect_left(frames, from_seq, key=_seq_of) :]
        items.extend(f for f in frames if session_id is None or f.session_id == session_id)
        return items

    def _detach(self, sub: Subscription) -> None:
        if sub.device is not None:
            self._by_device[sub.device] = _without(self._by_device[sub.device], sub)
            if not self._by_device[sub.device]:
                del self._by_device[sub.device]
        elif sub.session_id is not None:
            self._by_session[sub.session_id] = _without(self._by_session[sub.session_id], sub)
            if not self._by_session[sub.session_id]:
                del self._by_session[sub.session_id]
        else:
            self._everyone = _without(self._everyone, sub)
        self._subscriber_count -= 1
        if sub.session_id is None:
            self._demand.notify(sub.device)

    def add_listener(self, callback: TelemetryListener) -> Callable[[], None]:
        """Call ``callback(frame)`` for every published frame; returns the idempotent remover.

        Listeners run inside ``publish`` and must be quick; an exception is logged and counted.
        """
        return self._listeners.add(callback)

    def close(self) -> None:
        """End every open subscription (at shutdown). The hub itself stays usable."""
        subs = {*self._everyone}
        for group in (*self._by_device.values(), *self._by_session.values()):
            subs.update(group)
        for sub in subs:
            sub.close()


def _seq_of(frame: TelemetryFrame) -> int:
    return frame.seq


def _without(subs: tuple[Subscription, ...], sub: Subscription) -> tuple[Subscription, ...]:
    return tuple(x for x in subs if x is not sub)
