"""A session's device signals: samples, status notifications, link changes and skin contact.

``SessionSignals.attach`` arms the device's safety supervisor with the session's caps and
listens to the device (``ManagedDevice.listen``); it returns the function that undoes exactly
that, which the lifecycle calls as the session ends, so a session lets go of its own listeners
and no one else's.

On each sample (the hot path, inside the BLE callback, no awaits) the streamer learns the
device's position, the supervisor checks it (S6), the battery is watched (told once when low,
the session ends when empty), contact loss pauses the session and its return within the window
resumes it with a ramp (S5), a device that went idle by itself is told apart (program complete,
lease expired, ran dry), and "move" cues follow the program's steps. A status notification may
report a fault first. A lost link pauses the session and waits ``link_resume_window_s`` for the
device to come back (else the session is interrupted).

This module sends nothing itself: pausing, resuming and ending go through
``gateway.session_lifecycle``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ble import protocol as p
from ble.errors import BleError
from gateway.config import SafetySettings
from gateway.devices import ManagedDevice
from gateway.errors import DeviceUnavailable, SafetyViolation
from gateway.safety import mean_reaches_back
from gateway.scheduler import Streamer
from gateway.session import Session
from gateway.session_lifecycle import SessionLifecycle
from gateway.states import SessionState
from gateway.tasks import TaskOwner

log = logging.getLogger(__name__)


class SessionSignals:
    """Reacts to what a session's device reports; see the module docstring."""

    def __init__(
        self, lifecycle: SessionLifecycle, *, tasks: TaskOwner, safety: SafetySettings
    ) -> None:
        self.life = lifecycle
        self.tasks = tasks
        self.safety = safety

    def attach(self, session: Session, managed: ManagedDevice) -> Callable[[], None]:
        """Hold ``managed`` for ``session``: arm its supervisor and listen to it. Returns the
        function that lets go again (disarms, removes exactly these listeners)."""
        managed.supervisor.arm(
            session.caps,
            on_violation=lambda why: self.life.spawn_end(
                session, SessionState.FAILED, f"safety supervisor refused a command: {why}"
            ),
        )
        unlisten = managed.listen(
            on_sample=lambda sample: self._on_sample(session, managed, sample),
            on_link=lambda up: self._on_link(session, up),
            on_status=lambda status: self._on_status(session, managed, status),
        )

        def detach() -> None:
            managed.supervisor.disarm()
            unlisten()

        return detach

    def _on_status(self, session: Session, managed: ManagedDevice, status: p.DeviceStatus) -> None:
        """A status notification (sent on every device state change) may report a fault first."""
        if session.active:
            fault = managed.supervisor.check_status(status.state, status.faults)
            if fault is not None:
                self.life.spawn_end(session, SessionState.FAILED, fault)

    def _on_sample(
        self, session: Session, managed: ManagedDevice, sample: p.TelemetrySample
    ) -> tuple[str | None, p.Zone | None]:
        """Hot path, inside the BLE callback: update position, check safety, no awaits."""
        streamer = session.streamer
        if streamer is None or not session.active:
            return None, None
        streamer.observe(sample)
        earlier = session.last_zone
        zone = streamer.zone_of(sample.segment_id)
        if zone is not None:
            session.last_zone = zone
        elif sample.current_mean_ua:
            # The sample's mean covers the interval before it: the tail of the last segment
            # (the device reports no segment once its queue ran dry). Charge it there.
            zone = session.last_zone
        if earlier == zone or not mean_reaches_back(sample, session.last_sample_ms):
            earlier = None
        session.last_sample_ms = sample.device_time_ms
        fault = managed.supervisor.check_sample(sample, zone, earlier_zone=earlier)
        if fault is not None:
            self.life.spawn_end(session, SessionState.FAILED, fault)
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
            self.life.spawn_end(
                session,
                SessionState.STOPPED,
                f"battery empty ({sample.battery_pct} %): the device cannot deliver; charge it "
                "and start again",
            )
            return True
        low = bool(sample.faults & p.FaultFlags.LOW_BATTERY)
        if low and not session.low_battery_told:
            session.low_battery_told = True
            self.life.notice(session, "low_battery", {"battery_pct": sample.battery_pct})
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
            self.life.spawn_end(
                session,
                SessionState.FAILED,
                "device lease expired: no command reached it in time "
                "(the hub or the radio stalled)",
            )
        elif streamer.all_sent():
            streamer.device_idle()
            self.life.spawn_end(session, SessionState.COMPLETED, "program complete")
        else:
            self.life.spawn_end(
                session,
                SessionState.FAILED,
                "the device ran out of queued output before the program ended",
            )

    def _check_contact(self, session: Session, sample: p.TelemetrySample) -> None:
        if sample.contact_quality == 0 and session.state is SessionState.RUNNING:
            session.contact_paused = True
            self.life.transition(session, SessionState.PAUSED, "contact lost")
            self.life.notice(session, "contact_lost", {})
            self.tasks.spawn(self._contact_pause(session), name=f"contact:{session.id}")
        elif sample.contact_quality > 0 and session.contact_paused:
            session.contact_paused = False
            self.life.notice(session, "contact_restored", {})
            self.tasks.spawn(self._contact_resume(session), name=f"contact:{session.id}")

    async def _contact_pause(self, session: Session) -> None:
        # The window starts at the loss, not once PAUSE is acknowledged.
        window = self.safety.contact_resume_window_s
        self.life.arm(session, "contact", window, lambda: self._contact_timeout(session))
        try:
            await self.life.device_pause(session)
        except (BleError, DeviceUnavailable) as exc:
            # The device gates output on contact by itself; the window still ends the session.
            log.warning("pausing %s on contact loss failed: %s", session.id, exc)

    def _contact_timeout(self, session: Session) -> None:
        if session.contact_paused and session.active:
            window = self.safety.contact_resume_window_s
            self.life.spawn_end(
                session, SessionState.STOPPED, f"contact lost for more than {window:g} s"
            )

    async def _contact_resume(self, session: Session) -> None:
        self.life.disarm(session, "contact")
        if not session.active or session.state is not SessionState.PAUSED or session.link_waiting:
            return
        try:
            await self.life.device_resume(session)
        except (BleError, DeviceUnavailable, SafetyViolation) as exc:
            if self.life.link_down(session):
                return  # the link handler takes over, with its own resume window
            await self.life.end(session, SessionState.FAILED, f"could not resume: {exc}")
            return
        self.life.transition(session, SessionState.RUNNING, "contact restored")

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
            self.life.disarm(session, "contact")
            self.life.transition(session, SessionState.PAUSED, "link lost; reconnecting")
            session.resume_after_link = was_running
            window = self.safety.link_resume_window_s
            self.life.arm(session, "link", window, lambda: self._link_timeout(session))
            return
        if session.link_waiting:
            session.link_waiting = False
            self.life.disarm(session, "link")
            if session.resume_after_link:
                self.tasks.spawn(self._link_resume(session), name=f"relink:{session.id}")
            else:
                self.life.transition(session, SessionState.PAUSED, "link restored; paused")

    async def _link_resume(self, session: Session) -> None:
        try:
            await self.life.device_resume(session)
        except (BleError, DeviceUnavailable, SafetyViolation) as exc:
            if self.life.link_down(session):
                return  # lost again while resuming: a new window is running
            await self.life.end(
                session, SessionState.INTERRUPTED, f"could not resume after link loss: {exc}"
            )
            return
        self.life.transition(session, SessionState.RUNNING, "link restored; resumed")

    def _link_timeout(self, session: Session) -> None:
        if session.link_waiting and session.active:
            window = self.safety.link_resume_window_s
            self.life.spawn_end(
                session, SessionState.INTERRUPTED, f"link lost for more than {window:g} s"
            )

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
            self.life.notice(
                session, "move", {"step": index, "zone": step.zone, "cue": "next zone"}
            )
            return
        if step.move_cue_s:
            cue = (position_ms - offset) // 1000 // step.move_cue_s
            if cue > session.last_cue_s:
                session.last_cue_s = cue
                self.life.notice(
                    session, "move", {"step": index, "zone": step.zone, "cue": "glide"}
                )
