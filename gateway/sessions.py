"""Treatment sessions: one state machine per session, one active session per device.

States: pending -> running <-> paused -> completed | stopped | failed | interrupted. Every
transition carries a reason (S9) and is published on the event bus and handed to the recorder.

A session owns its device while active (S8): only the owner or an admin may control it; anyone
else may watch. It feeds the scheduler from telemetry, raises "move" cues per step, pauses on
contact loss and resumes with a ramp when contact returns within the window (S5), waits for a
lost link to come back within the resume window (else ends as interrupted), stops on any fault
the safety supervisor reports (S6), and stops at the session-length cap (S10).

A personal cap limits, it does not refuse (S1): ``start`` validates the program against the hub,
zone and device caps, then plays it through ``limit_program``, with every step above the user's
cap lowered to it. Such a session has ``limited_by_cap`` set and publishes one
"limited_by_cap" notice as it starts; its ``Caps`` still carry the user cap, so the compiled
segments and the write guard are checked against it too.

STOP never waits on the scheduler (S3): ending a session halts the streamer (no new write; one
already in flight completes, since cancelling a GATT write mid-way would drop the link) and sends
STOP through ``DeviceManager.stop_output``, which drops the link if the device does not confirm
within a second. A fault, a safety refusal or a lost lease fails the session; a device that
stops answering has its link dropped and is resumed like any lost link.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ble import protocol as p
from ble.errors import BleError, CommandRefused
from gateway.config import SafetySettings
from gateway.devices import DeviceManager, ManagedDevice
from gateway.errors import Conflict, DeviceUnavailable, Forbidden, NotFound, SafetyViolation
from gateway.events import EventBus, SessionNotice, SessionStateChanged
from gateway.programs import Caps, Program, level_percent, limit_program, validate_program
from gateway.safety import session_cap_s
from gateway.scheduler import Streamer, compile_program
from gateway.tasks import TaskOwner
from gateway.telemetry import SessionFigures, TelemetryFrame, TelemetryHub

log = logging.getLogger(__name__)


class SessionState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


TERMINAL = frozenset(
    {SessionState.COMPLETED, SessionState.STOPPED, SessionState.FAILED, SessionState.INTERRUPTED}
)


class SessionRecorder(Protocol):
    """Where sessions are persisted (S9).

    ``opened`` returns once a new session's record is durable and raises (a GatewayError) if it
    cannot be: a session that could go unrecorded never starts. Every other method must return
    at once (no I/O on the loop: the stop path calls them).
    """

    async def opened(self, session: Session) -> None: ...
    def session_changed(self, session: Session) -> None: ...
    def session_event(self, session: Session, kind: str, detail: dict[str, Any]) -> None: ...
    def telemetry(self, session: Session, frame: TelemetryFrame) -> None: ...


class NullRecorder:
    """Records nothing (tests of the core without storage)."""

    async def opened(self, session: Session) -> None:
        pass

    def session_changed(self, session: Session) -> None:
        pass

    def session_event(self, session: Session, kind: str, detail: dict[str, Any]) -> None:
        pass

    def telemetry(self, session: Session, frame: TelemetryFrame) -> None:
        pass


@dataclass(eq=False)
class Session:
    """One treatment session and everything needed to drive it."""

    id: str
    owner: str
    address: str
    program: Program
    """The program as it plays: steps above the user cap already lowered to it."""
    level: int
    caps: Caps
    idempotency_key: str | None = None
    limited_steps: tuple[int, ...] = ()
    """Indexes of the steps ``limit_program`` lowered to the user cap (S1)."""
    state: SessionState = SessionState.PENDING
    reason: str = "created"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    figures: SessionFigures = field(default_factory=SessionFigures)
    streamer: Streamer | None = None
    # internal control state
    contact_paused: bool = False
    link_waiting: bool = False
    needs_prime: bool = False
    seen_running: bool = False
    last_step: int = -1
    last_cue_s: int = 0
    last_zone: p.Zone | None = None
    resume_after_link: bool = False
    low_battery_told: bool = False
    stream_task: asyncio.Task[None] | None = None
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    """Pending deadlines by purpose ("cap", "contact", "link"): re-arming one replaces it."""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def active(self) -> bool:
        return self.state not in TERMINAL

    @property
    def limited_by_cap(self) -> bool:
        """True if the user's cap lowered at least one step of the program."""
        return bool(self.limited_steps)

    @property
    def position_s(self) -> float:
        return (self.streamer.position_ms if self.streamer else 0) / 1000

    def public(self) -> dict[str, Any]:
        """A JSON-ready summary (what the API and the WebSocket show)."""
        return {
            "id": self.id,
            "owner": self.owner,
            "device": self.address,
            "program": self.program.slug,
            "level": self.level,
            "state": self.state.value,
            "reason": self.reason,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "position_s": self.position_s,
            "planned_s": self.program.duration_s,
            "limited_by_cap": self.limited_by_cap,
            "figures": self.figures.snapshot(),
        }


RECENT_ENDED = 200
"""Ended sessions kept in memory for ``get``; older ones are only in storage."""


class SessionManager:
    """Starts and controls sessions; the only code that drives the scheduler."""

    def __init__(
        self,
        *,
        devices: DeviceManager,
        hub: TelemetryHub,
        bus: EventBus,
        tasks: TaskOwner,
        safety: SafetySettings,
        recorder: SessionRecorder | None = None,
    ) -> None:
        self.devices = devices
        self.hub = hub
        self.bus = bus
        self.tasks = tasks
        self.safety = safety
        self.recorder: SessionRecorder = recorder or NullRecorder()
        self.session_cap_s = session_cap_s(safety)
        """S10: the longest a session may last, paused time included (from the settings)."""
        self.sessions: dict[str, Session] = {}
        """Active sessions and the most recent ended ones (``RECENT_ENDED`` at most)."""
        self._by_device: dict[str, Session] = {}
        self._by_key: dict[tuple[str, str], Session] = {}
        self._remove_listener = hub.add_listener(self._on_frame)

    # --- queries ---------------------------------------------------------------------------

    def get(self, session_id: str) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise NotFound(f"no active or recent session {session_id}") from None

    def active_on(self, address: str) -> Session | None:
        return self._by_device.get(address.upper())

    # --- commands --------------------------------------------------------------------------

    async def start(
        self,
        *,
        owner: str,
        address: str,
        program: Program,
        level: int,
        consented: bool,
        user_cap_ua: int | None = None,
        idempotency_key: str | None = None,
    ) -> Session:
        """Validate, limit to the user's cap, take the device and start output (ramped).

        Raises InvalidProgram for a program above the hub, zone or device caps (nothing is
        sent); a program above ``user_cap_ua`` runs with those steps lowered to it. Returns once
        running.
        """
        if idempotency_key is not None:
            previous = self._by_key.get((owner, idempotency_key))
            if previous is not None:
                return previous
        if not consented:
            raise Forbidden(
                "accept the contraindication notice before a first session "
                "(POST /api/v1/me/consent)"
            )
        percent = level_percent(level)
        managed = self.devices.get(address)
        busy = self._by_device.get(managed.address)
        if busy is not None:
            raise Conflict(f"device {managed.address} already runs session {busy.id}")
        link = managed.require_link()
        battery = managed.battery_pct
        if battery is not None and battery < self.safety.min_start_battery_pct:
            raise DeviceUnavailable(
                f"device {managed.address} has {battery} % battery; a session starts at "
                f"{self.safety.min_start_battery_pct} % or more: charge it first"
            )
        limits = link.limits
        assert limits is not None  # set by every successful connect
        caps = Caps(self.safety, device_hard_cap_ua=limits.hard_cap_ua, user_cap_ua=user_cap_ua)
        validate_program(program, caps, limits)
        program, limited_steps = limit_program(program, user_cap_ua)
        segments = compile_program(program, limits, caps=caps)
        try:
            # A fault latched by an earlier session holds the device in FAULT; starting again
            # asks the firmware to clear it, which it does only once every cause is gone. Done
            # before the session takes the device, so samples from before the clear cannot
            # fail it.
            await link.send(p.ClearFault())
        except BleError as exc:
            raise DeviceUnavailable(
                f"device {managed.address} cannot start a session: {exc}. Unplug the charger "
                "or let the device cool down, then try again"
            ) from exc
        if managed.address in self._by_device:  # taken while we waited for the device
            raise Conflict(f"device {managed.address} already runs a session")
        session = Session(
            id=str(uuid.uuid4()),
            owner=owner,
            address=managed.address,
            program=program,
            level=level,
            caps=caps,
            idempotency_key=idempotency_key,
            limited_steps=tuple(limited_steps),
        )
        session.streamer = Streamer(
            link,
            segments,
            soft_start_ms=self.safety.soft_start_ms,
            on_error=lambda why: self._stream_failed(session, why),
        )
        self.sessions[session.id] = session
        self._by_device[managed.address] = session
        if idempotency_key is not None:
            self._by_key[(owner, idempotency_key)] = session
        try:
            # S9: recorded durably before any output, or not started at all.
            await self.recorder.opened(session)
        except BaseException:
            self._forget_unstarted(session)
            raise
        if session.limited_by_cap:
            self._notice(
                session, "limited_by_cap", {"cap_ua": user_cap_ua, "steps": list(limited_steps)}
            )
        self._attach(session, managed)
        try:
            await session.streamer.prime(percent)
        except (BleError, SafetyViolation) as exc:
            await self._end(session, SessionState.FAILED, f"could not start: {exc}")
            raise DeviceUnavailable(f"device {managed.address} did not start: {exc}") from exc
        if not session.active:  # a fault or a safety refusal ended it while it started
            raise DeviceUnavailable(f"device {managed.address} did not start: {session.reason}")
        session.started_at = time.time()
        self._transition(session, SessionState.RUNNING, "started")
        session.stream_task = self.tasks.spawn(session.streamer.run(), name=f"stream:{session.id}")
        self._arm(
            session,
            "cap",
            self.session_cap_s,
            lambda: self._spawn_end(session, SessionState.STOPPED, "session length cap reached"),
        )
        return session

    def _forget_unstarted(self, session: Session) -> None:
        """Undo the bookkeeping of a session that never started (nothing was sent for it)."""
        self.sessions.pop(session.id, None)
        self._by_device.pop(session.address, None)
        if session.idempotency_key is not None:
            self._by_key.pop((session.owner, session.idempotency_key), None)

    def _authorize(self, session: Session, actor: str, is_admin: bool) -> None:
        if actor != session.owner and not is_admin:
            raise Forbidden("only the session's owner or an admin may control it; you may watch")

    async def stop(
        self, session_id: str, *, actor: str, is_admin: bool = False, reason: str = ""
    ) -> Session:
        session = self.get(session_id)
        self._authorize(session, actor, is_admin)
        if session.active:
            await self._end(session, SessionState.STOPPED, reason or f"stopped by {actor}")
        return session

    async def pause(self, session_id: str, *, actor: str, is_admin: bool = False) -> Session:
        session = self.get(session_id)
        self._authorize(session, actor, is_admin)
        if session.state is SessionState.PAUSED:
            if session.contact_paused:
                # The person's pause outlives the contact pause: contact coming back must not
                # restart output they asked to hold, and the contact window no longer applies.
                session.contact_paused = False
                self._disarm(session, "contact")
                self._transition(session, SessionState.PAUSED, f"paused by {actor}")
            return session
        if session.state is not SessionState.RUNNING:
            raise Conflict(f"session is {session.state.value}; only a running session pauses")
        try:
            await self._device_pause(session)
        except BleError as exc:
            raise DeviceUnavailable(f"device {session.address} did not pause: {exc}") from exc
        self._transition(session, SessionState.PAUSED, f"paused by {actor}")
        return session

    async def resume(self, session_id: str, *, actor: str, is_admin: bool = False) -> Session:
        session = self.get(session_id)
        self._authorize(session, actor, is_admin)
        if session.state is SessionState.RUNNING:
            return session
        if session.state is not SessionState.PAUSED or session.link_waiting:
            raise Conflict(f"session is {session.state.value} ({session.reason}); cannot resume")
        if session.contact_paused:
            raise Conflict("no skin contact: put the device back on the skin to resume")
        try:
            await self._device_resume(session)
        except BleError as exc:
            raise DeviceUnavailable(f"device {session.address} did not resume: {exc}") from exc
        self._transition(session, SessionState.RUNNING, f"resumed by {actor}")
        return session

    async def set_level(
        self, session_id: str, level: int, *, actor: str, is_admin: bool = False
    ) -> Session:
        session = self.get(session_id)
        self._authorize(session, actor, is_admin)
        if not session.active:
            raise Conflict(f"session is {session.state.value}")
        percent = level_percent(level)
        link = self.devices.get(session.address).require_link()
        # Increases ramp over the soft start; the device applies decreases at once (S2).
        try:
            await link.send(p.SetIntensity(percent=percent, ramp_ms=self.safety.soft_start_ms))
        except BleError as exc:
            raise DeviceUnavailable(f"device {session.address} did not change: {exc}") from exc
        previous, session.level = session.level, level
        self._notice(session, "intensity", {"from": previous, "to": level})
        self.recorder.session_changed(session)
        return session

    async def close(self) -> None:
        """End every active session (gateway shutting down); devices stop on their own too."""
        for session in list(self._by_device.values()):
            await self._end(session, SessionState.INTERRUPTED, "gateway shutting down")
        self._remove_listener()

    # --- device control ---------------------------------------------------------------------

    async def _device_pause(self, session: Session) -> None:
        link = self.devices.get(session.address).require_link()
        await link.send(p.Pause())
        if session.streamer is not None:
            session.streamer.paused = True

    async def _device_resume(self, session: Session) -> None:
        streamer = session.streamer
        assert streamer is not None
        managed = self.devices.get(session.address)
        link = managed.require_link()
        if session.needs_prime:
            streamer.link = link
            await streamer.prime(level_percent(session.level))
            session.needs_prime = False
            if streamer.done:  # the link went just as the last segment ended
                self._spawn_end(session, SessionState.COMPLETED, "program complete")
                return
            self._restart_stream(session)
        else:
            await link.send(p.Resume(ramp_ms=self.safety.soft_start_ms))
            streamer.paused = False
            streamer.wake()

    def _restart_stream(self, session: Session) -> None:
        if session.stream_task is not None:
            session.stream_task.cancel()
        assert session.streamer is not None
        session.seen_running = False
        session.stream_task = self.tasks.spawn(session.streamer.run(), name=f"stream:{session.id}")

    # --- wiring to the device ---------------------------------------------------------------

    def _attach(self, session: Session, managed: ManagedDevice) -> None:
        managed.supervisor.arm(
            session.caps,
            on_violation=lambda why: self._spawn_end(
                session, SessionState.FAILED, f"safety supervisor refused a command: {why}"
            ),
        )
        managed.sample_handler = lambda sample: self._on_sample(session, sample)
        managed.link_listeners.append(lambda up: self._on_link(session, up))
        managed.status_handler = lambda status: self._on_status(session, managed, status)

    def _detach(self, session: Session) -> None:
        managed = self.devices.devices.get(session.address)
        if managed is None:
            return
        managed.supervisor.disarm()
        managed.sample_handler = None
        managed.status_handler = None
        managed.link_listeners.clear()

    def _on_status(self, session: Session, managed: ManagedDevice, status: p.DeviceStatus) -> None:
        """A status notification (sent on every device state change) may report a fault first."""
        if session.active:
            fault = managed.supervisor.check_status(status.state, status.faults)
            if fault is not None:
                self._spawn_end(session, SessionState.FAILED, fault)

    def _on_sample(
        self, session: Session, sample: p.TelemetrySample
    ) -> tuple[str | None, p.Zone | None]:
        """Hot path, inside the BLE callback: update position, check safety, no awaits."""
        streamer = session.streamer
        if streamer is None or not session.active:
            return None, None
        streamer.observe(sample)
        zone = streamer.zone_of(sample.segment_id)
        if zone is not None:
            session.last_zone = zone
        elif sample.current_mean_ua:
            # The sample's mean covers the interval before it: the tail of the last segment
            # (the device reports no segment once its queue ran dry). Charge it there.
            zone = session.last_zone
        managed = self.devices.devices.get(session.address)
        if managed is not None:
            fault = managed.supervisor.check_sample(sample, zone)
            if fault is not None:
                self._spawn_end(session, SessionState.FAILED, fault)
                return session.id, zone
        if sample.state is p.DeviceState.RUNNING:
            session.seen_running = True
        if self._check_battery(session, sample):
            return session.id, zone
        self._check_contact(session, sample)
        if session.state is SessionState.RUNNING and session.seen_running:
            if sample.state is p.DeviceState.IDLE:
                self._device_went_idle(session, streamer, sample)
            else:
                self._cues(session, streamer.position_ms)
        return session.id, zone

    def _check_battery(self, session: Session, sample: p.TelemetrySample) -> bool:
        """Tell the person once when the battery runs low; end the session when it is empty
        (the device can no longer deliver). True when the session is ending."""
        if sample.battery_pct <= self.safety.empty_battery_pct:
            self._spawn_end(
                session,
                SessionState.STOPPED,
                f"battery empty ({sample.battery_pct} %): the device cannot deliver; charge it "
                "and start again",
            )
            return True
        low = bool(sample.faults & p.FaultFlags.LOW_BATTERY)
        if low and not session.low_battery_told:
            session.low_battery_told = True
            self._notice(session, "low_battery", {"battery_pct": sample.battery_pct})
        elif not low:
            session.low_battery_told = False  # charged meanwhile: a new low is told again
        return False

    def _device_went_idle(
        self, session: Session, streamer: Streamer, sample: p.TelemetrySample
    ) -> None:
        """The device stopped by itself while the session runs: find out why."""
        if sample.faults & p.FaultFlags.LEASE_EXPIRED:
            # Checked first: a lease that expired after the last segment was sent is not a
            # completed program.
            self._spawn_end(
                session,
                SessionState.FAILED,
                "device lease expired: no command reached it in time "
                "(the hub or the radio stalled)",
            )
        elif streamer.all_sent():
            streamer.device_idle()
            self._spawn_end(session, SessionState.COMPLETED, "program complete")
        else:
            self._spawn_end(
                session,
                SessionState.FAILED,
                "the device ran out of queued output before the program ended",
            )

    def _check_contact(self, session: Session, sample: p.TelemetrySample) -> None:
        if sample.contact_quality == 0 and session.state is SessionState.RUNNING:
            session.contact_paused = True
            self._transition(session, SessionState.PAUSED, "contact lost")
            self._notice(session, "contact_lost", {})
            self.tasks.spawn(self._contact_pause(session), name=f"contact:{session.id}")
        elif sample.contact_quality > 0 and session.contact_paused:
            session.contact_paused = False
            self._notice(session, "contact_restored", {})
            self.tasks.spawn(self._contact_resume(session), name=f"contact:{session.id}")

    async def _contact_pause(self, session: Session) -> None:
        # The window starts at the loss, not once PAUSE is acknowledged.
        window = self.safety.contact_resume_window_s
        self._arm(session, "contact", window, lambda: self._contact_timeout(session))
        try:
            await self._device_pause(session)
        except (BleError, DeviceUnavailable) as exc:
            # The device gates output on contact by itself; the window still ends the session.
            log.warning("pausing %s on contact loss failed: %s", session.id, exc)

    def _contact_timeout(self, session: Session) -> None:
        if session.contact_paused and session.active:
            window = self.safety.contact_resume_window_s
            self._spawn_end(
                session, SessionState.STOPPED, f"contact lost for more than {window:g} s"
            )

    async def _contact_resume(self, session: Session) -> None:
        self._disarm(session, "contact")
        if not session.active or session.state is not SessionState.PAUSED or session.link_waiting:
            return
        try:
            await self._device_resume(session)
        except (BleError, DeviceUnavailable, SafetyViolation) as exc:
            if self._link_down(session):
                return  # the link handler takes over, with its own resume window
            await self._end(session, SessionState.FAILED, f"could not resume: {exc}")
            return
        self._transition(session, SessionState.RUNNING, "contact restored")

    def _on_link(self, session: Session, up: bool) -> None:
        if not session.active:
            return
        if not up:
            if session.stream_task is not None:
                session.stream_task.cancel()
            was_running = session.state is SessionState.RUNNING or session.contact_paused
            session.link_waiting = True
            session.needs_prime = True
            session.contact_paused = False
            self._disarm(session, "contact")
            self._transition(session, SessionState.PAUSED, "link lost; reconnecting")
            session.resume_after_link = was_running
            window = self.safety.link_resume_window_s
            self._arm(session, "link", window, lambda: self._link_timeout(session))
            return
        if session.link_waiting:
            session.link_waiting = False
            self._disarm(session, "link")
            if session.resume_after_link:
                self.tasks.spawn(self._link_resume(session), name=f"relink:{session.id}")
            else:
                self._transition(session, SessionState.PAUSED, "link restored; paused")

    async def _link_resume(self, session: Session) -> None:
        try:
            await self._device_resume(session)
        except (BleError, DeviceUnavailable, SafetyViolation) as exc:
            if self._link_down(session):
                return  # lost again while resuming: a new window is running
            await self._end(
                session, SessionState.INTERRUPTED, f"could not resume after link loss: {exc}"
            )
            return
        self._transition(session, SessionState.RUNNING, "link restored; resumed")

    def _link_timeout(self, session: Session) -> None:
        if session.link_waiting and session.active:
            window = self.safety.link_resume_window_s
            self._spawn_end(
                session, SessionState.INTERRUPTED, f"link lost for more than {window:g} s"
            )

    def _on_frame(self, frame: TelemetryFrame) -> None:
        if frame.session_id is None:
            return
        session = self.sessions.get(frame.session_id)
        if session is None:
            return
        for warning in session.figures.update(frame):
            self._notice(session, "apply_gel", {"message": str(warning)})
        self.recorder.telemetry(session, frame)

    def _cues(self, session: Session, position_ms: int) -> None:
        offset = 0
        steps = session.program.steps
        index = 0
        while index < len(steps) and position_ms >= offset + steps[index].duration_s * 1000:
            offset += steps[index].duration_s * 1000
            index += 1
        if index >= len(steps):
            return
        step = steps[index]
        if index != session.last_step:
            session.last_step, session.last_cue_s = index, 0
            self._notice(session, "move", {"step": index, "zone": step.zone, "cue": "next zone"})
            return
        if step.move_cue_s:
            cue = (position_ms - offset) // 1000 // step.move_cue_s
            if cue > session.last_cue_s:
                session.last_cue_s = cue
                self._notice(session, "move", {"step": index, "zone": step.zone, "cue": "glide"})

    # --- transitions -----------------------------------------------------------------------

    def _transition(self, session: Session, state: SessionState, reason: str) -> None:
        if not session.active:
            return
        session.state, session.reason = state, reason
        self.bus.publish(
            SessionStateChanged(session.id, session.address, session.owner, state.value, reason)
        )
        self.recorder.session_changed(session)
        self.recorder.session_event(session, "state", {"state": state.value, "reason": reason})

    def _notice(self, session: Session, notice: str, detail: dict[str, Any]) -> None:
        self.bus.publish(SessionNotice(session.id, session.address, session.owner, notice, detail))
        self.recorder.session_event(session, notice, detail)

    def _arm(
        self, session: Session, purpose: str, delay_s: float, callback: Callable[[], None]
    ) -> None:
        self._disarm(session, purpose)
        loop = asyncio.get_running_loop()
        session.timers[purpose] = loop.call_later(delay_s, callback)

    def _disarm(self, session: Session, purpose: str) -> None:
        timer = session.timers.pop(purpose, None)
        if timer is not None:
            timer.cancel()

    def _link_down(self, session: Session) -> bool:
        managed = self.devices.devices.get(session.address)
        link = managed.link if managed is not None else None
        return session.link_waiting or link is None or not link.is_connected

    def _stream_failed(self, session: Session, exc: Exception) -> None:
        """The streamer could not write; decide what that means for the session."""
        streamer = session.streamer
        if not session.active or session.link_waiting:
            return
        if streamer is not None and not streamer.link.is_connected:
            return  # a lost link: the link handler waits for it within the resume window
        managed = self.devices.devices.get(session.address)
        status = managed.last_status if managed is not None else None
        fault = None
        if managed is not None and status is not None:
            fault = managed.supervisor.check_status(status.state, status.faults)
        if fault is not None:
            # Refused because of a fault: end with the fault's reason, as the samples would.
            self._spawn_end(session, SessionState.FAILED, fault)
        elif isinstance(exc, SafetyViolation):
            self._spawn_end(
                session, SessionState.FAILED, f"safety supervisor refused a command: {exc}"
            )
        elif isinstance(exc, CommandRefused):
            self._spawn_end(session, SessionState.FAILED, f"the device refused output: {exc}")
        else:
            # The device stopped answering (no ACK in time): drop the link. The device turns
            # its output off on disconnect, and the session resumes if it is back in time.
            self.tasks.spawn(self.devices.drop_link(session.address), name=f"drop:{session.id}")

    def _spawn_end(self, session: Session, state: SessionState, reason: str) -> None:
        if session.active:
            self.tasks.spawn(self._end(session, state, reason), name=f"end:{session.id}")

    async def _end(self, session: Session, state: SessionState, reason: str) -> None:
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
        self._detach(session)
        self._by_device.pop(session.address, None)
        session.state = previous  # let _transition publish the final change
        self._transition(session, state, reason)
        session.done.set()
        self._forget_old()

    def _forget_old(self) -> None:
        ended = [s for s in self.sessions.values() if not s.active]
        for old in ended[: max(0, len(ended) - RECENT_ENDED)]:  # dicts keep insertion order
            del self.sessions[old.id]
            if old.idempotency_key is not None:
                self._by_key.pop((old.owner, old.idempotency_key), None)
