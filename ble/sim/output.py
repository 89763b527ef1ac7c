"""The simulated output stage: the current set point, its ramps, and a log of what it did.

:class:`OutputStage` holds the set point the firmware drives into the electrodes. The firmware
asks for a target with :meth:`OutputStage.drive`; the stage applies the one rule that makes soft
start hold on every path (S2):

- a decrease is immediate (stopping is never delayed);
- an increase ramps linearly from the present level to the target over ``ramp_ms``, never
  shorter than :data:`MIN_RAMP_MS`, so even a command with ``ramp_ms=0`` cannot cause a step;
- a new target below the one being ramped to (but above the present level) keeps the ramp's
  slope and only ends it lower.

The stage keeps :attr:`OutputStage.output_log`, a piecewise-linear trace of ``(now_ms, ua)``
points: every change of the integer level is logged, and so is the last flat point before a
change, so a test can bound the slope between any two consecutive points.

It deliberately knows nothing of segments, states or contact: the firmware decides the target.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

MIN_RAMP_MS = 100
"""Shortest ramp the firmware applies to any increase, whatever a command asks for."""

OUTPUT_LOG_LIMIT = 100_000
"""Points kept in the output log; a long-running simulator process must not grow without bound."""


@dataclass(frozen=True, slots=True)
class _Ramp:
    start_ms: int
    start_ua: float
    slope_ua_per_ms: float
    end_ua: float

    def level_at(self, now_ms: int) -> float:
        return min(self.end_ua, self.start_ua + self.slope_ua_per_ms * (now_ms - self.start_ms))


class OutputStage:
    """Set point, ramp and output log of one device."""

    def __init__(self) -> None:
        self._level = 0.0
        self._target = 0.0
        self._ramp: _Ramp | None = None
        self._now = 0  # the time up to which _level is known to have been held
        self.output_log: deque[tuple[int, int]] = deque([(0, 0)], maxlen=OUTPUT_LOG_LIMIT)
        self.max_output_ua = 0

    @property
    def output_ua(self) -> int:
        # Truncation, not rounding: the integer level never exceeds the target it ramps to.
        return int(self._level)

    @property
    def level_ua(self) -> float:
        return self._level

    @property
    def target_ua(self) -> float:
        return self._target

    @property
    def ramping(self) -> bool:
        return self._ramp is not None

    def drive(self, now_ms: int, target_ua: float, ramp_ms: int) -> None:
        """Aim at ``target_ua`` from ``now_ms``: down at once, up over ``ramp_ms`` (floored)."""
        self.advance(now_ms)
        target_ua = max(0.0, target_ua)
        if target_ua == self._target:
            return  # already there or already ramping there: do not restart the ramp
        self._target = target_ua
        ramp = self._ramp
        if target_ua <= self._level:
            self._ramp = None
            self._set_level(self._now, target_ua)
        elif ramp is not None and target_ua < ramp.end_ua:
            # A lower target while ramping up keeps the slope: lowering intensity mid-ramp must
            # not make the rest of the onset faster than asked.
            self._ramp = replace(ramp, end_ua=target_ua)
        else:
            slope = (target_ua - self._level) / max(ramp_ms, MIN_RAMP_MS)
            self._ramp = _Ramp(self._now, self._level, slope, target_ua)

    def off(self, now_ms: int) -> None:
        """Output off at once."""
        self.drive(now_ms, 0.0, 0)

    def advance(self, now_ms: int) -> None:
        """Move along the present ramp to ``now_ms``."""
        if now_ms <= self._now:
            return
        ramp = self._ramp
        if ramp is not None:
            level = ramp.level_at(now_ms)
            if level >= ramp.end_ua:
                self._ramp = None
                level = ramp.end_ua
            self._set_level(now_ms, level)
        self._now = now_ms

    def _set_level(self, now_ms: int, level: float) -> None:
        before, after = int(self._level), int(level)
        self._level = level
        if after == before:
            return
        last_ms, _ = self.output_log[-1]
        # Log the last moment the old level was still held, so the trace shows the true slope.
        if self._now > last_ms:
            self.output_log.append((self._now, before))
        self.output_log.append((now_ms, after))
        self.max_output_ua = max(self.max_output_ua, after)
