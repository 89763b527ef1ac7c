"""Repository functions for treatment sessions: create, state changes, events, end, recovery.

The record of every session (S9): who ran which program on which device, every state change
with its reason, cues and faults as events, and at the end the delivered time and dose (µA·s
per zone). Ending a session without a reason is refused.

Every write is filtered by ``hub_id``: a hub only ever updates its own sessions, so hubs sharing
one PostgreSQL database cannot clobber each other's rows (another hub's session is NotFound).
Functions take keyword-only arguments and a SQLModel ``Session``, flush, and leave the commit to
the caller (``StorageWriter.run``). ``create_session`` inserts in a savepoint of its own, so a
refused insert (an idempotency-key race) undoes only itself, never the caller's transaction.

Start-up recovery: a hub that restarts cannot resume output it no longer controls, so
``interrupt_open_sessions`` ends every session it left open as ``interrupted`` with a reason.

This module does not drive sessions (``gateway.sessions`` does) nor check who may act.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from gateway.errors import Conflict, NotFound
from gateway.states import OPEN_STATES, TERMINAL_STATES, SessionState
from gateway.storage.models import (
    ProgramRecord,
    SessionEventRecord,
    SessionRecord,
    User,
    utcnow,
)
from gateway.storage.reader import StorageReader

log = logging.getLogger(__name__)

MAX_REASON_LENGTH = 500
KEY_LOOKUP_TIMEOUT_S = 1.0
"""How long a start waits for storage to say whether its Idempotency-Key was used before."""


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise ValueError("every session state change needs a reason (S9)")
    return reason[:MAX_REASON_LENGTH]


def _own(session: Session, hub_id: str, session_id: str) -> SessionRecord:
    record = session.exec(
        select(SessionRecord).where(SessionRecord.id == session_id, SessionRecord.hub_id == hub_id)
    ).first()
    if record is None:
        raise NotFound(f"session {session_id} does not exist on hub {hub_id}")
    return record


def _event(
    session: Session, session_id: str, kind: str, detail: Mapping[str, Any], ts: datetime
) -> SessionEventRecord:
    event = SessionEventRecord(session_id=session_id, ts=ts, kind=kind, detail=dict(detail))
    session.add(event)
    return event


def get_session(*, session: Session, session_id: str) -> SessionRecord:
    """Any hub's session by id (reads are not hub-scoped; writes are)."""
    record = session.get(SessionRecord, session_id)
    if record is None:
        raise NotFound(f"session {session_id} does not exist")
    return record


def create_session(
    *,
    session: Session,
    hub_id: str,
    owner_id: int,
    device_address: str,
    program_slug: str,
    intensity: int,
    planned_s: int,
    idempotency_key: str | None = None,
    limited_by_cap: bool = False,
    session_id: str | None = None,
    now: datetime | None = None,
) -> tuple[SessionRecord, bool]:
    """Record a new pending session; returns (record, created).

    ``limited_by_cap``: the owner's personal cap lowered at least one step of the program.

    With an ``idempotency_key`` the same owner and key return the session first created with
    them (``created`` False) whatever the other arguments, so a retried request never starts a
    second session. A ``session_id`` names a session that already runs (the journal's records):
    if the key already belongs to another session (a key reused, two hubs racing one owner and
    key), this one is still stored, without the key, with a ``duplicate_idempotency_key`` event
    naming the other, so its records have a row to land on.
    """
    if not 1 <= intensity <= 5:
        raise ValueError(f"intensity level must be 1-5, got {intensity}")
    key = idempotency_key
    duplicate_of: SessionRecord | None = None
    existing = _by_key(session, owner_id, key) if key is not None else None
    if existing is not None:
        if session_id is None or existing.id == session_id:
            return existing, False
        duplicate_of, key = existing, None
    if session.get(User, owner_id) is None:
        raise NotFound(f"user {owner_id} does not exist")
    now = now or utcnow()
    fields: dict[str, Any] = {
        "id": session_id or str(uuid.uuid4()),
        "hub_id": hub_id,
        "owner_id": owner_id,
        "device_address": device_address,
        "program_slug": program_slug,
        "intensity": intensity,
        "created_at": now,
        "planned_s": planned_s,
        "limited_by_cap": limited_by_cap,
    }
    try:
        record = _insert(session, fields, key)
    except sa.exc.IntegrityError:
        winner = _by_key(session, owner_id, key) if key is not None else None
        if winner is None:
            raise
        if session_id is None or winner.id == session_id:
            return winner, False  # another writer won the race with the same key
        duplicate_of, record = winner, _insert(session, fields, None)
    _event(session, record.id, "created", {"hub_id": hub_id, "program": program_slug}, now)
    if duplicate_of is not None and idempotency_key is not None:
        _note_duplicate(session, record, idempotency_key, duplicate_of, now)
    session.flush()
    return record, True


def _note_duplicate(
    session: Session, record: SessionRecord, key: str, first: SessionRecord, now: datetime
) -> None:
    """``record`` was stored without ``key``, which ``first`` holds: say so, in the log and
    as an event of ``record``."""
    log.warning(
        "session %s reuses idempotency key %r of session %s (owner %d); stored without it",
        record.id,
        key,
        first.id,
        record.owner_id,
    )
    _event(
        session,
        record.id,
        "duplicate_idempotency_key",
        {"idempotency_key": key, "session_id": first.id},
        now,
    )


def _insert(session: Session, fields: Mapping[str, Any], key: str | None) -> SessionRecord:
    """A new pending row with ``fields`` (no dose yet) and ``key``, in a savepoint of its own."""
    record = SessionRecord(
        **fields,
        state=SessionState.PENDING.value,
        dose_uas_by_zone={},
        seconds_by_zone={},
        idempotency_key=key,
    )
    # Only this insert is undone if the unique index refuses it: a rollback of the whole
    # session would also undo the records applied before it in the same journal batch.
    with session.begin_nested():
        session.add(record)
        session.flush()
    return record


def session_by_idempotency_key(
    *, session: Session, owner_id: int, key: str
) -> SessionRecord | None:
    """The session ``owner_id`` started with this Idempotency-Key, if any (any hub, any age)."""
    return _by_key(session, owner_id, key)


class StoredStarts:
    """The Idempotency-Keys of earlier runs, for ``gateway.sessions.StartHistory``.

    Asked through the reader (never queued behind writes) and for at most ``timeout_s``:
    a start waits that long at worst before it goes ahead without the answer.
    """

    def __init__(self, reader: StorageReader, *, timeout_s: float = KEY_LOOKUP_TIMEOUT_S) -> None:
        self._reader = reader
        self._timeout_s = timeout_s

    async def started_with(self, owner: str, key: str) -> SessionRecord | None:
        """The stored session; StorageUnavailable if storage does not answer in time."""
        return await self._reader.run(
            session_by_idempotency_key, timeout_s=self._timeout_s, owner_id=int(owner), key=key
        )


def _by_key(session: Session, owner_id: int, key: str) -> SessionRecord | None:
    return session.exec(
        select(SessionRecord).where(
            SessionRecord.owner_id == owner_id, SessionRecord.idempotency_key == key
        )
    ).first()


def update_session_state(
    *,
    session: Session,
    hub_id: str,
    session_id: str,
    state: SessionState | str,
    reason: str,
    now: datetime | None = None,
) -> SessionRecord:
    """Move an open session to ``state`` and record a ``state`` event with the reason.

    The first move to running sets ``started_at``; a terminal state sets ``ended_at`` and
    ``end_reason`` (prefer ``finish_session``, which also records the dose). Conflict if the
    session has already ended.
    """
    target = SessionState(state)
    reason = _reason(reason)
    record = _own(session, hub_id, session_id)
    previous = SessionState(record.state)
    if previous in TERMINAL_STATES:
        raise Conflict(
            f"session {session_id} already ended ({previous.value}: {record.end_reason})"
        )
    now = now or utcnow()
    record.state = target.value
    if target is SessionState.RUNNING and record.started_at is None:
        record.started_at = now
    if target in TERMINAL_STATES:
        record.ended_at = now
        record.end_reason = reason
    session.add(record)
    _event(
        session,
        session_id,
        "state",
        {"from": previous.value, "state": target.value, "reason": reason},
        now,
    )
    session.flush()
    return record


def add_session_event(
    *,
    session: Session,
    hub_id: str,
    session_id: str,
    kind: str,
    detail: Mapping[str, Any] | None = None,
    ts: datetime | None = None,
) -> SessionEventRecord:
    """Record an event (a cue, contact loss, a fault, ...) of one of this hub's sessions."""
    _own(session, hub_id, session_id)
    event = _event(session, session_id, kind, detail or {}, ts or utcnow())
    session.flush()
    return event


def record_progress(
    *,
    session: Session,
    hub_id: str,
    session_id: str,
    delivered_s: float,
    dose_uas_by_zone: Mapping[str, float],
    seconds_by_zone: Mapping[str, float] | None = None,
) -> SessionRecord:
    """Save the running totals of an open session, so a crash keeps a recent dose."""
    record = _own(session, hub_id, session_id)
    if SessionState(record.state) in TERMINAL_STATES:
        raise Conflict(f"session {session_id} already ended; its totals are final")
    record.delivered_s = delivered_s
    record.dose_uas_by_zone = dict(dose_uas_by_zone)
    if seconds_by_zone is not None:
        record.seconds_by_zone = dict(seconds_by_zone)
    session.add(record)
    session.flush()
    return record


def finish_session(
    *,
    session: Session,
    hub_id: str,
    session_id: str,
    state: SessionState | str,
    reason: str,
    delivered_s: float,
    dose_uas_by_zone: Mapping[str, float],
    seconds_by_zone: Mapping[str, float] | None = None,
    now: datetime | None = None,
) -> SessionRecord:
    """End an open session with its reason, delivered seconds and dose (µA·s per zone, S9).

    Without ``seconds_by_zone`` the program's steps are walked in order for ``delivered_s``
    seconds to estimate it. Conflict if the session already ended.
    """
    target = SessionState(state)
    if target not in TERMINAL_STATES:
        raise ValueError(f"finish_session needs an end state, not {target.value}")
    record = _own(session, hub_id, session_id)
    if seconds_by_zone is None:
        seconds_by_zone = _seconds_from_program(session, record.program_slug, delivered_s)
    record.delivered_s = delivered_s
    record.dose_uas_by_zone = {zone: float(v) for zone, v in dose_uas_by_zone.items()}
    record.seconds_by_zone = {zone: float(v) for zone, v in seconds_by_zone.items()}
    return update_session_state(
        session=session, hub_id=hub_id, session_id=session_id, state=target, reason=reason, now=now
    )


def _seconds_from_program(session: Session, slug: str, delivered_s: float) -> dict[str, float]:
    program = session.get(ProgramRecord, slug)
    seconds: dict[str, float] = {}
    left = delivered_s
    for step in program.steps if program is not None else ():
        if left <= 0:
            break
        spent = min(left, float(step["duration_s"]))
        seconds[step["zone"]] = seconds.get(step["zone"], 0.0) + spent
        left -= spent
    return seconds


def find_open_sessions(*, session: Session, hub_id: str) -> list[SessionRecord]:
    """This hub's sessions that have not ended (pending, running or paused), oldest first."""
    return list(
        session.exec(
            select(SessionRecord)
            .where(
                SessionRecord.hub_id == hub_id,
                col(SessionRecord.state).in_([state.value for state in OPEN_STATES]),
            )
            .order_by(col(SessionRecord.created_at))
        ).all()
    )


def interrupt_open_sessions(
    *, session: Session, hub_id: str, reason: str, now: datetime | None = None
) -> list[SessionRecord]:
    """End this hub's open sessions as ``interrupted`` with ``reason`` (start-up recovery).

    Their delivered time and dose stay as last saved by ``record_progress``.
    """
    ended = []
    for record in find_open_sessions(session=session, hub_id=hub_id):
        ended.append(
            update_session_state(
                session=session,
                hub_id=hub_id,
                session_id=record.id,
                state=SessionState.INTERRUPTED,
                reason=reason,
                now=now,
            )
        )
    return ended
