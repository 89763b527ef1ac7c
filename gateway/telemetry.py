"""The telemetry hub: fans device samples out to subscribers, keeps a replay ring, derives figures.

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
* calls in-process listeners (the session layer), isolating the hub from their exceptions.

A :class:`TelemetryFrame` serialises itself to JSON once, lazily (``json_bytes``), and every
consumer sends those same bytes. :class:`SessionFigures` turns the frames of one session into
delivered charge per zone, contact time, mean and peak current, and "apply more gel" warnings.

This module deliberately does not: speak HTTP or WebSocket (api/ sends ``json_bytes``), import
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
from types import TracebackType
from typing import Any, Self, TypedDict

import orjson

from ble.protocol import (
    DEVICE_TIME_MOD,
    NO_SEGMENT,
    DeviceState,
    TelemetrySample,
    Zone,
    fault_names,
)

logger = logging.getLogger(__name__)

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
    _json: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def json_bytes(self) -> bytes:
        """The frame as a JSON object, built on first use and shared by every consumer."""
        data = self._json
        if data is None:
            # orjson returns bytes in an over-allocated buffer (~4 KiB for a ~330-byte frame);
            # the ring keeps 3000 frames per device, so keep a right-sized copy (~0.2 µs).
            data = bytes(memoryview(orjson.dumps(self.as_dict())))
            object.__setattr__(self, "_json", data)
        return data

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


@dataclass(frozen=True, slots=True)
class Dropped:
    """This subscriber's queue overflowed: ``count`` frames right before the next one are lost."""

    count: int

    @property
    def json_bytes(self) -> bytes:
        return orjson.dumps({"type": "dropped", "count": self.count})


@dataclass(frozen=True, slots=True)
class Gap:
    """A replay asked for frames the ring no longer holds: ``missed`` sequence numbers are gone.

    ``missed`` counts sequence numbers, so frames the device itself lost in that span are in it.
    """

    missed: int

    @property
    def json_bytes(self) -> bytes:
        return orjson.dumps({"type": "gap", "missed": self.missed})


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
    __slots__ = ("frames_dropped", "frames_in", "frames_out", "listener_errors")

    def __init__(self) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.frames_dropped = 0
        self.listener_errors = 0


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


class _Listener:
    __slots__ = ("callback", "failing")

    def __init__(self, callback: TelemetryListener) -> None:
        self.callback = callback
        self.failing = False


class Subscription:
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
    ) -> None:
        self.device = device
        self.session_id = session_id
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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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
        self._listeners: tuple[_Listener, ...] = ()
        self._subscriber_count = 0

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
            listener_errors=counters.listener_errors,
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

        for listener in self._listeners:
            try:
                listener.callback(frame)
            except Exception:
                self._counters.listener_errors += 1
                if not listener.failing:
                    listener.failing = True
                    # Once per failure streak: at 50 Hz a broken listener would flood the log.
                    logger.exception(
                        "telemetry listener %r failed; frames keep flowing and it will be "
                        "called again (failures are counted in listener_errors until it recovers)",
                        listener.callback,
                    )
            else:
                if listener.failing:
                    listener.failing = False
                    logger.info("telemetry listener %r recovered", listener.callback)
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
    ) -> Subscription:
        """Receive frames of ``device`` and/or ``session_id`` (None = any).

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
        )
        if device is not None:
            self._by_device[device] = (*self._by_device.get(device, ()), sub)
        elif session_id is not None:
            self._by_session[session_id] = (*self._by_session.get(session_id, ()), sub)
        else:
            self._everyone = (*self._everyone, sub)
        self._subscriber_count += 1
        return sub

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

    def add_listener(self, callback: TelemetryListener) -> Callable[[], None]:
        """Call ``callback(frame)`` for every published frame; returns the idempotent remover.

        Listeners run inside ``publish`` and must be quick; an exception is logged and counted.
        """
        listener = _Listener(callback)
        self._listeners = (*self._listeners, listener)

        def remove() -> None:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

        return remove

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


# --- per-session figures --------------------------------------------------------------------------

APPLY_MORE_GEL = "apply more gel"
DEFAULT_GEL_THRESHOLD = 40
"""Contact quality (1-99) below which, held long enough, the user is told to add gel."""
DEFAULT_GEL_HOLD_MS = 3000
DEFAULT_MAX_GAP_MS = 1000
"""Device-time steps longer than this are gaps in the data and are not integrated."""


@dataclass(frozen=True, slots=True)
class ContactWarning:
    """Poor (but not lost) skin contact held while output was wanted."""

    message: str
    zone: Zone | None = field(default=None, kw_only=True)
    contact_quality: int | None = field(default=None, kw_only=True)
    device_time_ms: int | None = field(default=None, kw_only=True)

    def __str__(self) -> str:
        return self.message


class FiguresSnapshot(TypedDict):
    """What :meth:`SessionFigures.snapshot` returns; every value is JSON-serialisable."""

    charge_uas_by_zone: dict[str, float]
    """Delivered charge in µA·s per zone name ("unknown" when no zone was set)."""
    charge_uas_total: float
    contact_s: float
    output_s: float
    mean_current_ua: float | None
    """Time-weighted mean of the mean current over the time output was above zero."""
    peak_current_ua: int
    frames: int
    gaps: int
    contact_warnings: int


class SessionFigures:
    """Derived figures of ONE session, fed its frames in order (one device, one session).

    Each sample's ``current_mean_ua`` is the mean over the interval since the previous sample,
    so an interval is integrated with the newer sample's current, zone and contact. Device time
    is a wrapping u32 in ms; a step above ``max_gap_ms`` (or backwards) is a gap, not integrated.
    """

    def __init__(
        self,
        *,
        gel_threshold: int = DEFAULT_GEL_THRESHOLD,
        gel_hold_ms: int = DEFAULT_GEL_HOLD_MS,
        max_gap_ms: int = DEFAULT_MAX_GAP_MS,
    ) -> None:
        if not 1 <= gel_threshold <= 100 or gel_hold_ms < 1 or max_gap_ms < 1:
            raise ValueError(
                f"gel_threshold must be 1-100 ({gel_threshold}), gel_hold_ms ({gel_hold_ms}) "
                f"and max_gap_ms ({max_gap_ms}) positive"
            )
        self._gel_threshold = gel_threshold
        self._gel_hold_ms = gel_hold_ms
        self._max_gap_ms = max_gap_ms
        self._last_time: int | None = None
        self._charge_uams: dict[Zone | None, int] = {}  # integers: exact, no float drift
        self._contact_ms = 0
        self._output_ms = 0
        self._peak_ua = 0
        self._frames = 0
        self._gaps = 0
        self._low_since: int | None = None
        self._gel_armed = True
        self._warnings = 0

    def update(self, frame: TelemetryFrame) -> list[ContactWarning]:
        """Fold one frame in; return the warnings it raises (usually none)."""
        sample = frame.sample
        now = sample.device_time_ms
        self._frames += 1
        self._peak_ua = max(self._peak_ua, sample.current_peak_ua)
        gap = False
        if self._last_time is not None:
            step = (now - self._last_time) % DEVICE_TIME_MOD
            if step > self._max_gap_ms:
                gap = True
                self._gaps += 1
            elif step:
                current = sample.current_mean_ua
                if current:
                    self._charge_uams[frame.zone] = (
                        self._charge_uams.get(frame.zone, 0) + current * step
                    )
                    self._output_ms += step
                if sample.contact_quality:
                    self._contact_ms += step
        self._last_time = now
        return self._check_gel(frame, gap)

    def _check_gel(self, frame: TelemetryFrame, gap: bool) -> list[ContactWarning]:
        sample = frame.sample
        quality = sample.contact_quality
        now = sample.device_time_ms
        if sample.state is DeviceState.RUNNING and 0 < quality < self._gel_threshold:
            since = self._low_since
            if since is None or gap:
                # After a gap nobody knows what quality was: the hold starts over.
                self._low_since = now
            elif self._gel_armed and (now - since) % DEVICE_TIME_MOD >= self._gel_hold_ms:
                self._gel_armed = False
                self._warnings += 1
                return [
                    ContactWarning(
                        APPLY_MORE_GEL,
                        zone=frame.zone,
                        contact_quality=quality,
                        device_time_ms=now,
                    )
                ]
            return []
        # Off the skin (0) is contact loss, handled by safety; only a recovery re-arms the cue,
        # so lifting and reapplying a dry device does not nag twice.
        self._low_since = None
        if quality >= self._gel_threshold:
            self._gel_armed = True
        return []

    def snapshot(self) -> FiguresSnapshot:
        total = sum(self._charge_uams.values())
        return {
            "charge_uas_by_zone": {
                ("unknown" if zone is None else zone.name.lower()): uams / 1000
                for zone, uams in self._charge_uams.items()
            },
            "charge_uas_total": total / 1000,
            "contact_s": self._contact_ms / 1000,
            "output_s": self._output_ms / 1000,
            "mean_current_ua": total / self._output_ms if self._output_ms else None,
            "peak_current_ua": self._peak_ua,
            "frames": self._frames,
            "gaps": self._gaps,
            "contact_warnings": self._warnings,
        }
