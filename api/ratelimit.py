"""The pairing guard: wrong pairing codes lock out whoever sends them, never anyone else.

A 6-digit code is guessable, so guesses must be rare. Two sliding windows of *failed* attempts,
in memory, one guard per app:

* per client address: ``per_client`` wrong codes within ``client_window_s`` lock that address
  out until the oldest of them leaves the window (429 ``pairing-locked-out`` with Retry-After);
* for the whole hub: ``hub_limit`` wrong codes within ``hub_window_s`` (from any address) pause
  pairing for everyone until the window moves on (429 ``rate-limited``), so many addresses
  cannot guess in parallel: with the defaults at most 150 guesses reach a code in its 5-minute
  life, one chance in about 6,700 for a guesser.

Every attempt counts as a failure from the moment it is let through, and a success takes its
own count back: guesses sent together cannot all pass the check while the first is still
being judged. A successful pairing clears its address's failures. Codes are never burnt by
wrong guesses (``gateway.storage.pairing``): a guesser cannot take a victim's code away.

The client address is the TCP peer, or the forwarded address only when the peer is one of
``api.trusted_proxies`` (uvicorn applies that setting), so a header cannot pick the key.
The guard is per process: several hubs each guard their own API.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

PER_CLIENT_FAILURES = 5
CLIENT_WINDOW_S = 600.0
HUB_FAILURES = 30
HUB_WINDOW_S = 60.0
MAX_CLIENTS = 10_000


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why pairing is refused now, and for how long."""

    locked_out: bool
    """True: this address guessed wrong too often. False: the hub as a whole is paused."""
    retry_after_s: int


class PairingGuard:
    """Counts failed pairing attempts; see the module docstring."""

    def __init__(
        self,
        *,
        per_client: int = PER_CLIENT_FAILURES,
        client_window_s: float = CLIENT_WINDOW_S,
        hub_limit: int = HUB_FAILURES,
        hub_window_s: float = HUB_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.per_client = per_client
        self.client_window_s = client_window_s
        self.hub_limit = hub_limit
        self.hub_window_s = hub_window_s
        self._clock = clock
        self._max_clients = max_clients
        self._clients: dict[str, deque[float]] = {}
        self._hub: deque[float] = deque()

    def check(self, client: str) -> Refusal | None:
        """None when ``client`` may try a code now."""
        now = self._clock()
        failures = self._clients.get(client)
        if failures is not None:
            _trim(failures, now - self.client_window_s)
            if len(failures) >= self.per_client:
                return Refusal(True, _wait(failures[0] + self.client_window_s - now))
        _trim(self._hub, now - self.hub_window_s)
        if len(self._hub) >= self.hub_limit:
            return Refusal(False, _wait(self._hub[0] + self.hub_window_s - now))
        return None

    def attempt(self, client: str) -> Refusal | None:
        """Check, and count the attempt as failed until :meth:`succeeded` says otherwise.

        None: ``client`` may try one code now.
        """
        refusal = self.check(client)
        if refusal is None:
            self.failed(client)
        return refusal

    def failed(self, client: str) -> None:
        now = self._clock()
        failures = self._clients.get(client)
        if failures is None:
            if len(self._clients) >= self._max_clients:
                self._forget_idle(now)
            failures = self._clients[client] = deque()
        failures.append(now)
        self._hub.append(now)

    def succeeded(self, client: str) -> None:
        """An attempt let through by :meth:`attempt` was right: its address starts afresh."""
        self.withdraw(client)
        self._clients.pop(client, None)

    def withdraw(self, client: str) -> None:
        """An attempt let through by :meth:`attempt` was never judged (storage failed): it
        counts nothing."""
        failures = self._clients.get(client)
        if failures:
            at = failures.pop()
            if at in self._hub:
                self._hub.remove(at)

    def _forget_idle(self, now: float) -> None:
        """Keep memory bounded under an address-spraying attack: drop clients with no recent
        failure (the hub window still counts theirs)."""
        horizon = now - self.client_window_s
        for key in [k for k, f in self._clients.items() if not f or f[-1] <= horizon]:
            del self._clients[key]
        if len(self._clients) >= self._max_clients:
            self._clients.pop(next(iter(self._clients)))


def _trim(times: deque[float], horizon: float) -> None:
    while times and times[0] <= horizon:
        times.popleft()


def _wait(seconds: float) -> int:
    return max(1, math.ceil(seconds))
