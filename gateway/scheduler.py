"""The pulse scheduler: compiles a program into device segments and streams them ahead.

A program's steps are cut into segments of at most ``SEGMENT_MS``. The scheduler keeps at least
``LOOKAHEAD_MS`` of output queued on the device (bounded by the device's queue depth), so a radio
stall of up to 500 ms never lets the device run dry. The device's reported playback position
(segment id + elapsed time, from telemetry) is the source of truth for progress; after a pause
or a reconnect the scheduler resumes from exactly there.

One worker task per running session sleeps until the next absolute deadline on the loop clock
(a keepalive) or until telemetry shows the device moved on, whichever comes first. It never
sends STOP: stopping is the session's job and bypasses the worker entirely (S3).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ble import protocol as p
from ble.errors import BleError, CommandRefused
from ble.link import DeviceLink
from gateway.errors import SafetyViolation
from gateway.programs import Caps, Program

log = logging.getLogger(__name__)

SEGMENT_MS = 1000
LOOKAHEAD_MS = 3000
"""Output kept queued ahead of the device's playback position (covers 500 ms stalls 6x)."""
KEEPALIVE_FRACTION = 0.2
"""Send a keepalive when nothing was written for this fraction of the device's lease.

The margin is what an event-loop stall may eat: with a 1 s lease, a stall of up to 0.8 s
(minus one write's round trip) leaves the lease alive. 0.3 let a 0.7 s stall of a loaded hub
expire it (safe, the device stops, but the session fails); docs/architecture.md ("Lease
margin") gives the stalls the soak measured. The device's lease itself is never extended."""
LATENESS_SAMPLES = 1000
"""Recent keepalive dispatch lateness figures kept per streamer (``Streamer.lateness_ms``)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A slice of one program step, as the device will play it."""

    index: int
    step: int
    start_ms: int
    """Offset of this segment from the start of the program."""
    zone: p.Zone
    waveform: p.Waveform
    frequency_dhz: int
    amplitude_ua: int
    pulse_width_us: int
    duration_ms: int


def compile_program(
    program: Program, limits: p.DeviceLimits, *, caps: Caps | None = None
) -> tuple[Segment, ...]:
    """Cut a validated (and limited) program into segments the device accepts.

    With ``caps``, every segment is checked against ``caps.for_zone`` (the user cap included)
    and SafetyViolation is raised before anything is sent: a program that was not limited to
    the session's caps is refused here, not at the write guard midway through a session.
    """
    segments: list[Segment] = []
    offset = 0
    length = min(SEGMENT_MS, limits.max_segment_ms)
    for step_index, step in enumerate(program.steps):
        cap = caps.for_zone(step.zone_enum) if caps is not None else None
        if cap is not None and step.amplitude_ua > cap:
            raise SafetyViolation(
                f"steps[{step_index}] asks {step.amplitude_ua} µA on {step.zone}, above its cap "
                f"of {cap} µA: limit the program to the session's caps (limit_program)"
            )
        dhz = round(step.frequency_hz * 10)
        dhz = min(max(dhz, limits.frequency_min_dhz), limits.frequency_max_dhz)
        width = round(step.duty_pct / 100 * 1_000_000 / step.frequency_hz)
        width = min(max(width, limits.pulse_width_min_us), limits.pulse_width_max_us)
        remaining = step.duration_s * 1000
        while remaining > 0:
            duration = min(length, remaining)
            segments.append(
                Segment(
                    index=len(segments),
                    step=step_index,
                    start_ms=offset,
                    zone=step.zone_enum,
                    waveform=step.waveform_enum,
                    frequency_dhz=dhz,
                    amplitude_ua=step.amplitude_ua,
                    pulse_width_us=width,
                    duration_ms=duration,
                )
            )
            offset += duration
            remaining -= duration
    return tuple(segments)


@dataclass(slots=True)
class _Queued:
    segment: Segment
    skip_ms: int
    """Milliseconds of the segment already played before this copy was queued."""


class Streamer:
    """Streams one session's segments to one device link and tracks the playback position."""

    def __init__(
        self,
        link: DeviceLink,
        segments: tuple[Segment, ...],
        *,
        soft_start_ms: int,
        on_error: Callable[[Exception], None],
    ) -> None:
        self.link = link
        self.segments = segments
        self.soft_start_ms = soft_start_ms
        self.total_ms = segments[-1].start_ms + segments[-1].duration_ms if segments else 0
        self._on_error = on_error
        self._queued: dict[int, _Queued] = {}
        self._order: list[int] = []
        self._next_index = 0
        self._next_id = 1
        self._position_ms = 0
        self._playing_id: int | None = None
        self._wake = asyncio.Event()
        self._last_write = 0.0
        self._last_write_pc = 0.0
        self.paused = False
        self.done = False
        self.halted = False
        self.max_lateness_ms = 0.0
        self.lateness_ms: deque[float] = deque(maxlen=LATENESS_SAMPLES)
        """How late (ms) recent keepalives went out after their deadline (metrics, benches)."""

    @property
    def position_ms(self) -> int:
        return self._position_ms

    @property
    def current(self) -> Segment | None:
        queued = self._queued.get(self._playing_id) if self._playing_id is not None else None
        return queued.segment if queued else None

    def all_sent(self) -> bool:
        return self._next_index >= len(self.segments)

    def zone_of(self, segment_id: int) -> p.Zone | None:
        queued = self._queued.get(segment_id)
        return queued.segment.zone if queued else None

    def observe(self, sample: p.TelemetrySample) -> None:
        """Update the playback position from a telemetry sample (hot path: no awaits)."""
        queued = self._queued.get(sample.segment_id)
        if queued is None:
            return
        position = queued.segment.start_ms + queued.skip_ms + sample.segment_elapsed_ms
        self._position_ms = max(self._position_ms, min(position, self.total_ms))
        if sample.segment_id != self._playing_id:
            self._playing_id = sample.segment_id
            # Everything queued before the playing segment has finished on the device.
            if sample.segment_id in self._order:
                cut = self._order.index(sample.segment_id)
                for finished in self._order[:cut]:
                    self._queued.pop(finished, None)
                del self._order[:cut]
            self._wake.set()

    def device_idle(self) -> None:
        """The device reports IDLE while we were running: its queue is empty."""
        if self.all_sent():
            self._position_ms = self.total_ms
            self.done = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def halt(self) -> None:
        """Stop streaming for good: no write starts after this; one in flight completes.

        The session calls this instead of cancelling the worker: a GATT write cancelled
        mid-flight cannot be abandoned on ATT, so the backend would drop the link.
        """
        self.halted = True
        self._wake.set()

    def _stopping(self) -> bool:
        # A method, not the attribute: halt() may run during any await.
        return self.halted

    def _buffered_ms(self) -> int:
        if not self._order:
            return 0
        last = self._queued[self._order[-1]]
        return last.segment.start_ms + last.segment.duration_ms - self._position_ms

    def _alloc_id(self) -> int:
        segment_id = self._next_id
        self._next_id = self._next_id + 1 if self._next_id < 0xFFFE else 1
        return segment_id

    async def _queue(self, segment: Segment, skip_ms: int) -> None:
        segment_id = self._alloc_id()
        self._queued[segment_id] = _Queued(segment, skip_ms)
        self._order.append(segment_id)
        command = p.QueueSegment(
            segment_id=segment_id,
            zone=segment.zone,
            waveform=segment.waveform,
            frequency_dhz=segment.frequency_dhz,
            amplitude_ua=segment.amplitude_ua,
            pulse_width_us=segment.pulse_width_us,
            duration_ms=segment.duration_ms - skip_ms,
            ramp_ms=self.soft_start_ms,
        )
        try:
            await self.link.send(command)
        except BaseException:
            self._queued.pop(segment_id, None)
            self._order.remove(segment_id)
            raise
        self._written()

    def _written(self) -> None:
        self._last_write = asyncio.get_running_loop().time()
        self._last_write_pc = time.perf_counter()

    async def prime(self, intensity_pct: int) -> None:
        """(Re)start output from the current position: intensity, first segments, START.

        The device's queue must be empty (a new session, or a new link). Returns without
        starting if the streamer is halted meanwhile, or if nothing of the program is left
        (then ``done`` is set).
        """
        self._queued.clear()
        self._order.clear()
        self._playing_id = None
        self.done = False
        index = next(
            (
                s.index
                for s in self.segments
                if s.start_ms <= self._position_ms < s.start_ms + s.duration_ms
            ),
            len(self.segments),
        )
        self._next_index = index
        if index >= len(self.segments):
            self.done = True
            return
        if self._stopping():
            return
        await self.link.send(p.SetIntensity(percent=intensity_pct, ramp_ms=self.soft_start_ms))
        first = self.segments[index]
        if self._stopping():
            return
        await self._queue(first, self._position_ms - first.start_ms)
        self._next_index = index + 1
        await self._fill()
        if self._stopping():
            return  # a STOP may already be on its way: never START behind it
        await self.link.send(p.Start())
        self.paused = False

    async def _fill(self) -> None:
        limits = self.link.limits
        depth = limits.queue_depth if limits else 4
        while (
            not self.halted
            and not self.all_sent()
            and self._buffered_ms() < LOOKAHEAD_MS
            and len(self._order) < depth
        ):
            try:
                await self._queue(self.segments[self._next_index], 0)
            except CommandRefused as exc:
                if exc.status == p.Status.QUEUE_FULL.name:
                    return
                raise
            self._next_index += 1

    async def run(self) -> None:
        """Keep the device fed and alive until the program is done or the task is cancelled."""
        loop = asyncio.get_running_loop()
        limits = self.link.limits
        lease_s = (limits.lease_ms if limits else 1000) / 1000
        keepalive_every = lease_s * KEEPALIVE_FRACTION
        self._last_write = loop.time()
        self._last_write_pc = time.perf_counter()
        while not self.done and not self.halted:
            timeout = self._last_write + keepalive_every - loop.time()
            if timeout > 0:
                try:
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                if not self.paused:
                    await self._fill()
                if self._stopping():
                    return
                # Recomputed: a segment written by _fill renews the lease too. The same
                # comparison as the sleep above, so an expired deadline always sends.
                if loop.time() >= self._last_write + keepalive_every:
                    # Measured on perf_counter: uvloop's loop.time() only has ms resolution.
                    # A timer may fire a hair early (the loop's granularity): that is on time.
                    late_s = max(0.0, time.perf_counter() - self._last_write_pc - keepalive_every)
                    self.max_lateness_ms = max(self.max_lateness_ms, late_s * 1000)
                    self.lateness_ms.append(late_s * 1000)
                    await self.link.send(p.Keepalive())
                    self._written()
            except (BleError, SafetyViolation) as exc:
                # Either way the bytes did not (all) reach the device; the session decides.
                self._on_error(exc)
                return
