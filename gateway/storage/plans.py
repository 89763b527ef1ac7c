"""Treatment plans: the ``plans`` table and its repository functions.

A plan belongs to one user (deleted with them). Its phases, time-zone timeline and quiet hours
are JSON in the shapes of ``gateway.plans.codec``; this module stores them as given and does
not validate them (``gateway.plans.schedule.validate`` does, before they get here).

Every function takes keyword-only arguments and a SQLModel ``Session``; it flushes but never
commits (the caller decides the transaction). A missing plan raises ``NotFound``; with
``owner_id`` given, another user's plan is missing too. Who may ask is the API's decision.
``ended_sessions`` is the one read of session rows adherence needs.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from gateway.errors import NotFound
from gateway.states import TERMINAL_STATES
from gateway.storage.models import SessionRecord, UTCDateTime, utcnow


class PlanRecord(SQLModel, table=True):
    """One user's treatment plan (see docs/plans.md)."""

    __tablename__ = "plans"

    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    name: str = Field(max_length=80)
    template: str | None = Field(default=None, max_length=48)
    starts_on: date
    time_zone: str = Field(max_length=64)
    """The zone in effect now (the last entry of ``zone_history``)."""
    zone_history: list[dict[str, Any]] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    phases: list[dict[str, Any]] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    quiet_hours: dict[str, str] | None = Field(
        default=None, sa_column=sa.Column(sa.JSON(), nullable=True)
    )
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


def create_plan(
    *,
    session: Session,
    owner_id: int,
    name: str,
    starts_on: date,
    time_zone: str,
    zone_history: list[dict[str, Any]],
    phases: list[dict[str, Any]],
    quiet_hours: dict[str, str] | None = None,
    template: str | None = None,
    now: datetime | None = None,
) -> PlanRecord:
    stamp = now or utcnow()
    plan = PlanRecord(
        owner_id=owner_id,
        name=name,
        template=template,
        starts_on=starts_on,
        time_zone=time_zone,
        zone_history=zone_history,
        phases=phases,
        quiet_hours=quiet_hours,
        created_at=stamp,
        updated_at=stamp,
    )
    session.add(plan)
    session.flush()
    return plan


def get_plan(*, session: Session, plan_id: int, owner_id: int | None = None) -> PlanRecord:
    plan = session.get(PlanRecord, plan_id)
    if plan is None or (owner_id is not None and plan.owner_id != owner_id):
        raise NotFound(f"plan {plan_id} does not exist")
    return plan


def list_plans(*, session: Session, owner_id: int | None = None) -> list[PlanRecord]:
    """Plans oldest first: one user's, or everyone's (``owner_id`` None)."""
    query = select(PlanRecord).order_by(col(PlanRecord.id))
    if owner_id is not None:
        query = query.where(PlanRecord.owner_id == owner_id)
    return list(session.exec(query).all())


def plan_owners(*, session: Session) -> list[int]:
    """The users who have at least one plan, in id order."""
    query = select(PlanRecord.owner_id).distinct().order_by(col(PlanRecord.owner_id))
    return list(session.exec(query).all())


def update_plan(
    *, session: Session, plan_id: int, owner_id: int | None = None, **fields: Any
) -> PlanRecord:
    """Replace the given fields (``name``, ``phases``, ``time_zone``, ``zone_history``, ...)."""
    plan = get_plan(session=session, plan_id=plan_id, owner_id=owner_id)
    for key, value in fields.items():
        if key not in PlanRecord.model_fields or key in ("id", "owner_id", "created_at"):
            raise ValueError(f"{key!r} is not a plan field that can change")
        setattr(plan, key, value)
    plan.updated_at = utcnow()
    session.add(plan)
    session.flush()
    return plan


def delete_plan(*, session: Session, plan_id: int, owner_id: int | None = None) -> None:
    session.delete(get_plan(session=session, plan_id=plan_id, owner_id=owner_id))
    session.flush()


def ended_sessions(
    *, session: Session, owner_id: int, since: datetime, until: datetime
) -> list[SessionRecord]:
    """The user's ended sessions created in [since, until), oldest first."""
    return list(
        session.exec(
            select(SessionRecord)
            .where(
                SessionRecord.owner_id == owner_id,
                col(SessionRecord.state).in_([s.value for s in TERMINAL_STATES]),
                col(SessionRecord.created_at) >= since,
                col(SessionRecord.created_at) < until,
            )
            .order_by(col(SessionRecord.created_at))
        ).all()
    )
