"""Gateway events and the bus that carries them to listeners (sessions, storage, API, metrics).

Events are small frozen dataclasses: device state changes, session state changes with their
reasons, "move" cues, contact and gel warnings, faults. ``EventBus.publish`` never blocks: each
async subscriber has a bounded queue, and one that falls behind loses its oldest events and is
told how many (``EventsDropped``); closing a subscription (or leaving its ``async with``)
detaches it. Synchronous listeners run inline and must be quick; ``add_listener`` returns the
callable that removes the listener again, and a listener that raises is logged and never breaks
publishing.

This module knows nothing of HTTP or storage.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.listeners import ClosesOnExit, Listeners
from gateway.states import DeviceState, SessionState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event. ``ts`` is wall-clock seconds (for people and storage)."""

    kind: str = field(init=False, default="event")
    ts: float = field(default_factory=time.time, kw_only=True)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DeviceStateChanged(Event):
    address: str
    state: DeviceState
    detail: str = ""
    kind: str = field(init=False, default="device_state")


@dataclass(frozen=True, slots=True)
class SessionStateChanged(Event):
    session_id: str
    address: str
    owner: str
    state: SessionState
    reason: str
    kind: str = field(init=False, default="session_state")


@dataclass(frozen=True, slots=True)
class SessionNotice(Event):
    """Something a person should see during a session: a move cue, a warning, a fault."""

    session_id: str
    address: str
    owner: str
    notice: str
    """One of: move, apply_gel, contact_lost, contact_restored, fault, intensity, progress."""
    detail: dict[str, Any] = field(default_factory=dict)
    kind: str = field(init=False, default="session_notice")


@dataclass(frozen=True, slots=True)
class PlanEvent(Event):
    """Base of a treatment plan's events (``gateway.plans.planner``): for ``user_id`` only."""

    user_id: int
    plan_id: int | None
    """None only in ``AdherenceChanged``, when the user has no plan any more."""


@dataclass(frozen=True, slots=True)
class PlanDue(PlanEvent):
    """A planned session became due (its slot opened); ``window_end``: until when it counts."""

    plan_id: int
    due_at: str
    window_end: str
    local_day: str
    kind: str = field(init=False, default="plan_due")


@dataclass(frozen=True, slots=True)
class PlanMissed(PlanEvent):
    """A planned session's window ended without it being done (a missed day)."""

    plan_id: int
    due_at: str
    local_day: str
    credit: float
    kind: str = field(init=False, default="plan_missed")


@dataclass(frozen=True, slots=True)
class AdherenceChanged(PlanEvent):
    """The user's state on their newest plan: due now, and this week's done versus expected.
    ``plan_id`` None: the user's last plan was deleted (nothing due, nothing expected)."""

    due: bool
    week_done: int
    week_expected: int
    week_credit: float
    """Credited shares this week; ``week_credit / week_expected`` is the week's ``ratio``."""
    kind: str = field(init=False, default="adherence")


@dataclass(frozen=True, slots=True)
class EventsDropped(Event):
    """Told to a subscriber that fell behind: ``count`` events were dropped for it."""

    count: int
    kind: str = field(init=False, default="events_dropped")


Listener = Callable[[Event], None]


class EventSubscription(ClosesOnExit):
    """An async iterator over events for one subscriber; close it (or use ``async with``)."""

    def __init__(
        self,
        accept: Callable[[Event], bool],
        size: int,
        detach: Callable[[EventSubscription], None],
    ) -> None:
        self._detach = detach
        self._accept = accept
        self._queue: collections.deque[Event] = collections.deque()
        self._size = size
        self._dropped = 0
        self._wake = asyncio.Event()
        self.closed = False

    def _offer(self, event: Event) -> None:
        if not self._accept(event):
            return
        if len(self._queue) >= self._size:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(event)
        self._wake.set()

    async def get(self) -> Event:
        while True:
            if self._dropped:
                count, self._dropped = self._dropped, 0
                return EventsDropped(count)
            if self._queue:
                return self._queue.popleft()
            if self.closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self.get()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._detach(self)
            self._wake.set()


class EventBus:
    """Publish events to synchronous listeners and bounded async subscriptions."""

    def __init__(self) -> None:
        self._listeners: Listeners[Event] = Listeners(
            log, "event listener %r failed on %s", describe=_kind_of
        )
        self._subscriptions: set[EventSubscription] = set()

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every event; returns the function that removes it."""
        return self._listeners.add(listener)

    def subscribe(
        self, accept: Callable[[Event], bool] = lambda _e: True, size: int = 256
    ) -> EventSubscription:
        subscription = EventSubscription(accept, size, self._subscriptions.discard)
        self._subscriptions.add(subscription)
        return subscription

    def publish(self, event: Event) -> None:
        self._listeners.notify(event)
        for subscription in list(self._subscriptions):
            subscription._offer(event)


def _kind_of(event: Event) -> str:
    return event.kind
