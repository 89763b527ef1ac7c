"""One WebSocket client: its subscriptions, the tasks that feed it, heartbeats and stall detection.

Fan-out (docs/notes perf facts): a telemetry frame is serialised once by the hub
(``TelemetryFrame.json_text``) and every client is sent that text. Each subscription is a
bounded queue in the hub (``queue`` frames, oldest dropped first) drained by one pump task per
subscription, so a client that reads slowly only ever blocks its own pumps: the hub keeps
publishing, its queue overflows, and the client is sent a ``dropped`` message with the count
right where the frames are missing. Sends are serialised by one lock per connection so messages
never interleave.

Down-sampling (``rate_hz``) happens here, on the hub side, on the device's own clock
(``device_time_ms``): a frame is sent when it reaches the next slot of a 1/rate grid, so the
rate holds on average and skipped sequence numbers are expected (only ``dropped`` and ``gap``
report loss).

A connection whose send has been stuck for ``stall_s`` (a client that stopped reading and never
closed) is aborted; one that sent nothing for three heartbeats is closed with 4408.

Authorization is never decided once per connection: the connection listens to the hub's access
policy (``gateway.access``). After any change of access it takes its user afresh from the
policy; a revoked token closes it with 4401, and each subscription whose target its user may no
longer see ends with a ``subscription_ended`` message. Every frame and event is checked against
the policy as it goes out (a frame of someone else's session on a watched device, or a replayed
frame of a previous owner, never reaches the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.websockets import WebSocket

from api.errors import problem_for, unauthorized
from api.metrics import ApiMetrics
from ble.protocol import DEVICE_TIME_MOD
from gateway.access import AccessChange, AccessPolicy, Principal
from gateway.events import (
    DeviceStateChanged,
    Event,
    EventBus,
    EventsDropped,
    EventSubscription,
    PlanEvent,
    SessionNotice,
    SessionStateChanged,
)
from gateway.telemetry import Subscription, TelemetryFrame

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 8
PLAN_QUEUE = 32
"""Plan events held for a slow connection before the oldest drop (a few a day per plan)."""
CLOSE_UNAUTHENTICATED = 4401
CLOSE_HEARTBEAT_TIMEOUT = 4408
HEARTBEATS_BEFORE_TIMEOUT = 3


@dataclass(eq=False)
class LiveSubscription:
    """One ``subscribe`` of one client: a device (optionally one session on it)."""

    id: str
    device: str
    session_id: str | None
    telemetry: Subscription | None
    events: EventSubscription | None
    rate_hz: float | None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.telemetry is not None:
            self.telemetry.close()
        if self.events is not None:
            self.events.close()


class Connection:
    """State and output side of one accepted WebSocket."""

    def __init__(
        self,
        websocket: WebSocket,
        *,
        metrics: ApiMetrics,
        heartbeat_s: float,
        access: AccessPolicy,
    ) -> None:
        self.websocket = websocket
        self.metrics = metrics
        self.heartbeat_s = heartbeat_s
        self.access = access
        self.user: Principal | None = None
        """Who is connected, as the access policy knows them now; None before auth and once
        the token is revoked."""
        self.token_id: int | None = None
        self._unlisten: Callable[[], None] | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self.subscriptions: dict[str, LiveSubscription] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        self._send_started: float | None = None
        self.last_received = self._loop.time()
        self.opened_at = self.last_received
        self.closed = asyncio.Event()
        self.aborted = False
        self.evicted = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._owner: asyncio.Task[Any] | None = asyncio.current_task()
        """The task serving this connection (the endpoint's; see :meth:`abort`)."""

    # --- output -------------------------------------------------------------------------------

    async def send_bytes(self, data: bytes) -> None:
        """Send one JSON message (as a text frame) in order with every other message."""
        await self.send_text(data.decode())

    async def send_text(self, text: str) -> None:
        """Send one JSON text in order with every other message. Text frames for every
        message, so browser clients get strings; a telemetry frame's text is serialised once
        and the same string goes to every subscriber."""
        async with self._lock:
            self._send_started = self._loop.time()
            try:
                await self.websocket.send_text(text)
            finally:
                self._send_started = None

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_bytes(orjson.dumps(message))

    # --- who is connected ----------------------------------------------------------------------

    def bind(self, user: Principal) -> Principal | None:
        """The connection now speaks for ``user``'s token and follows every access change.

        Returns the user as the policy has them now: None if the token was revoked since it
        was checked (call with no await between the check and this).
        """
        self.token_id = user.token_id
        self.user = self.access.principal(self.token_id)
        self._unlisten = self.access.add_listener(self._access_changed)
        return self.user

    def _access_changed(self, _change: AccessChange) -> None:
        """Runs inside the policy's update: take the user afresh, end what they may not see."""
        if self.closed.is_set():
            return
        user = self.access.principal(self.token_id)
        self.user = user
        if user is None:
            for sub_id in list(self.subscriptions):
                self.remove(sub_id)
            self._chore(self._revoked())
            return
        for sub in list(self.subscriptions.values()):
            if sub.session_id is not None:
                visible = self.access.may_see_session_id(user, sub.session_id)
                what = f"session {sub.session_id}"
            else:
                visible = self.access.may_see_device(user, sub.device)
                what = f"device {sub.device}"
            if not visible:
                self.remove(sub.id)
                reason = f"you may no longer see {what} (its owner or your rights changed)"
                self._chore(
                    self.send(
                        {
                            "type": "subscription_ended",
                            "subscription": sub.id,
                            "device": sub.device,
                            "session_id": sub.session_id,
                            "reason": reason,
                        }
                    )
                )

    async def _revoked(self) -> None:
        revoked = unauthorized("this connection's token was revoked; pair again")
        with contextlib.suppress(TimeoutError):  # a client that does not read is cut off anyway
            async with asyncio.timeout(1.0):
                await self.send(error_message(None, revoked))
        await self._close_quietly(CLOSE_UNAUTHENTICATED, "token revoked")
        self.abort()

    def _chore(self, coro: Coroutine[Any, Any, None]) -> None:
        """A short task of this connection (a notice to send); cancelled at shutdown."""
        task = asyncio.create_task(self._quietly(coro), name="ws-chore")
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    @staticmethod
    async def _quietly(coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception:  # the client went away; the receive loop cleans up
            log.debug("a WebSocket notice was not delivered", exc_info=True)

    def watch_plans(self, bus: EventBus) -> None:
        """Send treatment-plan events (``plan_due``, ``plan_missed``, ``adherence``) to this
        connection, outside any subscription: they concern a person, not a device. Each is
        checked against the access policy as it goes out (its owner and admins only)."""
        events = bus.subscribe(lambda event: isinstance(event, PlanEvent), size=PLAN_QUEUE)
        self._chore(self._pump_plan_events(events))

    async def _pump_plan_events(self, events: EventSubscription) -> None:
        try:
            async for event in events:
                user = self.user
                if user is not None and self.access.may_see_event(user, event):
                    await self.send(event_message(event, None))
        finally:
            events.close()

    # --- lifecycle ----------------------------------------------------------------------------

    def start_heartbeat(self) -> None:
        self._heartbeat = asyncio.create_task(self._beat(), name="ws-heartbeat")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            now = self._loop.time()
            stuck = self._send_started
            if stuck is not None and now - stuck > self.heartbeat_s * HEARTBEATS_BEFORE_TIMEOUT:
                log.info("closing a WebSocket client that stopped reading")
                self.abort()
                return
            if now - self.last_received > self.heartbeat_s * HEARTBEATS_BEFORE_TIMEOUT:
                await self._close_quietly(CLOSE_HEARTBEAT_TIMEOUT, "no message for 3 heartbeats")
                self.abort()
                return
            if not self._lock.locked():  # busy sending: the client is clearly being talked to
                await self.send({"type": "ping", "ts": _now_s()})

    def abort(self) -> None:
        """Give up on the client: cancel the task that serves it (the server drops the link).

        Cancelling is the only way to interrupt a receive from a client that sends nothing;
        ``aborted`` lets that task tell this cancellation from a real one.
        """
        if self._owner is not None and not self._owner.done():
            self.aborted = True
            self._owner.cancel()

    def evict(self, code: int, reason: str) -> None:
        """Close this connection (another needs its slot) and stop serving it."""
        self.evicted = True

        async def close_then_abort() -> None:
            await self._close_quietly(code, reason)
            self.abort()

        self._chore(close_then_abort())

    async def _close_quietly(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.websocket.close(code, reason)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.shutdown()
        await self._close_quietly(code, reason)

    async def shutdown(self) -> None:
        """Stop every task of this connection and close its subscriptions. Idempotent."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        tasks: list[asyncio.Task[None]] = [
            t for t in self._chores if t is not asyncio.current_task()
        ]
        for task in tasks:
            task.cancel()
        for sub in self.subscriptions.values():
            sub.close()
            tasks.extend(sub.tasks)
        self.subscriptions.clear()
        if self._heartbeat is not None and self._heartbeat is not asyncio.current_task():
            self._heartbeat.cancel()
            tasks.append(self._heartbeat)
        for task in tasks:
            if task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.closed.set()

    # --- subscriptions ------------------------------------------------------------------------

    def next_id(self) -> str:
        return f"s{next(self._ids)}"

    def add(self, sub: LiveSubscription) -> None:
        self.subscriptions[sub.id] = sub
        if sub.telemetry is not None:
            sub.tasks.append(
                asyncio.create_task(
                    self._pump_frames(sub, sub.telemetry), name=f"ws-frames:{sub.id}"
                )
            )
        if sub.events is not None:
            sub.tasks.append(
                asyncio.create_task(self._pump_events(sub, sub.events), name=f"ws-events:{sub.id}")
            )

    def remove(self, sub_id: str) -> bool:
        sub = self.subscriptions.pop(sub_id, None)
        if sub is None:
            return False
        sub.close()
        return True

    async def _pump_frames(self, sub: LiveSubscription, frames: Subscription) -> None:
        gap_ms = 1000.0 / sub.rate_hz if sub.rate_hz else 0.0
        due: float | None = None
        access = self.access
        try:
            async for item in frames:
                if isinstance(item, TelemetryFrame):
                    if gap_ms:
                        now = item.sample.device_time_ms
                        if due is not None:
                            ahead = (now - due) % DEVICE_TIME_MOD
                            if ahead >= DEVICE_TIME_MOD // 2:  # now < due (wrap-aware)
                                continue
                            due = due + gap_ms if ahead < gap_ms else now + gap_ms
                        else:
                            due = now + gap_ms
                        due %= DEVICE_TIME_MOD
                    # Every frame that goes out is checked (after the rate gate: only those).
                    user = self.user
                    if user is None or not access.may_see_frame(user, item.device, item.session_id):
                        continue
                    await self.send_text(item.json_text)
                else:  # a Dropped or Gap marker, told with the subscription it concerns
                    marker = item.as_dict()
                    kind = marker.pop("type")
                    await self.send(
                        {"type": kind, "subscription": sub.id, "device": sub.device, **marker}
                    )
        except Exception:
            # The client went away mid-send; the receive loop sees the disconnect and cleans up.
            log.debug("frame pump %s ended", sub.id, exc_info=True)

    async def _pump_events(self, sub: LiveSubscription, events: EventSubscription) -> None:
        try:
            async for event in events:
                user = self.user
                if user is None or not self.access.may_see_event(user, event):
                    continue
                await self.send(event_message(event, sub.id))
        except Exception:
            log.debug("event pump %s ended", sub.id, exc_info=True)


def error_message(request_id: str | None, exc: BaseException) -> dict[str, Any]:
    """The ``error`` message answering a request (or none: ``request_id`` None)."""
    problem, _ = problem_for(exc)
    return {"type": "error", "id": request_id, "problem": problem.model_dump(exclude_none=True)}


def event_message(event: Event, subscription: str | None) -> dict[str, Any]:
    """A bus event as a WebSocket message: ``type`` is the event's kind."""
    data = event.as_dict()
    kind = data.pop("kind")
    data.pop("owner", None)  # an internal id string; clients know whose session it is
    return {"type": kind, "subscription": subscription, **data}


def event_filter(*, device: str, session_id: str | None) -> Callable[[Event], bool]:
    """Events one subscription is about: its device's state, and its session (or every session
    on its device). Runs inside ``publish``: quick. Who may see each event is the access
    policy's call, made as the event goes out (``Connection._pump_events``)."""

    def accept(event: Event) -> bool:
        if isinstance(event, DeviceStateChanged):
            return event.address.upper() == device
        if isinstance(event, SessionStateChanged | SessionNotice):
            if session_id is not None:
                return event.session_id == session_id
            return event.address.upper() == device
        return isinstance(event, EventsDropped)

    return accept


def _now_s() -> float:
    return round(time.time(), 3)
