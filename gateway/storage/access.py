"""The storage side of access: the access epoch, and the rows an access snapshot is made of.

Every write that changes who may see or control something (a user created, deleted, made admin,
consenting or withdrawing consent, a cap changed; a token created or revoked; a device claimed,
transferred or forgotten) calls :func:`bump_access_epoch` in its own transaction. A hub polls
the one-row ``access_epoch`` table (a single indexed read) and reloads its access snapshot when
the number moved, so a change made by another process (``mcgw token revoke``, another hub on a
shared PostgreSQL) reaches the hub's open connections within its poll interval.

:func:`load_access_rows` reads what ``gateway.access.AccessPolicy`` needs, as plain frozen rows
and principals (nothing lazy leaves the session). This module reads and bumps; it decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from gateway.access import Principal, principal_of
from gateway.storage.models import ApiToken, DeviceRecord, User

EPOCH_ROW_ID = 1


class AccessEpoch(SQLModel, table=True):
    """One row: a counter bumped by every access-changing write."""

    __tablename__ = "access_epoch"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    epoch: int = Field(default=0, sa_type=sa.BigInteger)


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: int
    user_id: int
    token_hash: str


@dataclass(frozen=True, slots=True)
class AccessRows:
    """Everything access decisions need, as of one epoch."""

    epoch: int
    users: tuple[Principal, ...]
    tokens: tuple[TokenRow, ...]
    """Live (unrevoked) tokens only."""
    owners: dict[str, int | None]
    """This hub's device rows: upper-case address -> owner id (None: unclaimed)."""


_TABLE: sa.Table = AccessEpoch.__table__  # type: ignore[attr-defined]


def bump_access_epoch(*, session: Session) -> None:
    """Record that access changed (in the caller's transaction)."""
    updated = session.execute(
        sa.update(_TABLE).where(_TABLE.c.id == EPOCH_ROW_ID).values(epoch=_TABLE.c.epoch + 1)
    )
    if not getattr(updated, "rowcount", 0):
        session.execute(sa.insert(_TABLE).values(id=EPOCH_ROW_ID, epoch=1))
    session.flush()


def read_access_epoch(*, session: Session) -> int:
    """The current access epoch (0 before the first access change)."""
    value = session.execute(
        sa.select(_TABLE.c.epoch).where(_TABLE.c.id == EPOCH_ROW_ID)
    ).scalar_one_or_none()
    return int(value or 0)


def load_access_rows(*, session: Session, hub_id: str) -> AccessRows:
    """Users, live tokens and this hub's device owners, with the epoch they belong to.

    The epoch is read first: a change committed while the tables are read bumps it again, so
    the next poll reloads rather than keeping a mixed snapshot for good.
    """
    epoch = read_access_epoch(session=session)
    users = tuple(
        principal_of(user) for user in session.exec(select(User)).all() if user.id is not None
    )
    tokens = tuple(
        TokenRow(id=token_id, user_id=user_id, token_hash=token_hash)
        for token_id, user_id, token_hash in session.exec(
            select(ApiToken.id, ApiToken.user_id, ApiToken.token_hash).where(
                col(ApiToken.revoked_at).is_(None)
            )
        ).all()
        if token_id is not None
    )
    owners = {
        address.upper(): owner_id
        for address, owner_id in session.exec(
            select(DeviceRecord.address, DeviceRecord.owner_id).where(DeviceRecord.hub_id == hub_id)
        ).all()
    }
    return AccessRows(epoch=epoch, users=users, tokens=tokens, owners=owners)


def touch_tokens(*, session: Session, used: dict[int, datetime]) -> None:
    """Set ``last_used_at`` of tokens (a figure for people; not an access change)."""
    for token_id, when in used.items():
        session.execute(
            sa.update(ApiToken).where(col(ApiToken.id) == token_id).values(last_used_at=when)
        )
    session.flush()
