"""Keeps one radio transport open: reopens it with capped backoff and jitter when it is lost.

``RadioSupervisor`` opens an adapter on an HCI transport (``tcp-client:`` to ``mcgw sim``,
``usb:0``, ``serial:...``) and listens for the adapter to report the transport lost (closed by
the far end, an I/O error, or a controller that stopped answering HCI commands; see
``BumbleAdapter.on_lost``). It then marks the radio down, tells its owner, closes the dead
adapter and opens a new one, waiting ``REOPEN_BACKOFF_START_S`` (doubling per failed attempt
up to ``REOPEN_BACKOFF_MAX_S``, each wait scattered by ``REOPEN_JITTER``) between attempts,
until the transport is back; then it hands the new adapter to its owner. A transport that is
lost again soon after it came back (a flapping dongle, a sim that accepts and then stalls) keeps
its longer wait: the backoff starts afresh only once the radio stayed up ``REOPEN_STABLE_S``.

A radio that could not be opened at start, in a hub that started on its other radios, is
handed over with ``start_down(error)``: it is ``down`` from the start and ``run()`` opens it
with the same backoff; ``on_up`` gets its first adapter.

Its ``state`` is a ``RadioState`` snapshot for readiness checks and metrics. It logs one
WARNING when the radio goes down and one INFO when it is back; failed attempts in between only
update ``state.last_error`` (and log at DEBUG). Log lines name the radio by its ``label`` and
transport (``radio1 (tcp-client:127.0.0.1:9300) lost: ...``), so two connections to one
transport read apart.

It deliberately does not: reconnect devices (the gateway's device manager does, through the
new adapter), persist anything, or supervise the in-process virtual radio, which cannot be
lost. It imports no bumble, so its types are cheap to use anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from ble.errors import RadioError

__all__ = [
    "REOPEN_BACKOFF_MAX_S",
    "REOPEN_BACKOFF_START_S",
    "REOPEN_JITTER",
    "REOPEN_STABLE_S",
    "RadioState",
    "RadioStatus",
    "RadioSupervisor",
    "SupervisedAdapter",
]

log = logging.getLogger(__name__)

#: Wait before the first attempt to reopen a lost transport.
REOPEN_BACKOFF_START_S = 0.2
#: The wait doubles per failed attempt up to this cap (a restarted sim or a replugged dongle
#: is picked up within about this long).
REOPEN_BACKOFF_MAX_S = 5.0
#: Each wait is scattered by up to this fraction either way, so hubs that lost a shared
#: resource do not all retry in step.
REOPEN_JITTER = 0.5
#: Up this long, a radio counts as stable again: its next loss starts the backoff afresh.
REOPEN_STABLE_S = 30.0
#: Closing a lost adapter may hang on a dead transport; it is abandoned after this long.
ADAPTER_CLOSE_TIMEOUT_S = 2.0


class RadioStatus(StrEnum):
    """Where a supervised radio transport is."""

    UP = "up"
    """Open and working."""
    DOWN = "down"
    """Lost; waiting before the next attempt to reopen it."""
    REOPENING = "reopening"
    """An attempt to reopen it is under way."""


@dataclass(frozen=True, slots=True)
class RadioState:
    """A snapshot of one radio transport, for readiness checks and metrics."""

    moniker: str
    """The bumble transport, e.g. ``tcp-client:127.0.0.1:9100`` or ``usb:0``."""
    status: RadioStatus = RadioStatus.UP
    last_error: str | None = None
    """Why it went down, then why the latest attempt to reopen it failed; kept after recovery."""
    reopens: int = 0
    """Times it was reopened after a loss since the gateway started (a counter)."""
    down_since: float | None = None
    """UNIX time (seconds) it went down; None while up."""
    failed_attempts: int = 0
    """Attempts to reopen that failed during the current outage (0 while up)."""
    parts: tuple[RadioState, ...] = ()
    """For a hub with several radios, each radio's own state (this one sums them up)."""

    @property
    def up(self) -> bool:
        return self.status is RadioStatus.UP

    @property
    def detail(self) -> str:
        """One line for a person: what state it is in and why."""
        if self.parts:
            return "; ".join(f"radio{i}: {part.detail}" for i, part in enumerate(self.parts))
        if self.status is RadioStatus.UP:
            return f"{self.moniker} up" + (f" (reopened {self.reopens}x)" if self.reopens else "")
        text = f"{self.moniker} {self.status.value}: {self.last_error or 'lost'}"
        if self.failed_attempts:
            text += f"; {self.failed_attempts} attempt(s) to reopen it failed so far"
        return text


class SupervisedAdapter(Protocol):
    """What the supervisor needs of an adapter (``ble.bumble.adapter.BumbleAdapter`` has it)."""

    def on_lost(self, listener: Callable[[str], None]) -> Callable[[], None]: ...

    async def close(self) -> None: ...


_A = TypeVar("_A", bound=SupervisedAdapter)


class RadioSupervisor(Generic[_A]):
    """Opens an adapter with ``opener`` and keeps one open. ``open()`` once, then ``run()``.

    ``on_down()`` is called as soon as the transport is lost (before its links are reported
    down); ``on_up(adapter)`` with each reopened adapter. Both are plain callbacks and must not
    raise (an exception is logged and ignored). ``label`` (``radio1``) names the radio in logs.
    """

    def __init__(
        self,
        moniker: str,
        opener: Callable[[], Awaitable[_A]],
        *,
        on_down: Callable[[], None],
        on_up: Callable[[_A], None],
        label: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.moniker = moniker
        self.name = f"{label} ({moniker})" if label else f"radio {moniker}"
        """How log lines and errors name it: ``radio1 (tcp-client:...)``."""
        self._opener = opener
        self._on_down = on_down
        self._on_up = on_up
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._adapter: _A | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._lost = asyncio.Event()
        self._closed = False
        self._backoff = REOPEN_BACKOFF_START_S
        self._opened = False
        self._up_since = clock()
        self.state = RadioState(moniker)

    @property
    def adapter(self) -> _A:
        """The current adapter (dead while the radio is down; replaced when it is back)."""
        if self._adapter is None:
            raise RadioError(f"{self.name} is not open; call open() first")
        return self._adapter

    async def open(self) -> _A:
        """Open the first adapter. Raises ``RadioError`` (the caller decides whether to start)."""
        adapter = await self._opener()
        self._adopt(adapter)
        log.info("%s up", self.name)
        return adapter

    def start_down(self, error: str) -> None:
        """The first ``open()`` failed with ``error`` but the hub starts without this radio:
        report it down and let ``run()`` open it with the usual backoff."""
        self.state = replace(
            self.state, status=RadioStatus.DOWN, last_error=error, down_since=self._clock()
        )
        log.warning("%s could not be opened: %s; retrying in the background", self.name, error)
        self._lost.set()

    async def run(self) -> None:
        """Reopen the transport whenever it is lost, until cancelled."""
        while True:
            await self._lost.wait()
            self._lost.clear()
            adapter = await self._reopen()
            outage = self._clock() - (self.state.down_since or self._clock())
            first = not self._opened
            self._adopt(adapter)
            self.state = replace(
                self.state,
                status=RadioStatus.UP,
                reopens=self.state.reopens + (0 if first else 1),
                down_since=None,
                failed_attempts=0,
            )
            if first:
                log.info("%s up after %.1f s; devices may be placed on it", self.name, outage)
            else:
                log.info("%s back after %.1f s; devices on it reconnect", self.name, outage)
            try:
                self._on_up(adapter)
            except Exception:
                log.exception("the radio-up handler for %s failed", self.name)

    async def _reopen(self) -> _A:
        old, self._adapter = self._adapter, None
        if old is not None:
            try:
                async with asyncio.timeout(ADAPTER_CLOSE_TIMEOUT_S):
                    await old.close()
            except TimeoutError:
                log.warning("closing the lost adapter of %s hung; abandoned it", self.name)
            except Exception:  # a supervisor that stops here would never reopen anything
                log.exception("closing the lost adapter of %s failed", self.name)
        if self._clock() - self._up_since >= REOPEN_STABLE_S:
            self._backoff = REOPEN_BACKOFF_START_S
        while True:
            jitter = 1 + self._rng.uniform(-REOPEN_JITTER, REOPEN_JITTER)
            await self._sleep(self._backoff * jitter)
            # Doubled for the next attempt, and for the next loss unless the radio stays up.
            self._backoff = min(self._backoff * 2, REOPEN_BACKOFF_MAX_S)
            self.state = replace(self.state, status=RadioStatus.REOPENING)
            try:
                return await self._opener()
            except RadioError as exc:  # the expected failure: the far end is not back yet
                self._attempt_failed(str(exc))
                log.debug("reopening %s failed: %s", self.name, exc)
            except Exception as exc:  # a bug, but the radio must still come back
                self._attempt_failed(f"{type(exc).__name__}: {exc}")
                log.exception("reopening %s failed unexpectedly", self.name)

    def _attempt_failed(self, error: str) -> None:
        self.state = replace(
            self.state,
            status=RadioStatus.DOWN,
            last_error=error,
            failed_attempts=self.state.failed_attempts + 1,
        )

    def _adopt(self, adapter: _A) -> None:
        self._adapter = adapter
        self._opened = True
        self._up_since = self._clock()
        self._unsubscribe = adapter.on_lost(self._transport_lost)

    def _transport_lost(self, reason: str) -> None:
        if self._closed or self.state.status is not RadioStatus.UP:
            return
        self.state = replace(
            self.state, status=RadioStatus.DOWN, last_error=reason, down_since=self._clock()
        )
        log.warning("%s lost: %s; reopening it", self.name, reason)
        try:
            self._on_down()
        except Exception:
            log.exception("the radio-down handler for %s failed", self.name)
        self._lost.set()

    async def close(self) -> None:
        """Close the current adapter; call after cancelling ``run()``."""
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        adapter, self._adapter = self._adapter, None
        if adapter is not None:
            await adapter.close()
