"""One treatment session: what it is, where it is at, and where its records go.

``Session`` holds a session's identity (owner, device, the program as it plays, its caps), its
state with the reason for it (S9), its figures, and the control state the session manager and
its device-signal handling keep on it (pauses by cause, timers, the streamer). The
``SessionRecorder`` protocol is what the manager needs from storage (``gateway.recorder``
implements it); ``NullRecorder`` records nothing.

This module drives nothing: transitions are ``gateway.session_lifecycle``'s, device signals
``gateway.session_signals``', commands ``gateway.sessions``'.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ble import protocol as p
from gateway.figures import SessionFigures
from gateway.programs import Caps, Program
from gateway.scheduler import Streamer
from gateway.states import TERMINAL_STATES, SessionState
from gateway.telemetry import TelemetryFrame


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
    last_sample_ms: int | None = None
    """Device time of the last telemetry sample (the start of the next one's period)."""
    resume_after_link: bool = False
    low_battery_told: bool = False
    stream_task: asyncio.Task[None] | None = None
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    """Pending deadlines by purpose ("cap", "contact", "link"): re-arming one replaces it."""
    detach: Callable[[], None] | None = None
    """Undoes the session's hold on its device (listeners, armed supervisor); set while held."""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def active(self) -> bool:
        return self.state not in TERMINAL_STATES

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
