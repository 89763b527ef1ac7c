"""How the hub's own parts are doing: the event loop, storage, the radio. Read, never waited on.

:class:`LoopMonitor` measures how late the event loop runs a timer that should fire every
``LOOP_PROBE_S``: a stall of the loop (a busy Pi, a long synchronous call, swapping) delays every
keepalive the scheduler sends, so its size is what the keepalive margin must survive
(docs/architecture.md, "Lease margin"). The largest lag seen and a histogram are kept for
/metrics and the soak report.

:func:`checks` turns the runtime's state into readiness checks, each a :class:`Check` with a
verdict and a reason a person can act on. It does no I/O: the storage writer and journal keep
their own state (last failure, backlog), and the radio supervisor its own; the API adds one
short-timeout database read of its own.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.runtime import Runtime

LOOP_PROBE_S = 0.1
LAG_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RECORDS_BEHIND_LIMIT = 1000
"""Session records waiting for the database beyond which storage is called degraded."""


class LoopMonitor:
    """Measures event-loop stalls; ``run`` is a long-lived task owned by the runtime."""

    def __init__(self, probe_s: float = LOOP_PROBE_S) -> None:
        self.probe_s = probe_s
        self.max_lag_s = 0.0
        self.count = 0
        self.total_s = 0.0
        self.buckets = [0] * (len(LAG_BUCKETS_S) + 1)
        """Counts of lags up to each of LAG_BUCKETS_S (not cumulative), then the rest."""

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await asyncio.sleep(self.probe_s)
            self.observe(max(0.0, loop.time() - began - self.probe_s))

    def observe(self, lag_s: float) -> None:
        self.count += 1
        self.total_s += lag_s
        self.max_lag_s = max(self.max_lag_s, lag_s)
        self.buckets[bisect.bisect_left(LAG_BUCKETS_S, lag_s)] += 1


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def checks(runtime: Runtime) -> list[Check]:
    """Readiness of the runtime's parts, from memory (see the module docstring)."""
    found = [Check("runtime", runtime.started, "running" if runtime.started else "not started")]
    radio = runtime.radio_state
    if radio is None:
        found.append(Check("radio", True, "BlueZ: the stock backend reports no adapter loss"))
    else:
        found.append(Check("radio", radio.up, radio.detail))
    writer = runtime.writer
    if writer is not None:
        stats = writer.stats
        if stats.failing_since is not None:
            down_s = time.monotonic() - stats.failing_since
            found.append(
                Check(
                    "storage",
                    False,
                    f"the database refuses writes for {down_s:.0f} s; "
                    f"{stats.records_pending} session records wait in the journal",
                )
            )
        elif stats.records_pending > RECORDS_BEHIND_LIMIT:
            found.append(Check("storage", False, f"{stats.records_pending} session records behind"))
        else:
            found.append(Check("storage", True, "writable"))
    journal = runtime.journal
    if journal is not None:
        if journal.failing is not None:
            found.append(Check("journal", False, f"cannot be written: {journal.failing}"))
        elif journal.full:
            found.append(Check("journal", False, "full: new sessions are refused"))
        else:
            found.append(Check("journal", True, f"{journal.backlog} records not yet applied"))
    return found
