"""One-time pairing codes: how a phone gets its first bearer token.

``mcgw pair`` (another process than the server, so the codes live in the database) calls
``create_pairing_code`` and prints a 6-digit code; the phone sends it to ``POST /api/v1/pair``,
which calls ``redeem_pairing_code`` and then creates a token for the returned user.

* Only a keyed hash of a code is stored (HMAC-SHA256 with the hub's token pepper, like tokens).
  A 6-digit code has little entropy, so the hash alone is not what protects it: the short
  lifetime, single use and the API's per-client lockout of wrong guesses are
  (``api.ratelimit.PairingGuard``). A wrong guess never harms anyone else's code: it is not
  counted against live codes (an attacker could otherwise burn a victim's code by guessing).
* A code is valid for ``ttl_s`` (default 5 minutes) and can be redeemed once.
* A code either names an existing user (pair another phone of the same person) or carries the
  name (and admin flag) of the user to create when it is redeemed.
* A refused redemption says why: the code is unknown, expired or already used.

Functions take keyword-only arguments and a SQLModel ``Session``, flush and never commit.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from gateway.access import hash_token
from gateway.errors import NotFound
from gateway.storage.models import User, UTCDateTime, utcnow
from gateway.storage.repo import create_user, get_user

CODE_DIGITS = 6
DEFAULT_TTL_S = 300


class PairingCode(SQLModel, table=True):
    """A one-time code. ``user_id`` set: pairs with that user; else creates ``user_name``."""

    __tablename__ = "pairing_codes"

    id: int | None = Field(default=None, primary_key=True)
    code_hash: str = Field(max_length=64, index=True)
    user_id: int | None = Field(default=None, foreign_key="users.id", ondelete="CASCADE")
    user_name: str = Field(default="", max_length=80)
    is_admin: bool = False
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False, index=True))
    used_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """What ``create_pairing_code`` hands back: the plaintext code (shown once) and its expiry."""

    id: int
    code: str
    expires_at: datetime


class Refusal(enum.StrEnum):
    """Why a code was not accepted."""

    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"


def _live(now: datetime) -> list[sa.ColumnElement[bool]]:
    return [col(PairingCode.used_at).is_(None), col(PairingCode.expires_at) > now]


def create_pairing_code(
    *,
    session: Session,
    pepper: str,
    user_id: int | None = None,
    user_name: str = "",
    is_admin: bool = False,
    ttl_s: int = DEFAULT_TTL_S,
    now: datetime | None = None,
) -> IssuedCode:
    """A new code for ``user_id`` (must exist) or for a user named ``user_name`` made on use."""
    if ttl_s <= 0:
        raise ValueError(f"a pairing code needs a positive lifetime, got {ttl_s} s")
    if user_id is not None:
        get_user(session=session, user_id=user_id)
    elif not user_name.strip():
        raise ValueError("a pairing code needs a user_id or the user_name of the user to create")
    now = now or utcnow()
    while True:
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        code_hash = hash_token(code, pepper=pepper)
        # Two live codes must never share a value: redeeming one would be ambiguous.
        clash = session.exec(
            select(PairingCode.id).where(PairingCode.code_hash == code_hash, *_live(now))
        ).first()
        if clash is None:
            break
    row = PairingCode(
        code_hash=code_hash,
        user_id=user_id,
        user_name=user_name.strip()[:80],
        is_admin=is_admin,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    return IssuedCode(id=row.id, code=code, expires_at=row.expires_at)


def redeem_pairing_code(
    *, session: Session, code: str, pepper: str, now: datetime | None = None
) -> User | Refusal:
    """The user a live code pairs with (created now if the code says so), or why not.

    Marks the code used. Nothing is written for a refused code.
    """
    now = now or utcnow()
    code_hash = hash_token(code, pepper=pepper)
    row = session.exec(
        select(PairingCode).where(PairingCode.code_hash == code_hash, *_live(now))
    ).first()
    if row is None:
        # Dead codes may share a value with each other (only live ones are unique): any will do.
        dead = session.exec(select(PairingCode).where(PairingCode.code_hash == code_hash)).first()
        if dead is None:
            return Refusal.UNKNOWN
        return Refusal.USED if dead.used_at is not None else Refusal.EXPIRED
    row.used_at = now
    session.add(row)
    if row.user_id is not None:
        try:
            user = get_user(session=session, user_id=row.user_id)
        except NotFound:
            return Refusal.UNKNOWN
    else:
        user = create_user(session=session, name=row.user_name, is_admin=row.is_admin, now=now)
    session.flush()
    return user


def prune_pairing_codes(*, session: Session, now: datetime | None = None) -> int:
    """Delete codes that can no longer be used (expired or used); returns how many."""
    now = now or utcnow()
    result = session.execute(
        sa.delete(PairingCode).where(
            sa.or_(col(PairingCode.used_at).is_not(None), col(PairingCode.expires_at) <= now)
        )
    )
    session.flush()
    return int(getattr(result, "rowcount", 0) or 0)
