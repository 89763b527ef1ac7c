"""Repository functions for users, tokens, consent, devices and programs.

Every function takes keyword-only arguments and a SQLModel ``Session``; it flushes but never
commits, so the caller (usually ``StorageWriter.run``) decides the transaction. Missing rows
raise ``NotFound``, clashes ``Conflict`` (``gateway.errors``).

Device writes are always filtered by ``hub_id``: a hub can only see, claim or forget its own
devices, even on a PostgreSQL database shared with other hubs. Users, tokens and programs are
shared by every hub on one database.

Tokens: the plaintext token is returned once by ``create_token`` and never stored; the table
keeps ``hash_token(token, pepper=...)``, an HMAC-SHA256 keyed with the hub's token pepper.
Tokens are checked against the hub's in-memory access snapshot (``gateway.access``), not here.

Every write that changes who may see or control something bumps the access epoch
(``gateway.storage.access``) in the same transaction, so every hub on the database reloads.

Sessions and their events live in ``gateway.storage.session_log``; history reads in
``gateway.storage.history``. Authorization (who may do what) is the caller's job.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlmodel import Session, SQLModel, col, or_, select

from gateway.access import hash_token
from gateway.errors import Conflict, NotFound
from gateway.programs import Program
from gateway.storage.access import bump_access_epoch
from gateway.storage.models import ApiToken, DeviceRecord, ProgramRecord, User, utcnow

TOKEN_PREFIX = "mcgw_"  # noqa: S105 - a public prefix that makes leaked tokens greppable


# --- users and consent ---------------------------------------------------------------------------


def create_user(
    *,
    session: Session,
    name: str,
    is_admin: bool = False,
    cap_ua: int | None = None,
    now: datetime | None = None,
) -> User:
    user = User(name=name, is_admin=is_admin, cap_ua=cap_ua, created_at=now or utcnow())
    _save_access(session, user)
    return user


def get_user(*, session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    return user


def list_users(*, session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(col(User.id))).all())


def set_user_cap(*, session: Session, user_id: int, cap_ua: int | None) -> User:
    """Set (or clear, with None) a user's personal amplitude cap in µA (S1)."""
    if cap_ua is not None and cap_ua <= 0:
        raise ValueError(f"a personal cap must be positive, got {cap_ua} µA")
    user = get_user(session=session, user_id=user_id)
    user.cap_ua = cap_ua
    _save_access(session, user)
    return user


def set_user_admin(*, session: Session, user_id: int, is_admin: bool) -> User:
    """Grant or take admin rights."""
    user = get_user(session=session, user_id=user_id)
    user.is_admin = is_admin
    _save_access(session, user)
    return user


def accept_consent(
    *, session: Session, user_id: int, version: str, now: datetime | None = None
) -> User:
    """Record that the user accepted the contraindication notice ``version`` (S7), and when."""
    user = get_user(session=session, user_id=user_id)
    user.consent_accepted_at = now or utcnow()
    user.consent_version = version
    _save_access(session, user)
    return user


def withdraw_consent(*, session: Session, user_id: int) -> User:
    """Forget the user's acceptance of the notice: no new session until they accept again."""
    user = get_user(session=session, user_id=user_id)
    user.consent_accepted_at = None
    user.consent_version = None
    _save_access(session, user)
    return user


def delete_user(*, session: Session, user_id: int) -> None:
    """Delete a user with their tokens, programs and session history."""
    session.delete(get_user(session=session, user_id=user_id))
    _access_changed(session)


# --- tokens --------------------------------------------------------------------------------------


def create_token(
    *, session: Session, user_id: int, name: str, pepper: str, now: datetime | None = None
) -> tuple[ApiToken, str]:
    """A new token for the user: the row, and the plaintext token (shown once, never stored)."""
    get_user(session=session, user_id=user_id)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user_id,
        token_hash=hash_token(token, pepper=pepper),
        name=name,
        created_at=now or utcnow(),
    )
    _save_access(session, row)
    return row, token


def list_tokens(*, session: Session, user_id: int) -> list[ApiToken]:
    return list(
        session.exec(
            select(ApiToken).where(ApiToken.user_id == user_id).order_by(col(ApiToken.id))
        ).all()
    )


def revoke_token(
    *, session: Session, token_id: int, user_id: int | None = None, now: datetime | None = None
) -> ApiToken:
    """Revoke a token (one of ``user_id``'s when given). Revoking twice keeps the first time."""
    row = session.get(ApiToken, token_id)
    if row is None or (user_id is not None and row.user_id != user_id):
        raise NotFound(f"token {token_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = now or utcnow()
        _save_access(session, row)
    return row


# --- devices (always scoped to one hub) ----------------------------------------------------------


def _device(session: Session, hub_id: str, address: str) -> DeviceRecord | None:
    return session.exec(
        select(DeviceRecord).where(DeviceRecord.hub_id == hub_id, DeviceRecord.address == address)
    ).first()


def get_device(*, session: Session, hub_id: str, address: str) -> DeviceRecord:
    device = _device(session, hub_id, address)
    if device is None:
        raise NotFound(f"device {address} is not known to hub {hub_id}")
    return device


def list_devices(*, session: Session, hub_id: str) -> list[DeviceRecord]:
    return list(
        session.exec(
            select(DeviceRecord)
            .where(DeviceRecord.hub_id == hub_id)
            .order_by(col(DeviceRecord.address))
        ).all()
    )


def upsert_device(
    *,
    session: Session,
    hub_id: str,
    address: str,
    name: str | None = None,
    model: str | None = None,
    firmware: str | None = None,
    bonded: bool | None = None,
    seen_at: datetime | None = None,
) -> DeviceRecord:
    """Insert or update this hub's row for ``address``; None leaves a field as it is."""
    device = _device(session, hub_id, address)
    now = utcnow()
    if device is None:
        device = DeviceRecord(hub_id=hub_id, address=address, created_at=now)
    if name is not None:
        device.name = name
    if model is not None:
        device.model = model
    if firmware is not None:
        device.firmware = firmware
    if bonded is not None:
        device.bonded = bonded
    device.last_seen = seen_at or now
    session.add(device)
    session.flush()
    return device


def claim_device(
    *, session: Session, hub_id: str, address: str, user_id: int, force: bool = False
) -> DeviceRecord:
    """Make ``user_id`` the device's owner; Conflict if someone else owns it (unless ``force``)."""
    get_user(session=session, user_id=user_id)
    device = get_device(session=session, hub_id=hub_id, address=address)
    if device.owner_id not in (None, user_id) and not force:
        raise Conflict(f"device {address} belongs to another user; an admin can reassign it")
    if device.owner_id != user_id:
        device.owner_id = user_id
        _save_access(session, device)
    return device


def release_device(*, session: Session, hub_id: str, address: str) -> DeviceRecord:
    """Make the device unclaimed (an admin taking it from its owner); its row stays."""
    device = get_device(session=session, hub_id=hub_id, address=address)
    if device.owner_id is not None:
        device.owner_id = None
        _save_access(session, device)
    return device


def forget_device(*, session: Session, hub_id: str, address: str) -> None:
    """Remove this hub's row for the device (its session history is kept)."""
    session.delete(get_device(session=session, hub_id=hub_id, address=address))
    _access_changed(session)


# --- programs ------------------------------------------------------------------------------------


def _program_fields(program: Program) -> dict[str, Any]:
    return {
        "name": program.name,
        "description": program.description,
        "steps": [step.model_dump(mode="json") for step in program.steps],
    }


def to_program(record: ProgramRecord) -> Program:
    """The validated domain program of a stored row."""
    return Program.model_validate(
        {
            "slug": record.slug,
            "name": record.name,
            "description": record.description,
            "steps": record.steps,
            "builtin": record.builtin,
        }
    )


def get_program(*, session: Session, slug: str) -> ProgramRecord:
    record = session.get(ProgramRecord, slug)
    if record is None:
        raise NotFound(f"program {slug!r} does not exist")
    return record


def list_programs(*, session: Session, owner_id: int | None = None) -> list[ProgramRecord]:
    """Built-in programs plus ``owner_id``'s own (every program when ``owner_id`` is None)."""
    query = select(ProgramRecord)
    if owner_id is not None:
        query = query.where(
            or_(col(ProgramRecord.builtin).is_(True), ProgramRecord.owner_id == owner_id)
        )
    return list(
        session.exec(
            query.order_by(col(ProgramRecord.builtin).desc(), col(ProgramRecord.slug))
        ).all()
    )


def create_program(
    *, session: Session, program: Program, owner_id: int, now: datetime | None = None
) -> ProgramRecord:
    """Store a user's program (validate it against caps first); Conflict if the slug is taken."""
    if session.get(ProgramRecord, program.slug) is not None:
        raise Conflict(f"program slug {program.slug!r} is taken; choose another")
    get_user(session=session, user_id=owner_id)
    now = now or utcnow()
    record = ProgramRecord(
        slug=program.slug,
        owner_id=owner_id,
        builtin=False,
        created_at=now,
        updated_at=now,
        **_program_fields(program),
    )
    session.add(record)
    session.flush()
    return record


def _owned_program(session: Session, slug: str, owner_id: int | None) -> ProgramRecord:
    record = get_program(session=session, slug=slug)
    if owner_id is not None and record.owner_id != owner_id and not record.builtin:
        raise NotFound(f"program {slug!r} does not exist")
    if record.builtin:
        raise Conflict(f"program {slug!r} is built in and cannot be changed; copy it instead")
    return record


def update_program(
    *, session: Session, program: Program, owner_id: int | None, now: datetime | None = None
) -> ProgramRecord:
    """Replace a stored program's name, description and steps (``owner_id`` None: any owner)."""
    record = _owned_program(session, program.slug, owner_id)
    for key, value in _program_fields(program).items():
        setattr(record, key, value)
    record.updated_at = now or utcnow()
    session.add(record)
    session.flush()
    return record


def delete_program(*, session: Session, slug: str, owner_id: int | None) -> None:
    """Delete a user's program (``owner_id`` None: any owner). Built-ins cannot be deleted."""
    session.delete(_owned_program(session, slug, owner_id))
    session.flush()


def sync_builtin_programs(
    *, session: Session, programs: Iterable[Program], now: datetime | None = None
) -> int:
    """Insert or refresh the built-in library (at start-up); returns how many rows changed."""
    now = now or utcnow()
    changed = 0
    for program in programs:
        fields = _program_fields(program)
        record = session.get(ProgramRecord, program.slug)
        if record is None:
            record = ProgramRecord(
                slug=program.slug, builtin=True, created_at=now, updated_at=now, **fields
            )
        elif record.builtin and all(getattr(record, k) == v for k, v in fields.items()):
            continue
        elif not record.builtin:
            raise Conflict(
                f"a user program already uses the built-in slug {program.slug!r}; rename it"
            )
        else:
            for key, value in fields.items():
                setattr(record, key, value)
            record.updated_at = now
        session.add(record)
        changed += 1
    session.flush()
    return changed


def _save_access(session: Session, row: SQLModel) -> None:
    """Write ``row``, which changes who may see or control something, and bump the access
    epoch so that every hub's access policy reloads."""
    session.add(row)
    _access_changed(session)


def _access_changed(session: Session) -> None:
    session.flush()
    bump_access_epoch(session=session)
