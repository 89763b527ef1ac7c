"""Table models: users and tokens, devices, programs, sessions, session events, telemetry batches.

Every table is a SQLModel class; the Alembic revisions in ``migrations/versions`` create exactly
these tables (a test compares the migrated schema with ``SQLModel.metadata``). Times are stored
as timezone-aware UTC (:class:`UTCDateTime`), on SQLite as on PostgreSQL.

Rows that belong to one hub (devices, sessions) carry ``hub_id`` so several hubs can share one
PostgreSQL database; users, tokens and programs are shared by every hub on a database.

Telemetry is NOT one row per sample: :class:`TelemetryBatch` holds one flush window of one
session as a packed blob (layout in :mod:`gateway.storage.samples`), which keeps a 20-minute
50 Hz session near 1.4 MB and reads back in one indexed range scan.

This module defines schema only: it opens no connection and builds no engine.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from gateway.states import SessionState


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A ``timestamp with time zone`` that always comes back timezone-aware in UTC.

    SQLite has no time zones: values are stored as naive UTC and tagged UTC on the way out.
    Naive datetimes are refused on the way in (they are ambiguous and always a bug here).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: storage needs timezone-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only clock the storage layer reads)."""
    return datetime.now(UTC)


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    """A UTC timestamp column (a fresh Column per use: SQLAlchemy columns belong to one table)."""
    return Field(
        default=None if nullable else ...,
        sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index),
    )


def _json(*, nullable: bool = False) -> Any:
    return Field(
        default=None if nullable else ...,
        sa_column=sa.Column(sa.JSON(), nullable=nullable),
    )


class User(SQLModel, table=True):
    """A person or an API client. ``cap_ua`` is a personal amplitude cap (S1), if any."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=80, index=True)
    is_admin: bool = False
    created_at: datetime = _ts()
    consent_accepted_at: datetime | None = _ts(nullable=True)
    """When the contraindication notice was accepted (S7); None: never."""
    consent_version: str | None = Field(default=None, max_length=32)
    cap_ua: int | None = None


class ApiToken(SQLModel, table=True):
    """A bearer token. Only its keyed hash is stored; the token itself is shown once."""

    __tablename__ = "tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=80)
    created_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True)
    last_used_at: datetime | None = _ts(nullable=True)


class DeviceRecord(SQLModel, table=True):
    """A device known to one hub. The same address on two hubs is two rows."""

    __tablename__ = "devices"
    __table_args__ = (sa.UniqueConstraint("hub_id", "address", name="uq_devices_hub_address"),)

    id: int | None = Field(default=None, primary_key=True)
    hub_id: str = Field(max_length=64)
    address: str = Field(max_length=64)
    name: str = Field(default="", max_length=80)
    model: str = Field(default="", max_length=80)
    firmware: str = Field(default="", max_length=40)
    bonded: bool = False
    owner_id: int | None = Field(
        default=None, foreign_key="users.id", ondelete="SET NULL", index=True
    )
    created_at: datetime = _ts()
    last_seen: datetime | None = _ts(nullable=True)


class ProgramRecord(SQLModel, table=True):
    """A stored program. ``steps`` is the JSON of ``gateway.programs.ProgramStep`` objects."""

    __tablename__ = "programs"

    slug: str = Field(primary_key=True, max_length=48)
    name: str = Field(max_length=80)
    description: str = Field(default="", max_length=500)
    builtin: bool = False
    owner_id: int | None = Field(
        default=None, foreign_key="users.id", ondelete="CASCADE", index=True
    )
    steps: list[dict[str, Any]] = _json()
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class SessionRecord(SQLModel, table=True):
    """One treatment session: who, where, what, how it ended, and the dose it delivered (S9).

    ``dose_uas_by_zone`` maps zone names to delivered charge in µA·s; ``seconds_by_zone`` to
    seconds of output (used for minutes-per-zone statistics). ``limited_by_cap`` is True when
    the owner's personal cap lowered at least one step of the program (S1).
    """

    __tablename__ = "sessions"
    __table_args__ = (
        sa.UniqueConstraint("owner_id", "idempotency_key", name="uq_sessions_owner_idempotency"),
        sa.CheckConstraint("intensity BETWEEN 1 AND 5", name="ck_sessions_intensity"),
        sa.Index("ix_sessions_hub_state", "hub_id", "state"),
        sa.Index("ix_sessions_owner_created", "owner_id", "created_at"),
        sa.Index("ix_sessions_device_created", "device_address", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    hub_id: str = Field(max_length=64)
    owner_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    device_address: str = Field(max_length=64)
    program_slug: str = Field(max_length=48)
    intensity: int
    state: str = Field(default=SessionState.PENDING.value, max_length=16)
    end_reason: str | None = Field(default=None, max_length=500)
    idempotency_key: str | None = Field(default=None, max_length=100)
    created_at: datetime = _ts()
    started_at: datetime | None = _ts(nullable=True)
    ended_at: datetime | None = _ts(nullable=True)
    planned_s: int
    delivered_s: float = 0.0
    dose_uas_by_zone: dict[str, float] = _json()
    seconds_by_zone: dict[str, float] = _json()
    limited_by_cap: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})


class SessionEventRecord(SQLModel, table=True):
    """Something that happened in a session: a state change with its reason, a cue, a fault."""

    __tablename__ = "session_events"
    __table_args__ = (sa.Index("ix_session_events_session_ts", "session_id", "ts"),)

    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(foreign_key="sessions.id", ondelete="CASCADE", max_length=36)
    ts: datetime = _ts()
    kind: str = Field(max_length=40)
    detail: dict[str, Any] = _json()


class TelemetryBatch(SQLModel, table=True):
    """One session's samples from one flush window, packed (``gateway.storage.samples``).

    ``seq`` numbers a session's batches from 0; ``t0_ms`` is the wall-clock time (Unix ms) of
    the first sample; later samples are placed by their device-time offset from it. ``n`` is
    the sample count; ``layout`` names the packing (1: raw records of SAMPLE_SIZE bytes).
    """

    __tablename__ = "telemetry"

    session_id: str = Field(
        foreign_key="sessions.id", ondelete="CASCADE", primary_key=True, max_length=36
    )
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    first_frame: int
    t0_ms: int = Field(sa_type=sa.BigInteger)
    n: int
    layout: int = Field(default=1, sa_type=sa.SmallInteger)
    data: bytes = Field(sa_type=sa.LargeBinary)


TELEMETRY_TABLE: sa.Table = TelemetryBatch.__table__  # type: ignore[attr-defined]
"""The telemetry table for Core inserts and deletes (never per-row ORM objects)."""
