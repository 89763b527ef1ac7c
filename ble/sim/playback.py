"""The play queue of the simulated firmware: segments waiting, the one playing, its position.

:class:`PlayQueue` validates a QUEUE_SEGMENT against the device limits, holds up to
``queue_depth`` segments (the one playing counts, it leaves the queue when it ends) and moves the
playback position when the firmware says time has passed while playing. Segment boundaries are
exact: the position carries over into the next segment, so there is no gap and no overlap.

It deliberately does not decide when playback advances (states, contact) or what current flows:
ble/sim/firmware.py and ble/sim/output.py do.
"""

from __future__ import annotations

from collections import deque

from ble import protocol as p


class PlayQueue:
    """Segments in play order; ``head`` is the one playing while the device is RUNNING/PAUSED."""

    def __init__(self, limits: p.DeviceLimits) -> None:
        self._limits = limits
        self._segments: deque[p.QueueSegment] = deque()
        self.elapsed_ms = 0
        """Position inside ``head``; moves only while playing."""

    def __len__(self) -> int:
        return len(self._segments)

    @property
    def segments(self) -> tuple[p.QueueSegment, ...]:
        return tuple(self._segments)

    @property
    def head(self) -> p.QueueSegment | None:
        return self._segments[0] if self._segments else None

    @property
    def free(self) -> int:
        return max(0, self._limits.queue_depth - len(self._segments))

    @property
    def remaining_ms(self) -> int:
        """Time left in ``head`` (0 when the queue is empty)."""
        head = self.head
        return 0 if head is None else head.duration_ms - self.elapsed_ms

    def check(self, seg: p.QueueSegment) -> p.Status:
        """Whether ``seg`` may be queued: OK or the NACK status, in a fixed order of checks."""
        limits = self._limits
        # The hard cap comes first: it is the check a gateway must never trip (S1).
        if seg.amplitude_ua > limits.hard_cap_ua:
            return p.Status.ABOVE_HARD_CAP
        if (
            seg.segment_id == p.NO_SEGMENT
            or not limits.frequency_min_dhz <= seg.frequency_dhz <= limits.frequency_max_dhz
            or not limits.pulse_width_min_us <= seg.pulse_width_us <= limits.pulse_width_max_us
            or not 1 <= seg.duration_ms <= limits.max_segment_ms
        ):
            return p.Status.OUT_OF_RANGE
        # A gateway that lost an ACK may send a segment again; telling it so beats a double play.
        if any(queued.segment_id == seg.segment_id for queued in self._segments):
            return p.Status.DUPLICATE_SEGMENT
        if len(self._segments) >= limits.queue_depth:
            return p.Status.QUEUE_FULL
        return p.Status.OK

    def append(self, seg: p.QueueSegment) -> None:
        self._segments.append(seg)

    def rewind(self) -> None:
        """Put the position back to the start of ``head`` (START plays a segment from its start)."""
        self.elapsed_ms = 0

    def clear(self) -> None:
        self._segments.clear()
        self.elapsed_ms = 0

    def play(self, dt_ms: int) -> bool:
        """Advance the position by ``dt_ms``; return True if ``head`` ended (and was removed).

        The caller cuts its steps at ``remaining_ms``, so at most one segment ends per call.
        """
        head = self.head
        if head is None:
            return False
        self.elapsed_ms += dt_ms
        if self.elapsed_ms < head.duration_ms:
            return False
        self._segments.popleft()
        self.elapsed_ms = self.elapsed_ms - head.duration_ms if self._segments else 0
        return True
