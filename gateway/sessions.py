"""Treatment sessions: the session manager, one active session per device.

States: pending -> running <-> paused -> completed | stopped | failed | interrupted. Every
transition carries a reason (S9) and is published on the event bus and handed to the recorder
(``gateway.session_lifecycle``).

A session owns its device while active (S8): only the owner or an admin may control it; anyone
else may watch. Consent (S7) comes before a start. While it runs, its device's signals drive
it (``gateway.session_signals``): the scheduler follows the telemetry, "move" cues follow the
steps, contact loss pauses and its return within the window resumes with a ramp (S5), a lost
link is waited for within the resume window (else the session ends as interrupted), any fault
the safety supervisor reports stops it (S6), and it stops at the session-length cap (S10).

A personal cap limits, it does not refuse (S1): ``start`` validates the program against the hub,
zone and device caps, then plays it through ``limit_program``, with every step above the user's
cap lowered to it. Such a session has ``limited_by_cap`` set and publishes one
"limited_by_cap" notice as it starts; its ``Caps`` still carry the user cap, so the compiled
segments and the write guard are checked against it too.

Idempotency lives here, for every caller: a start with an Idempotency-Key answers the session
the same owner already started with that key instead of starting another, whether that start
is still under way (the duplicate waits for it), held in memory, or, through ``history``
(``StartHistory``, storage), from before the hub's last restart.

STOP never waits on the scheduler (S3): ending a session halts the streamer (no new write; one
already in flight completes, since cancelling a GATT write mid-way would drop the link) and sends
STOP through ``DeviceManager.stop_output``, which drops the link if the device does not confirm
within a second. A fault, a safety refusal or a lost lease fails the session; a device that
stops answering has its link dropped and is resumed like any lost link.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Protocol

from ble import protocol as p
from ble.errors import BleError
from ble.link import DeviceLink
from gateway.config import SafetySettings
from gateway.devices import DeviceManager, ManagedDevice
from gateway.errors import (
    Conflict,
    DeviceUnavailable,
    Forbidden,
    NotFound,
    SafetyViolation,
    StorageUnavailable,
)
from gateway.events import EventBus
from gateway.programs import Caps, Program, level_percent, limit_program, validate_program
from gateway.safety import session_cap_s
from gateway.scheduler import Segment, Streamer, compile_program
from gateway.session import Session, SessionRecorder
from gateway.session_lifecycle import SessionLifecycle
from gateway.session_signals import SessionSignals
from gateway.states import SessionState
from gateway.tasks import TaskOwner
from gateway.telemetry import TelemetryFrame, TelemetryHub

if TYPE_CHECKING:
    from gateway.storage.models import SessionRecord

log = logging.getLogger(__name__)

RECENT_ENDED = 200
"""Ended sessions kept in memory for ``get``; older ones are only in storage."""


class StartHistory(Protocol):
    """Where Idempotency-Keys used before this run are remembered (storage).

    ``started_with`` answers the stored session the owner started with the key, or None; it
    raises a GatewayError when storage cannot answer in time.
    """

    async def started_with(self, owner: str, key: str) -> SessionRecord | None: ...


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
        history: StartHistory | None = None,
    ) -> None:
        self.devices = devices
        self.hub = hub
        self.bus = bus
        self.tasks = tasks
        self.safety = safety
        self.history = history
        """Idempotency-Keys of earlier runs; None: only this run's are known."""
        self.session_cap_s = session_cap_s(safety)
        """S10: the longest a session may last, paused time included (from the settings)."""
        self.life = SessionLifecycle(
            devices=devices,
            bus=bus,
            tasks=tasks,
            safety=safety,
            released=self._released,
            ended=self._ended,
        )
        if recorder is not None:
            self.life.recorder = recorder
        self.signals = SessionSignals(self.life, tasks=tasks, safety=safety)
        self._sessions: dict[str, Session] = {}
        """Active sessions and the most recent ended ones (``RECENT_ENDED`` at most)."""
        self._by_device: dict[str, Session] = {}
        self._by_key: dict[tuple[str, str], Session] = {}
        self._starting: dict[tuple[str, str], asyncio.Future[Session]] = {}
        """Starts under way with an Idempotency-Key, by (owner, key)."""
        self._remove_listener = hub.add_listener(self._on_frame)

    @property
    def recorder(self) -> SessionRecorder:
        """Where sessions are recorded (S9); the runtime sets it once storage is open."""
        return self.life.recorder

    @recorder.setter
    def recorder(self, recorder: SessionRecorder) -> None:
        self.life.recorder = recorder

    # --- queries ---------------------------------------------------------------------------

    def get(self, session_id: str) -> Session:
        """An active or recent session; NotFound if this hub holds none by that id."""
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"no active or recent session {session_id}")
        return session

    def find(self, session_id: str) -> Session | None:
        """An active or recent session, or None."""
        return self._sessions.get(session_id)

    def all(self) -> list[Session]:
        """Active sessions and the most recent ended ones, oldest first (a copy)."""
        return list(self._sessions.values())

    def active_on(self, address: str) -> Session | None:
        return self._by_device.get(address.upper())

    async def replay(self, owner: str, key: str) -> Session | SessionRecord | None:
        """The session ``owner`` already started with Idempotency-Key ``key``, or None.

        A start still under way is waited for (Conflict if it was abandoned); then this hub's
        sessions in memory; then ``history`` (a storage that cannot answer in time is logged
        and taken as "none": a session must still start while storage is away).
        """
        starting = self._starting.get((owner, key))
        if starting is not None:
            return await _first_result(starting)
        live = self._by_key.get((owner, key))
        if live is not None:
            return live
        if self.history is None:
            return None
        try:
            return await self.history.started_with(owner, key)
        except StorageUnavailable as exc:
            log.warning("Idempotency-Key checked against this run's sessions only: %s", exc)
            return None

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
        running. With an ``idempotency_key`` see ``start_or_replay``.
        """
        session, _started = await self.start_or_replay(
            owner=owner,
            address=address,
            program=program,
            level=level,
            consented=consented,
            user_cap_ua=user_cap_ua,
            idempotency_key=idempotency_key,
        )
        return session

    async def start_or_replay(
        self,
        *,
        owner: str,
        address: str,
        program: Program,
        level: int,
        consented: bool,
        user_cap_ua: int | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Session, bool]:
        """``start``, and whether this call started the session (True) or answered the one the
        same owner started with the same ``idempotency_key`` (False): held in memory, or still
        starting (waited for; its failure is this call's failure too)."""
        args = (owner, address, program, level, consented, user_cap_ua, idempotency_key)
        if idempotency_key is None:
            return await self._start(*args), True
        key = (owner, idempotency_key)
        # No await between these looks and the registration below: a duplicate either waits
        # for the start under way or finds the session it made.
        starting = self._starting.get(key)
        if starting is not None:
            return await _first_result(starting), False
        previous = self._by_key.get(key)
        if previous is not None:
            return previous, False
        future = self._starting[key] = asyncio.get_running_loop().create_future()
        try:
            session = await self._start(*args)
            future.set_result(session)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark it retrieved: no warning when no duplicate was waiting
            raise
        finally:
            future.cancel()  # a no-op once it has a result; tells waiters if we were cancelled
            self._starting.pop(key, None)
        return session, True

    async def _start(
        self,
        owner: str,
        address: str,
        program: Program,
        level: int,
        consented: bool,
        user_cap_ua: int | None,
        idempotency_key: str | None,
    ) -> Session:
        if not consented:
            raise Forbidden(
                "accept the contraindication notice before a first session "
                "(POST /api/v1/me/consent)"
            )
        percent = level_percent(level)
        managed = self.devices.get(address)
        link = self._startable(managed)
        limits = link.limits
        assert limits is not None  # set by every successful connect
        caps = Caps(self.safety, device_hard_cap_ua=limits.hard_cap_ua, user_cap_ua=user_cap_ua)
        validate_program(program, caps, limits)
        program, limited_steps = limit_program(program, user_cap_ua)
        segments = compile_program(program, limits, caps=caps)
        await self._clear_fault(managed, link)
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
        await self._open(session, link, segments)
        if session.limited_by_cap:
            self.life.notice(
                session, "limited_by_cap", {"cap_ua": user_cap_ua, "steps": list(limited_steps)}
            )
        detach = self.signals.attach(session, managed)
        release = self.devices.hold_full_rate(managed)

        def let_go() -> None:
            detach()
            release()

        session.detach = let_go
        # The rate goes up before the first pulse: the session's first samples (contact,
        # current) come at the full rate, never at an idle device's.
        await self.devices.rate_settled(managed)
        await self._run(session, percent)
        return session

    def _startable(self, managed: ManagedDevice) -> DeviceLink:
        """The device's link if a session may start on it now: free (S8), connected, charged."""
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
        return link

    async def _clear_fault(self, managed: ManagedDevice, link: DeviceLink) -> None:
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

    async def _open(
        self, session: Session, link: DeviceLink, segments: tuple[Segment, ...]
    ) -> None:
        """Take the device and record the session durably (S9), or undo both and raise."""
        session.streamer = Streamer(
            link,
            segments,
            soft_start_ms=self.safety.soft_start_ms,
            on_error=lambda why: self.life.stream_failed(session, why),
        )
        self._sessions[session.id] = session
        self._by_device[session.address] = session
        if session.idempotency_key is not None:
            self._by_key[(session.owner, session.idempotency_key)] = session
        try:
            # S9: recorded durably before any output, or not started at all.
            await self.recorder.opened(session)
        except BaseException:
            self._forget_unstarted(session)
            raise

    async def _run(self, session: Session, percent: int) -> None:
        """Prime the device and start streaming; RUNNING once output ramps (S2)."""
        assert session.streamer is not None
        try:
            await session.streamer.prime(percent)
        except (BleError, SafetyViolation) as exc:
            await self.life.end(session, SessionState.FAILED, f"could not start: {exc}")
            raise DeviceUnavailable(f"device {session.address} did not start: {exc}") from exc
        if not session.active:  # a fault or a safety refusal ended it while it started
            raise DeviceUnavailable(f"device {session.address} did not start: {session.reason}")
        session.started_at = time.time()
        self.life.transition(session, SessionState.RUNNING, "started")
        session.stream_task = self.tasks.spawn(session.streamer.run(), name=f"stream:{session.id}")
        self.life.arm(
            session,
            "cap",
            self.session_cap_s,
            lambda: self.life.spawn_end(
                session, SessionState.STOPPED, "session length cap reached"
            ),
        )

    def _forget_unstarted(self, session: Session) -> None:
        """Undo the bookkeeping of a session that never started (nothing was sent for it)."""
        self._sessions.pop(session.id, None)
        self._by_device.pop(session.address, None)
        if session.idempotency_key is not None:
            self._by_key.pop((session.owner, session.idempotency_key), None)

    # --- control --------------------------------------------------------------------------

    def _authorize(self, session: Session, actor: str, is_admin: bool) -> None:
        if actor != session.owner and not is_admin:
            raise Forbidden("only the session's owner or an admin may control it; you may watch")

    async def stop(
        self, session_id: str, *, actor: str, is_admin: bool = False, reason: str = ""
    ) -> Session:
        session = self.get(session_id)
        self._authorize(session, actor, is_admin)
        if session.active:
            await self.life.end(session, SessionState.STOPPED, reason or f"stopped by {actor}")
        return session

    async def pause(self, session_id: str, *, actor: str, is_admin: bool = False) -> Session:
        session = self.get(session_id)
        self._authorize(session, actor, is_admin)
        if session.state is SessionState.PAUSED:
            if session.contact_paused:
                # The person's pause outlives the contact pause: contact coming back must not
                # restart output they asked to hold, and the contact window no longer applies.
                session.contact_paused = False
                self.life.disarm(session, "contact")
                self.life.transition(session, SessionState.PAUSED, f"paused by {actor}")
            return session
        if session.state is not SessionState.RUNNING:
            raise Conflict(f"session is {session.state.value}; only a running session pauses")
        try:
            await self.life.device_pause(session)
        except BleError as exc:
            raise DeviceUnavailable(f"device {session.address} did not pause: {exc}") from exc
        self.life.transition(session, SessionState.PAUSED, f"paused by {actor}")
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
            await self.life.device_resume(session)
        except BleError as exc:
            raise DeviceUnavailable(f"device {session.address} did not resume: {exc}") from exc
        self.life.transition(session, SessionState.RUNNING, f"resumed by {actor}")
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
        self.life.notice(session, "intensity", {"from": previous, "to": level})
        self.recorder.session_changed(session)
        return session

    async def close(self) -> None:
        """End every active session (gateway shutting down); devices stop on their own too."""
        for session in list(self._by_device.values()):
            await self.life.end(session, SessionState.INTERRUPTED, "gateway shutting down")
        self._remove_listener()

    # --- bookkeeping -----------------------------------------------------------------------

    def _on_frame(self, frame: TelemetryFrame) -> None:
        if frame.session_id is None:
            return
        session = self._sessions.get(frame.session_id)
        if session is None:
            return
        for warning in session.figures.update(frame):
            self.life.notice(session, "apply_gel", {"message": str(warning)})
        self.recorder.telemetry(session, frame)

    def _released(self, session: Session) -> None:
        self._by_device.pop(session.address, None)

    def _ended(self, _session: Session) -> None:
        self._forget_old()

    def _forget_old(self) -> None:
        ended = [s for s in self._sessions.values() if not s.active]
        for old in ended[: max(0, len(ended) - RECENT_ENDED)]:  # dicts keep insertion order
            del self._sessions[old.id]
            if old.idempotency_key is not None:
                self._by_key.pop((old.owner, old.idempotency_key), None)


async def _first_result(starting: asyncio.Future[Session]) -> Session:
    """What a duplicate of a start under way answers: the first start's session."""
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        if not starting.cancelled():
            raise  # this caller itself was cancelled
        raise Conflict("the first request with this Idempotency-Key was abandoned; retry") from None
