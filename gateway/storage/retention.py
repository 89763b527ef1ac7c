"""Retention: delete raw telemetry older than the configured number of days.

Only the ``telemetry`` table is pruned. Session rows, their events, delivered time and dose
(the summaries history and streaks are built from) are kept for good. Age is measured from the
session's creation (sessions last at most 30 minutes), which lets the delete use the
telemetry primary key instead of scanning blobs. ``older_than_days`` of 0 keeps everything, as
``DatabaseSettings.telemetry_retention_days`` documents.

Scheduling the prune (e.g. daily, through ``StorageWriter.run``) is the runtime's job.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from gateway.storage.models import TELEMETRY_TABLE, SessionRecord, utcnow


def prune_telemetry(
    *,
    session: Session,
    older_than_days: int,
    hub_id: str | None = None,
    now: datetime | None = None,
) -> int:
    """Delete the telemetry of sessions created more than ``older_than_days`` ago.

    Only ``hub_id``'s sessions when given (each hub on a shared database applies its own
    retention). Returns the number of telemetry batches deleted.
    """
    if older_than_days < 0:
        raise ValueError(f"older_than_days must be >= 0, got {older_than_days}")
    if older_than_days == 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(days=older_than_days)
    sessions = sa.select(SessionRecord.id).where(  # type: ignore[call-overload]
        SessionRecord.created_at < cutoff
    )
    if hub_id is not None:
        sessions = sessions.where(SessionRecord.hub_id == hub_id)
    result = session.connection().execute(
        sa.delete(TELEMETRY_TABLE).where(TELEMETRY_TABLE.c.session_id.in_(sessions))
    )
    return result.rowcount
