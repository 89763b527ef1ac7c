"""The storage writer's telemetry buffer: samples packed into per-session batches until a flush.

:class:`TelemetryBuffer` is what ``StorageWriter.append_telemetry`` writes into from the event
loop and what the writer's thread takes out of at each flush. Samples are packed at once
(``gateway.storage.samples``) and appended to the session's current :class:`Batch`: one row of
the telemetry table with a wall-clock anchor (``t0_ms``) and the frame counter of its first
sample. A device-time jump larger than ``MAX_CONTINUOUS_GAP_MS`` (or backwards) starts a new
batch with a new anchor. Past ``max_samples`` buffered, new samples are dropped and counted
(logged once per streak): telemetry is a figure, never a reason to block.

Every method is safe from any thread (one short lock) and none does I/O, except
:func:`batch_rows`, which the writer's thread calls inside its transaction to number the rows.
This module deliberately does not: write, retry or decide when to flush (``gateway.storage
.writer`` does), or know about session records.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ble.protocol import DEVICE_TIME_MOD, TelemetrySample, pack_samples
from gateway.storage.models import TELEMETRY_TABLE
from gateway.storage.samples import LAYOUT_RAW

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFERED_SAMPLES = 250_000
"""About 5.5 MB of packed samples: 100 s of 50 devices at 50 Hz with the database away."""
MAX_CONTINUOUS_GAP_MS = 60_000
"""A device-time jump larger than this (or backwards) starts a new batch with a new anchor."""

Batches = dict[str, list["Batch"]]
"""Session id -> its batches, oldest first."""


@dataclass(slots=True)
class Batch:
    """One future row of the telemetry table: consecutive packed samples of one session."""

    t0_ms: int
    first_frame: int
    last_device_ms: int
    data: bytearray
    n: int


class TelemetryBuffer:
    """Packed telemetry waiting for the next flush; see the module docstring."""

    def __init__(self, *, max_samples: int, clock: Callable[[], float]) -> None:
        self._max_samples = max_samples
        self._clock = clock
        self._lock = threading.Lock()
        self._batches: Batches = {}
        self._buffered = 0
        self._dropped = 0
        self._dropping = False

    @property
    def buffered(self) -> int:
        """Samples waiting for a flush."""
        return self._buffered

    @property
    def dropped(self) -> int:
        """Samples dropped since start (buffer full, writer closed, or refused by the database)."""
        return self._dropped

    def append(
        self,
        session_id: str,
        samples: Sequence[TelemetrySample],
        *,
        received_at: float | None,
        closed: bool,
    ) -> None:
        """Pack and buffer samples of one session (in frame order), or drop them if full/closed."""
        if not samples:
            return
        first, last = samples[0], samples[-1]
        span_ms = (last.device_time_ms - first.device_time_ms) % DEVICE_TIME_MOD
        arrival_ms = round((self._clock() if received_at is None else received_at) * 1000)
        packed = pack_samples(samples)
        count = len(samples)
        with self._lock:
            if closed or self._buffered + count > self._max_samples:
                self._dropped += count
                if not self._dropping:
                    self._dropping = True
                    log.warning(
                        "storage is %s: dropping telemetry (%d samples buffered); "
                        "check the database",
                        "closed" if closed else "behind",
                        self._buffered,
                    )
                return
            batches = self._batches.setdefault(session_id, [])
            batch = batches[-1] if batches else None
            if (
                batch is None
                or (first.device_time_ms - batch.last_device_ms) % DEVICE_TIME_MOD
                > MAX_CONTINUOUS_GAP_MS
            ):
                t0 = arrival_ms - span_ms if span_ms <= MAX_CONTINUOUS_GAP_MS else arrival_ms
                batch = Batch(t0, first.frame, last.device_time_ms, bytearray(), 0)
                batches.append(batch)
            batch.data += packed
            batch.n += count
            batch.last_device_ms = last.device_time_ms
            self._buffered += count

    def take(self) -> Batches:
        """Everything buffered, leaving the buffer empty (and dropping re-armed)."""
        with self._lock:
            batches, self._batches = self._batches, {}
            self._buffered = 0
            self._dropping = False
        return batches

    def restore(self, batches: Batches) -> None:
        """Put unwritten batches back in front of what arrived meanwhile (order is kept)."""
        with self._lock:
            for session_id, older in batches.items():
                newer = self._batches.get(session_id, [])
                self._batches[session_id] = older + newer
                self._buffered += sum(batch.n for batch in older)

    def count_dropped(self, count: int) -> None:
        """``count`` taken samples were lost after all (the database refused them)."""
        with self._lock:
            self._dropped += count


def batch_rows(
    connection: sa.Connection, batches: Batches, next_seq: dict[str, int]
) -> list[dict[str, Any]]:
    """Rows for the telemetry table, numbered on from ``next_seq`` or the stored maximum."""
    rows: list[dict[str, Any]] = []
    for session_id, session_batches in batches.items():
        seq = next_seq.get(session_id)
        if seq is None:
            top = connection.execute(
                sa.select(sa.func.max(TELEMETRY_TABLE.c.seq)).where(
                    TELEMETRY_TABLE.c.session_id == session_id
                )
            ).scalar_one()
            seq = 0 if top is None else top + 1
        for batch in session_batches:
            rows.append(
                {
                    "session_id": session_id,
                    "seq": seq,
                    "first_frame": batch.first_frame,
                    "t0_ms": batch.t0_ms,
                    "n": batch.n,
                    "layout": LAYOUT_RAW,
                    "data": bytes(batch.data),
                }
            )
            seq += 1
    return rows
