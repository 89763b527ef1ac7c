"""Treatment plans and adherence: /api/v1/plans and /api/v1/me/adherence (docs/plans.md).

Ownership is the sessions' rule, asked of the access policy: a plan is seen and changed by its
owner and by admins; for anyone else it does not exist (404). An admin may create a plan for
another user (``owner_id``) and read their adherence (``?owner_id=``).

A plan is checked twice: its shape by the schema (422 naming the field) and whether it makes a
schedule (time zone, phase order and bounds) by ``gateway.plans.schedule.validate``: 422
``invalid-plan``, naming the field too. The rules of adherence live in ``gateway.plans``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from sqlmodel import Session

from api.auth import CurrentUser, Principal, RuntimeDep
from api.errors import ApiProblem
from api.schemas.fields import MAX_DB_ID
from api.schemas.plans import (
    AdherencePublic,
    DayPublic,
    PhaseBody,
    PlanCreate,
    PlanPublic,
    PlanUpdate,
    SlotPublic,
    TemplatePublic,
    WeekAdherencePublic,
)
from api.strict import QueryDateTime
from gateway.errors import NotFound
from gateway.plans import adherence as rules
from gateway.plans import service
from gateway.plans.codec import phase_to_json, schedule_of
from gateway.plans.schedule import PlanError, validate, zone
from gateway.plans.templates import BY_SLUG, TEMPLATES
from gateway.programs import Program
from gateway.runtime import Runtime
from gateway.storage import plans as store
from gateway.storage import repo
from gateway.storage.plans import PlanRecord

router = APIRouter(tags=["plans"])

WEEK = timedelta(days=7)
LONGEST = timedelta(days=400)
"""A report covers at most this much (a longer range is cut)."""
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)

PlanId = Annotated[int, Path(ge=1, le=MAX_DB_ID, examples=[1])]
OwnerQuery = Annotated[
    int | None, Query(ge=1, le=MAX_DB_ID, description="Admins only: another user's")
]


def _public(plan: PlanRecord) -> PlanPublic:
    return PlanPublic.model_validate(plan, from_attributes=True)


def _checked(starts_on: date, phases: list[dict[str, Any]], history: list[dict[str, Any]]) -> None:
    """422 ``invalid-plan`` naming every field that keeps the phases from making a schedule."""
    problems = [
        (f"phases[{i}].days", "give weeks or days, not both")
        for i, phase in enumerate(phases)
        if phase.get("weeks") and phase.get("days")
    ]
    try:
        zone(history[-1]["name"])
        validate(schedule_of(starts_on, phases, history))
    except PlanError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ApiProblem(
            422, "the plan cannot be scheduled; see errors", kind="invalid-plan", errors=problems
        )


async def _visible(runtime: Runtime, user: Principal, plan_id: int) -> PlanRecord:
    missing = ApiProblem(404, f"no plan {plan_id} visible to you", kind="not-found")
    try:
        plan: PlanRecord = await runtime.db(store.get_plan, plan_id=plan_id)
    except NotFound as exc:
        raise missing from exc
    if not runtime.access.may_see_owned(user, plan.owner_id):
        raise missing
    return plan


def _changed(runtime: Runtime) -> None:
    if runtime.planner is not None:
        runtime.planner.changed()


@router.get("/plans/templates", summary="Built-in plan templates")
async def list_templates(user: CurrentUser) -> list[TemplatePublic]:
    """Start a plan from one with ``POST /api/v1/plans {"template": slug, ...}``."""
    return [
        TemplatePublic(
            slug=t.slug,
            name=t.name,
            description=t.description,
            phases=[PhaseBody.model_validate(phase_to_json(p)) for p in t.phases],
        )
        for t in TEMPLATES
    ]


@router.get("/plans", summary="Your plans")
async def list_plans(
    user: CurrentUser, runtime: RuntimeDep, owner_id: OwnerQuery = None
) -> list[PlanPublic]:
    """Oldest first. Admins see everyone's, or one user's with ``owner_id``."""
    if owner_id is not None and not runtime.access.may_see_owned(user, owner_id):
        raise ApiProblem(403, "only admins list other users' plans", kind="forbidden")
    owner = owner_id if user.is_admin else user.user_id
    plans: list[PlanRecord] = await runtime.db(store.list_plans, owner_id=owner)
    return [_public(p) for p in plans]


@router.post("/plans", status_code=status.HTTP_201_CREATED, summary="Create a plan")
async def create_plan(body: PlanCreate, user: CurrentUser, runtime: RuntimeDep) -> PlanPublic:
    """From a template (``template``) or explicit ``phases`` (given both, the phases are the
    plan). ``starts_on`` defaults to today in ``time_zone``."""
    owner = body.owner_id or user.user_id
    if not runtime.access.may_see_owned(user, owner):
        raise ApiProblem(403, "only admins create plans for other users", kind="forbidden")
    if runtime.access.user(owner) is None:
        raise ApiProblem(404, f"no user {owner}", kind="not-found")
    if body.template is None and body.phases is None:
        raise ApiProblem(
            422,
            "give a template or phases",
            kind="validation",
            errors=[("template", "give a template or phases")],
        )
    template = BY_SLUG[body.template] if body.template else None
    if body.phases is not None:
        phases = [p.model_dump(mode="json") for p in body.phases]
    else:
        assert template is not None
        phases = [phase_to_json(p) for p in template.phases]
    try:
        tz = zone(body.time_zone)
    except PlanError as exc:
        raise ApiProblem(422, str(exc), kind="invalid-plan", errors=exc.problems) from exc
    starts_on = body.starts_on or datetime.now(tz).date()
    history = [{"since": None, "name": body.time_zone}]
    _checked(starts_on, phases, history)
    plan: PlanRecord = await runtime.db(
        store.create_plan,
        owner_id=owner,
        name=body.name or (template.name if template else "My plan"),
        template=template.slug if template else None,
        starts_on=starts_on,
        time_zone=body.time_zone,
        zone_history=history,
        phases=phases,
        quiet_hours=body.quiet_hours.model_dump() if body.quiet_hours else None,
    )
    _changed(runtime)
    return _public(plan)


@router.get("/plans/{plan_id:int}", summary="One plan")
async def get_plan(plan_id: PlanId, user: CurrentUser, runtime: RuntimeDep) -> PlanPublic:
    """Yours (an admin: anyone's)."""
    return _public(await _visible(runtime, user, plan_id))


@router.patch(
    "/plans/{plan_id:int}", summary="Change a plan's name, phases, time zone or quiet hours"
)
async def update_plan(
    plan_id: PlanId, body: PlanUpdate, user: CurrentUser, runtime: RuntimeDep
) -> PlanPublic:
    """A new ``time_zone`` applies from now: days that began before keep their slots (moves
    are recorded in ``zone_history``). New ``phases`` replace the old for the whole plan."""
    plan = await _visible(runtime, user, plan_id)
    fields: dict[str, Any] = {}
    if body.name is not None:
        fields["name"] = body.name
    if body.phases is not None:
        fields["phases"] = [p.model_dump(mode="json") for p in body.phases]
    if body.starts_on is not None:
        fields["starts_on"] = body.starts_on
    if body.time_zone is not None and body.time_zone != plan.time_zone:
        fields["time_zone"] = body.time_zone
        since = datetime.now(UTC).isoformat()
        fields["zone_history"] = [*plan.zone_history, {"since": since, "name": body.time_zone}]
    if body.quiet_hours is not None:
        fields["quiet_hours"] = body.quiet_hours.model_dump()
    elif body.clear_quiet_hours:
        fields["quiet_hours"] = None
    _checked(
        fields.get("starts_on", plan.starts_on),
        fields.get("phases", plan.phases),
        fields.get("zone_history", plan.zone_history),
    )
    updated: PlanRecord = await runtime.db(store.update_plan, plan_id=plan_id, **fields)
    _changed(runtime)
    return _public(updated)


@router.delete(
    "/plans/{plan_id:int}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a plan (sessions stay in history)",
)
async def delete_plan(plan_id: PlanId, user: CurrentUser, runtime: RuntimeDep) -> Response:
    """Its reminders and events stop."""
    await _visible(runtime, user, plan_id)
    await runtime.db(store.delete_plan, plan_id=plan_id)
    _changed(runtime)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def program_seconds(
    session: Session, builtins: Mapping[str, Program], slugs: set[str]
) -> dict[str, dict[str, float]]:
    """Seconds per zone of each named program (built-in or stored), for planned minutes."""
    found: list[Program] = []
    for slug in slugs:
        program = builtins.get(slug)
        if program is None:
            try:
                program = repo.to_program(repo.get_program(session=session, slug=slug))
            except NotFound:
                continue
        found.append(program)
    return service.zone_seconds(found)


def _report(
    *,
    session: Session,
    plan_id: int,
    since: datetime | None,
    until: datetime | None,
    week: date | None,
    now: datetime,
    builtins: Mapping[str, Program],
) -> service.Report:
    plan = store.get_plan(session=session, plan_id=plan_id)
    if since is None or until is None:
        start, end = service.this_week(plan, now)
        if week is not None:
            tz = zone(plan.time_zone)
            start, end = rules.week_bounds(week, tz)
        since, until = since or start, until or end
    slugs = {slug for phase in plan.phases for slug in phase.get("programs") or ()}
    return service.report(
        session=session,
        plan_id=plan_id,
        since=since,
        until=until,
        now=now,
        program_seconds=program_seconds(session, builtins, slugs),
    )


def _slot(item: rules.SlotStatus) -> SlotPublic:
    slot = item.slot
    return SlotPublic(
        due_at=slot.due_at,
        window_start=slot.window_start,
        window_end=slot.window_end,
        local_day=slot.local_day,
        time_zone=slot.tz,
        phase=slot.phase,
        flexible=slot.flexible,
        status=item.status,
        credit=item.credit,
        sessions=list(item.sessions),
    )


def adherence_public(report: service.Report) -> AdherencePublic:
    return AdherencePublic(
        plan_id=report.plan_id,
        time_zone=report.time_zone,
        since=report.since,
        until=report.until,
        now=report.now,
        due=bool(report.due_now),
        due_now=[_slot(s) for s in report.due_now],
        next_due=_slot(report.next_due) if report.next_due else None,
        streak_current=report.streak.current,
        streak_best=report.streak.best,
        days=[
            DayPublic(day=d.day, expected=d.expected, done=d.done, credit=d.credit)
            for d in report.days
        ],
        weeks=[WeekAdherencePublic.model_validate(w, from_attributes=True) for w in report.weeks],
        slots=[_slot(s) for s in report.slots],
    )


@router.get("/me/adherence", tags=["me"], summary="Done versus expected, and what is due")
async def get_adherence(
    user: CurrentUser,
    runtime: RuntimeDep,
    plan: Annotated[
        int | None, Query(ge=1, le=MAX_DB_ID, description="Default: your newest")
    ] = None,
    since: Annotated[QueryDateTime | None, Query(description="Slots due from (ISO 8601)")] = None,
    until: Annotated[QueryDateTime | None, Query(description="Slots due before (ISO 8601)")] = None,
    week: Annotated[
        date | None,
        Query(ge=EARLIEST.date(), le=LATEST.date(), description="Any day of the week to report"),
    ] = None,
    owner_id: OwnerQuery = None,
) -> AdherencePublic:
    """Without ``since``/``until``: the ISO week of ``week`` (default: this week) in the plan's
    time zone. With one of them, the 7 days from ``since`` or before ``until``; a range is cut
    at 400 days (and is empty when ``until`` is not after ``since``). ``due_now`` and
    ``next_due`` are always as of now. Rules: docs/plans.md."""
    if owner_id is not None and not runtime.access.may_see_owned(user, owner_id):
        raise ApiProblem(403, "only admins read other users' adherence", kind="forbidden")
    owner = owner_id or user.user_id
    if plan is None:
        mine: list[PlanRecord] = await runtime.db(store.list_plans, owner_id=owner)
        if not mine:
            raise ApiProblem(
                404, "no plan: create one first (POST /api/v1/plans)", kind="not-found"
            )
        assert mine[-1].id is not None
        plan = mine[-1].id
    else:
        await _visible(runtime, user, plan)
    since, until = _range(_aware(since), _aware(until))
    report: service.Report = await runtime.db(
        _report,
        plan_id=plan,
        since=since,
        until=until,
        week=week,
        now=datetime.now(UTC),
        builtins=runtime.programs,
    )
    return adherence_public(report)


def _range(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """The range a report covers (None, None: a week, chosen with the plan's zone)."""
    if since is None and until is None:
        return None, None
    if since is None:
        assert until is not None
        end = _clamp(until)
        start = end - WEEK
    else:
        start = _clamp(since)
        end = start + WEEK if until is None else _clamp(until)
    return start, max(start, min(end, start + LONGEST))


def _clamp(value: datetime) -> datetime:
    return min(max(value, EARLIEST), LATEST)


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
