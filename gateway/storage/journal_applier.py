"""Applies journaled session records to the database, in order, and keeps this hub's mark.

:func:`apply_entries` is what the storage writer's thread runs on a batch of
:class:`~gateway.storage.journal.Entry` objects, in one transaction: each entry beyond this
hub's ``journal_marks.applied_rid`` (:class:`JournalMark`) becomes its ``session_log`` write in
a savepoint of its own, and the mark moves with the batch, so an entry is never applied twice.
:func:`retryable` tells an outage (retry the batch later) from an entry the database refuses
for a reason of its own (skip it alone, logged and counted).

This module deliberately does not: read or write the journal file (``gateway.storage.journal``),
decide when to apply or retry (``gateway.storage.writer``), or commit (its caller does, so the
commit can be made durable).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel

from gateway.storage import session_log
from gateway.storage.journal import Entry

log = logging.getLogger(__name__)


class JournalMark(SQLModel, table=True):
    """Per hub: the last journal entry applied to this database (moves with each batch)."""

    __tablename__ = "journal_marks"

    hub_id: str = Field(primary_key=True, max_length=64)
    applied_rid: int = Field(default=0, sa_type=sa.BigInteger)


def _create(session: Session, hub_id: str, at: datetime, args: Mapping[str, Any]) -> None:
    session_log.create_session(session=session, hub_id=hub_id, now=at, **args)


def _state(session: Session, hub_id: str, at: datetime, args: Mapping[str, Any]) -> None:
    record = session_log.get_session(session=session, session_id=args["session_id"])
    if record.state != args["state"]:
        session_log.update_session_state(
            session=session,
            hub_id=hub_id,
            session_id=args["session_id"],
            state=args["state"],
            reason=args["reason"],
            now=at,
        )
    if record.intensity != args["level"]:
        record.intensity = args["level"]
        session.add(record)


def _event(session: Session, hub_id: str, at: datetime, args: Mapping[str, Any]) -> None:
    session_log.add_session_event(session=session, hub_id=hub_id, ts=at, **args)


def _progress(session: Session, hub_id: str, _at: datetime, args: Mapping[str, Any]) -> None:
    session_log.record_progress(session=session, hub_id=hub_id, **args)


def _finish(session: Session, hub_id: str, at: datetime, args: Mapping[str, Any]) -> None:
    session_log.finish_session(session=session, hub_id=hub_id, now=at, **args)


APPLY: dict[str, Callable[[Session, str, datetime, Mapping[str, Any]], None]] = {
    "create": _create,
    "state": _state,
    "event": _event,
    "progress": _progress,
    "finish": _finish,
}


def applied_rid(*, session: Session, hub_id: str) -> int:
    mark = session.get(JournalMark, hub_id)
    return 0 if mark is None else mark.applied_rid


def retryable(exc: BaseException) -> bool:
    """A database error that says nothing about the record itself: retry the batch later.

    The connection, a lock timeout, the server, a missing table (an outage as far as the
    records go) are retried. What a retry cannot cure is not: the database refusing this
    record's values (IntegrityError, DataError), a value that cannot be sent at all (a
    StatementError raised before the database saw it), or a bug in applying it.
    """
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return False
    return isinstance(exc, sa.exc.DBAPIError | sa.exc.PendingRollbackError)


def apply_entries(*, session: Session, hub_id: str, entries: Iterable[Entry]) -> tuple[int, int]:
    """Apply entries beyond this hub's mark, in order, and move the mark; (mark, skipped).

    Each entry applies in its own savepoint. An entry that fails for a reason of its own (the
    rules refuse it, the database refuses its values, a bug) is rolled back alone, logged once
    at ERROR and counted, so the rest of the batch still applies and the journal never wedges
    on it. An error a retry may cure (``retryable``) propagates: the caller rolls back and
    retries the whole batch later.
    """
    mark = session.get(JournalMark, hub_id)
    if mark is None:
        mark = JournalMark(hub_id=hub_id, applied_rid=0)
    skipped = 0
    for entry in entries:
        if entry.rid <= mark.applied_rid:
            continue
        try:
            with session.begin_nested():
                APPLY[entry.op](session, hub_id, entry.at, entry.args)
        except Exception as exc:
            if retryable(exc):
                raise
            skipped += 1
            log.error(  # noqa: TRY400 - the entry and the reason say it all
                "journal entry %d (%s of session %s) could not be applied and is skipped: %s",
                entry.rid,
                entry.op,
                entry.args.get("session_id"),
                exc,
            )
        mark.applied_rid = entry.rid
    session.add(mark)
    session.flush()
    return mark.applied_rid, skipped
