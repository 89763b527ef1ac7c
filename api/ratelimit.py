"""A small in-memory sliding-window rate limiter (pairing attempts).

One limiter per app, built in ``create_app``: per-key windows (the client IP) plus one global
window, so a botnet of many addresses still meets a cap. It is per process: several hubs each
limit on their own, which is fine because the pairing code itself burns after a few wrong
guesses (``gateway.storage.pairing``), the limiter only slows guessing down.

Behind a reverse proxy every client has the proxy's address: set the per-key limit with that
in mind (docs/api.md).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """``hit(key)`` returns 0 when allowed, else the seconds to wait before retrying."""

    def __init__(
        self,
        *,
        per_key: int,
        global_limit: int,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.per_key = per_key
        self.global_limit = global_limit
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._keys: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def _trim(self, hits: deque[float], now: float) -> None:
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()

    def hit(self, key: str) -> int:
        now = self._clock()
        self._trim(self._all, now)
        hits = self._keys.get(key)
        if hits is None:
            if len(self._keys) >= self._max_keys:
                # Keep memory bounded under an address-spraying attack: forget idle keys.
                for stale in [
                    k for k, h in self._keys.items() if not h or h[-1] <= now - self.window_s
                ]:
                    del self._keys[stale]
            hits = self._keys[key] = deque()
        self._trim(hits, now)
        for window, limit in ((hits, self.per_key), (self._all, self.global_limit)):
            if len(window) >= limit:
                return max(1, math.ceil(window[0] + self.window_s - now))
        hits.append(now)
        self._all.append(now)
        return 0
