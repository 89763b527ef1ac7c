"""What waits for the broker: the latest retained payload per topic, and a bounded queue.

The bridge's listeners write here and never wait; one publisher task drains it while the broker
is connected. Retained topics keep only their latest payload (``set``: a burst of changes to a
device's state coalesces into one message, and memory is bounded by the number of topics); a
topic is taken off the to-do list only once its publish returned, so a connection lost midway
publishes it again, and ``resend_all`` marks every retained topic for a reconnect (a broker
that lost its retained messages gets them back). Transient messages (events, acks, telemetry)
wait in a queue of ``limit`` entries that drops its oldest when full, counted in ``dropped``.

This module knows no broker client: ``drain`` takes the publish function.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

Publish = Callable[[str, bytes, bool], Awaitable[None]]
"""``publish(topic, payload, retain)``; raises if the broker did not take it."""


class Outbox:
    """See the module docstring."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.retained: dict[str, bytes] = {}
        """Topic -> the latest payload it should hold on the broker."""
        self._dirty: dict[str, None] = {}
        self._transient: collections.deque[tuple[str, bytes]] = collections.deque()
        self._wake = asyncio.Event()
        self.published = 0
        self.dropped = 0

    def __len__(self) -> int:
        """Messages waiting: retained topics not yet confirmed, and transient ones."""
        return len(self._dirty) + len(self._transient)

    def set(self, topic: str, payload: bytes) -> None:
        """``topic`` should hold ``payload`` (retained); queued only if that is a change.
        An empty payload clears the topic on the broker (and is then forgotten here)."""
        if self.retained.get(topic) == payload:
            return
        self.retained[topic] = payload
        self._dirty[topic] = None
        self._wake.set()

    def first(self, topic: str) -> None:
        """Publish ``topic`` before anything else waiting (availability on a connect)."""
        if topic in self.retained:
            self._dirty = {topic: None, **self._dirty}
            self._wake.set()

    def hold(self, topic: str) -> None:
        """Do not publish ``topic`` in the next drains (it is sent last, by hand)."""
        self._dirty.pop(topic, None)

    def resend_all(self) -> None:
        self._dirty.update(dict.fromkeys(self.retained))
        self._wake.set()

    def send(self, topic: str, payload: bytes) -> None:
        """Queue a transient message, dropping (and counting) the oldest when full."""
        if len(self._transient) >= self.limit:
            self._transient.popleft()
            self.dropped += 1
        self._transient.append((topic, payload))
        self._wake.set()

    def drop(self) -> None:
        """Count a transient message that was not even queued (the broker is away)."""
        self.dropped += 1

    async def drain(self, publish: Publish, *, forever: bool = True) -> None:
        """Publish what waits, retained first; with ``forever``, wait for more and go on."""
        while True:
            while self._dirty or self._transient:
                await self._publish_next(publish)
            if not forever:
                return
            self._wake.clear()
            await self._wake.wait()

    async def _publish_next(self, publish: Publish) -> None:
        if self._dirty:
            topic = next(iter(self._dirty))
            payload = self.retained[topic]
            await publish(topic, payload, True)
            if self.retained.get(topic) == payload:  # not changed while it was being sent
                self._dirty.pop(topic, None)
                if payload == b"":
                    self.retained.pop(topic, None)  # cleared; nothing to restore on reconnect
        else:
            topic, payload = self._transient.popleft()
            await publish(topic, payload, False)
        self.published += 1
