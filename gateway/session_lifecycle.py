"""A session's lifecycle: transitions, timers, the end, and the commands that pause and resume.

Every transition carries a reason (S9) and goes onto the event bus and into the recorder; once a
session has ended it never changes again. ``end`` is the one way out and is idempotent: it marks
the session ended first (so no cue, contact or link handler acts on it meanwhile), halts the
streamer without cancelling a write in flight, sends STOP through ``DeviceManager.stop_output``
(S3; a STOP the device does not confirm drops the link and is noted in the reason), lets go of
the device and publishes the final state. Timers ("cap", "contact", "link") are per session and
purpose: arming one again replaces it, and the end cancels them all.

``device_pause``/``device_resume`` send PAUSE/RESUME, or re-prime the streamer from the
device's last reported position after a lost link; ``stream_failed`` decides what a streamer
that could not write means (a fault, a safety refusal, a refused command, or a device that
stopped answering, whose link is dropped).

This module neither decides when to pause or end on a device signal (``gateway.session_signals``
does) nor who may ask (``gateway.sessions`` does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ble import protocol as p
from ble.errors import BleError, CommandRefused
from gateway.config import SafetySettings
from gateway.devices import DeviceManager
from gateway.errors import SafetyViolation
from gateway.events import EventBus, SessionNotice, SessionStateChanged
from gateway.programs import level_percent
from gateway.session import NullRecorder, Session, SessionRecorder
from gateway.states import SessionState
from gateway.tasks import TaskOwner

log = logging.getLogger(__name__)


class SessionLifecycle:
    """Transitions, timers, the end and device control of every session of one manager."""

    def __init__(
        self,
        *,
        devices: DeviceManager,
        bus: EventBus,
        tasks: TaskOwner,
        safety: SafetySettings,
        released: Callable[[Session], None],
        ended: Callable[[Session], None],
    ) -> None:
        """``released`` is called as a session lets go of its device (before its final state
        is published), ``ended`` once it has ended (after)."""
        self.devices = devices
        self.bus = bus
        self.tasks = tasks
        self.safety = safety
        self.recorder: SessionRecorder = NullRecorder()
        self._released = released
        self._ended = ended

    # --- transitions -----------------------------------------------------------------------

    def transition(self, session: Session, state: SessionState, reason: str) -> None:
        if not session.active:
            return
        session.state, session.reason = state, reason
        self.bus.publish(
            SessionStateChanged(session.id, session.address, session.owner, state, reason)
        )
        self.recorder.session_changed(session)
        self.recorder.session_event(session, "state", {"state": state.value, "reason": reason})

    def notice(self, session: Session, notice: str, detail: dict[str, Any]) -> None:
        self.bus.publish(SessionNotice(session.id, session.address, session.owner, notice, detail))
        self.recorder.session_event(session, notice, detail)

    def arm(
        self, session: Session, purpose: str, delay_s: float, callback: Callable[[], None]
    ) -> None:
        self.disarm(session, purpose)
        loop = asyncio.get_running_loop()
        session.timers[purpose] = loop.call_later(delay_s, callback)

    def disarm(self, session: Session, purpose: str) -> None:
        timer = session.timers.pop(purpose, None)
        if timer is not None:
            timer.cancel()

    def spawn_end(self, session: Session, state: SessionState, reason: str) -> None:
        if session.active:
            self.tasks.spawn(self.end(session, state, reason), name=f"end:{session.id}")

    async def end(self, session: Session, state: SessionState, reason: str) -> None:
        """Stop output (S3), then record the end with its reason (S9). Idempotent."""
        if not session.active:
            return
        # Mark it ended first so nothing else (cues, contact, link) acts on it meanwhile.
        previous = session.state
        session.state, session.reason = state, reason
        for timer in session.timers.values():
            timer.cancel()
        session.timers.clear()
        if session.streamer is not None:
            # Not a cancel: cancelling a GATT write mid-flight makes the backend drop the link
            # (ATT cannot abandon a request). The write in flight finishes, none follows it,
            # and STOP goes out right behind it.
            session.streamer.halt()
        try:
            await self.devices.stop_output(session.address)
        except BleError as exc:
            reason = f"{reason} (STOP unconfirmed, link dropped: {exc})"
        session.ended_at = time.time()
        if session.detach is not None:
            session.detach()
            session.detach = None
        self._released(session)
        session.state = previous  # let transition publish the final change
        self.transition(session, state, reason)
        session.done.set()
        self._ended(session)

    # --- device control ---------------------------------------------------------------------

    async def device_pause(self, session: Session) -> None:
        link = self.devices.get(session.address).require_link()
        await link.send(p.Pause())
        if session.streamer is not None:
            session.streamer.paused = True

    async def device_resume(self, session: Session) -> None:
        streamer = session.streamer
        assert streamer is not None
        managed = self.devices.get(session.address)
        link = managed.require_link()
        if session.needs_prime:
            streamer.link = link
            await streamer.prime(level_percent(session.level))
            session.needs_prime = False
            if streamer.done:  # the link went just as the last segment ended
                self.spawn_end(session, SessionState.COMPLETED, "program complete")
                return
            self.restart_stream(session)
        else:
            await link.send(p.Resume(ramp_ms=self.safety.soft_start_ms))
            streamer.paused = False
            streamer.wake()

    def restart_stream(self, session: Session) -> None:
        if session.stream_task is not None:
            session.stream_task.cancel()
        assert session.streamer is not None
        session.seen_running = False
        session.stream_task = self.tasks.spawn(session.streamer.run(), name=f"stream:{session.id}")

    def link_down(self, session: Session) -> bool:
        managed = self.devices.find(session.address)
        link = managed.link if managed is not None else None
        return session.link_waiting or link is None or not link.is_connected

    def stream_failed(self, session: Session, exc: Exception) -> None:
        """The streamer could not write; decide what that means for the session."""
        streamer = session.streamer
        if not session.active or session.link_waiting:
            return
        if streamer is not None and not streamer.link.is_connected:
            return  # a lost link: the link handler waits for it within the resume window
        managed = self.devices.find(session.address)
        status = managed.last_status if managed is not None else None
        fault = None
        if managed is not None and status is not None:
            fault = managed.supervisor.check_status(status.state, status.faults)
        if fault is not None:
            # Refused because of a fault: end with the fault's reason, as the samples would.
            self.spawn_end(session, SessionState.FAILED, fault)
        elif isinstance(exc, SafetyViolation):
            self.spawn_end(
                session, SessionState.FAILED, f"safety supervisor refused a command: {exc}"
            )
        elif isinstance(exc, CommandRefused):
            self.spawn_end(session, SessionState.FAILED, f"the device refused output: {exc}")
        else:
            # The device stopped answering (no ACK in time): drop the link. The device turns
            # its output off on disconnect, and the session resumes if it is back in time.
            self.tasks.spawn(self.devices.drop_link(session.address), name=f"drop:{session.id}")
