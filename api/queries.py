"""Reads the API needs that gateway.storage has no function for yet (candidates to move there).

Keyword-only, a SQLModel ``Session`` in, plain rows out; nothing here writes.
"""

from __future__ import annotations

from sqlmodel import Session, select

from gateway.storage.models import SessionRecord


def session_by_idempotency_key(
    *, session: Session, owner_id: int, key: str
) -> SessionRecord | None:
    """The session ``owner_id`` started with this Idempotency-Key, if any (any hub, any age)."""
    return session.exec(
        select(SessionRecord).where(
            SessionRecord.owner_id == owner_id, SessionRecord.idempotency_key == key
        )
    ).first()
