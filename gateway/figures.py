"""Derived figures of one session from its telemetry: dose per zone, contact, "apply more gel".

:class:`SessionFigures` is fed the :class:`~gateway.telemetry.TelemetryFrame` objects of ONE
session in order (the session layer does it from a hub listener) and turns them into delivered
charge per zone, contact and output time, mean and peak current, and :class:`ContactWarning`
cues ("apply more gel") when contact stays poor while output is wanted.

This module deliberately does not: number, buffer or fan out frames (``gateway.telemetry``),
decide what a warning *does* (sessions raise the notice; contact loss is safety's), or persist
anything (the recorder stores the snapshot). It does no I/O and keeps no clock of its own:
time is the device's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

from ble.protocol import DEVICE_TIME_MOD, DeviceState, Zone
from gateway.telemetry import TelemetryFrame

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
