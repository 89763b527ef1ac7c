"""Persists sessions through the storage writer: rows, events, dose and telemetry (S9).

``StorageRecorder`` implements ``gateway.sessions.SessionRecorder``. Every method returns at once:
it only queues work for the writer thread, so the BLE callbacks that call it never wait on disk.
Running totals (delivered time and dose) are saved every ``PROGRESS_EVERY_S`` so a crash keeps a
recent dose; the final totals are written with the end state and its reason.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from gateway.sessions import TERMINAL, Session
from gateway.storage import session_log
from gateway.storage.writer import StorageWriter
from gateway.telemetry import TelemetryFrame

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0


class StorageRecorder:
    """Queues a session's writes on the storage writer, in order."""

    def __init__(self, writer: StorageWriter, *, hub_id: str) -> None:
        self.writer = writer
        self.hub_id = hub_id
        self._created: set[str] = set()
        self._last_progress: dict[str, float] = {}

    def _owner_id(self, session: Session) -> int:
        return int(session.owner)

    def session_changed(self, session: Session) -> None:
        if session.id not in self._created:
            self._created.add(session.id)
            self.writer.submit(
                functools.partial(
                    _create,
                    hub_id=self.hub_id,
                    session_id=session.id,
                    owner_id=self._owner_id(session),
                    device_address=session.address,
                    program_slug=session.program.slug,
                    intensity=session.level,
                    planned_s=session.program.duration_s,
                    idempotency_key=session.idempotency_key,
                    limited_by_cap=session.limited_by_cap,
                )
            )
            if session.state.value == "pending":
                return
        if session.state in TERMINAL:
            figures = session.figures.snapshot()
            self.writer.submit(
                functools.partial(
                    _finish,
                    hub_id=self.hub_id,
                    session_id=session.id,
                    state=session.state.value,
                    reason=session.reason,
                    delivered_s=session.position_s,
                    dose_uas_by_zone=_known_zones(figures["charge_uas_by_zone"]),
                )
            )
            self._last_progress.pop(session.id, None)
            return
        self.writer.submit(
            functools.partial(
                _state,
                hub_id=self.hub_id,
                session_id=session.id,
                state=session.state.value,
                reason=session.reason,
                level=session.level,
            )
        )

    def session_event(self, session: Session, kind: str, detail: dict[str, Any]) -> None:
        if kind == "state":
            return  # update_session_state records state events itself
        self.writer.submit(
            functools.partial(
                _event, hub_id=self.hub_id, session_id=session.id, kind=kind, detail=detail
            )
        )

    def telemetry(self, session: Session, frame: TelemetryFrame) -> None:
        self.writer.append_telemetry(session.id, [frame.sample], received_at=time.time())
        now = time.monotonic()
        last = self._last_progress.setdefault(session.id, now)
        if now - last >= PROGRESS_EVERY_S and session.active:
            self._last_progress[session.id] = now
            figures = session.figures.snapshot()
            self.writer.submit(
                functools.partial(
                    _progress,
                    hub_id=self.hub_id,
                    session_id=session.id,
                    delivered_s=session.position_s,
                    dose_uas_by_zone=_known_zones(figures["charge_uas_by_zone"]),
                )
            )


def _known_zones(charge: dict[str, float]) -> dict[str, float]:
    return {zone: value for zone, value in charge.items() if zone != "unknown"}


# Jobs run on the writer thread; each gets the SQLModel session as its first argument.


def _create(db: Any, **kwargs: Any) -> None:
    session_log.create_session(session=db, **kwargs)


def _state(db: Any, *, hub_id: str, session_id: str, state: str, reason: str, level: int) -> None:
    record = session_log.get_session(session=db, session_id=session_id)
    if record.state != state:
        session_log.update_session_state(
            session=db, hub_id=hub_id, session_id=session_id, state=state, reason=reason
        )
    if record.intensity != level:
        record.intensity = level
        db.add(record)


def _event(db: Any, **kwargs: Any) -> None:
    session_log.add_session_event(session=db, **kwargs)


def _progress(db: Any, **kwargs: Any) -> None:
    session_log.record_progress(session=db, **kwargs)


def _finish(db: Any, **kwargs: Any) -> None:
    session_log.finish_session(session=db, **kwargs)
