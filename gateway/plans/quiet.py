"""Quiet hours: a daily local-time span (may cross midnight) when no reminder is sent.

The rule (docs/plans.md): a reminder that falls inside quiet hours is deferred to their end, in
the plan's zone; if the slot is no longer open then (done, or its window ended), it is skipped.
``start == end`` means no quiet hours. Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time
    end: time

    def contains(self, instant: datetime, tz: ZoneInfo) -> bool:
        """Whether ``instant`` is inside the quiet hours, read in ``tz``."""
        at = instant.astimezone(tz).time().replace(tzinfo=None)
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= at < self.end
        return at >= self.start or at < self.end  # spans midnight

    def release(self, instant: datetime, tz: ZoneInfo) -> datetime:
        """``instant`` itself outside quiet hours, else the (UTC) end of the quiet hours."""
        if not self.contains(instant, tz):
            return instant
        local = instant.astimezone(tz)
        day = local.date()
        if self.start > self.end and local.time().replace(tzinfo=None) >= self.start:
            day += timedelta(days=1)  # started this evening, ends tomorrow morning
        return datetime.combine(day, self.end, tzinfo=tz).astimezone(UTC)
