"""Sessions: start (idempotent), list and read history, pause, resume, stop, change intensity,
and the recorded telemetry as JSON or CSV.

Ownership (decided by the access policy, ``gateway.access``): a session is visible only to its
owner and to admins; for anyone else it does not exist (404 on every route, so ids are not
confirmed to strangers). Owner and admins control it (S8). Consent (S7) is checked before a
start: 403 ``consent-required``. ``find_session`` is the one place that looks a session up for
a caller (live, else stored, else 404), for REST and the WebSocket alike.

Idempotency: ``POST /sessions`` with an ``Idempotency-Key`` header starts at most one session
per (user, key). The first request answers 201; a retry, even one sent while the first is still
starting, answers 200 with the same session (whatever its body says). Keys are remembered in
the session manager, in the database (across restarts) and, while a start is in flight, here.

A live session (held by this hub's session manager) is shown from memory, where its state is
current; an ended or older one from the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Literal, NoReturn

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from sqlmodel import Session as DbSession

from api.auth import CurrentUser, Principal, RuntimeDep
from api.errors import ApiProblem, unauthorized
from api.metrics import ApiMetrics
from api.queries import session_by_idempotency_key
from api.routes.devices import find_device, require_control
from api.routes.programs import resolve_program
from api.schemas import (
    MAX_DB_ID,
    Address,
    LevelChange,
    SessionDetail,
    SessionEventPublic,
    SessionPage,
    SessionPublic,
    SessionStart,
    TelemetryPublic,
    TelemetryRowPublic,
)
from api.strict import QueryDateTime
from gateway.errors import NotFound, StorageUnavailable
from gateway.runtime import Runtime
from gateway.sessions import Session as LiveSession
from gateway.storage import history
from gateway.storage.history import MAX_PAGE
from gateway.storage.history import SessionDetail as StoredDetail
from gateway.storage.models import SessionRecord, SessionState

router = APIRouter(prefix="/sessions", tags=["sessions"])
log = logging.getLogger(__name__)

KEY_LOOKUP_TIMEOUT_S = 1.0
"""How long a start waits for storage to say whether its Idempotency-Key was used before."""

SessionIdPath = Annotated[str, Path(min_length=1, max_length=36, pattern="^[0-9a-fA-F-]+$")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=100,
        pattern="^[\\x21-\\x7e]+$",
        description="Any unique string per intended start (a UUID); retries reuse it.",
    ),
]


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def from_live(session: LiveSession) -> SessionPublic:
    figures = session.figures.snapshot()
    return SessionPublic(
        id=session.id,
        owner_id=int(session.owner),
        device=session.address,
        program=session.program.slug,
        level=session.level,
        state=session.state.value,
        reason=session.reason,
        created_at=datetime.fromtimestamp(session.created_at, UTC),
        started_at=_ts(session.started_at),
        ended_at=_ts(session.ended_at),
        planned_s=session.program.duration_s,
        position_s=session.position_s,
        delivered_s=figures["output_s"],
        dose_uas_by_zone=figures["charge_uas_by_zone"],
        limited_by_cap=session.limited_by_cap,
        live=session.active,
    )


def from_record(record: SessionRecord) -> SessionPublic:
    return SessionPublic(
        id=record.id,
        owner_id=record.owner_id,
        device=record.device_address,
        program=record.program_slug,
        level=record.intensity,
        state=SessionState(record.state).value,
        reason=record.end_reason,
        created_at=record.created_at,
        started_at=record.started_at,
        ended_at=record.ended_at,
        planned_s=record.planned_s,
        position_s=None,
        delivered_s=record.delivered_s,
        dose_uas_by_zone=record.dose_uas_by_zone,
        limited_by_cap=record.limited_by_cap,
        live=False,
    )


def visible_live(runtime: Runtime, user: Principal, session_id: str) -> LiveSession | None:
    """The session from memory if this hub holds it and the user may see it (no storage)."""
    session = runtime.sessions.sessions.get(session_id)
    if session is not None and runtime.access.may_see_owned(user, int(session.owner)):
        return session
    return None


async def find_session(
    runtime: Runtime, user: Principal, session_id: str
) -> tuple[LiveSession | None, StoredDetail | None]:
    """A session the user may see: from memory when this hub holds it (then storage is not
    asked), else from storage; 404 when neither has one visible to the user."""
    live = visible_live(runtime, user, session_id)
    if live is not None:
        return live, None
    stored: StoredDetail | None = await runtime.db(_detail, session_id=session_id)
    if stored is None or not runtime.access.may_see_owned(user, stored.session.owner_id):
        raise _not_found(session_id)
    return None, stored


def _detail(*, session: DbSession, session_id: str) -> StoredDetail | None:
    try:
        return history.get_session_detail(session=session, session_id=session_id)
    except NotFound:
        return None


def _not_found(session_id: str) -> ApiProblem:
    return ApiProblem(404, f"no session {session_id} visible to you", kind="not-found")


# --- start ----------------------------------------------------------------------------------------

Inflight = dict[tuple[int, str], asyncio.Future[str]]
"""Starts in flight per (user id, Idempotency-Key); one dict per app (``app.state``)."""


def _existing(runtime: Runtime, user: Principal, key: str) -> LiveSession | None:
    for session in runtime.sessions.sessions.values():
        if session.idempotency_key == key and session.owner == user.owner:
            return session
    return None


async def _first_result(runtime: Runtime, future: asyncio.Future[str]) -> SessionPublic:
    """What a duplicate of an in-flight start answers: the first request's session."""
    try:
        session_id = await asyncio.shield(future)
    except asyncio.CancelledError:
        if not future.cancelled():
            raise  # this request itself was cancelled
        raise ApiProblem(
            409, "the first request with this Idempotency-Key was abandoned; retry", kind="conflict"
        ) from None
    return from_live(runtime.sessions.get(session_id))


async def _replay(
    runtime: Runtime, inflight: Inflight, user: Principal, key: str
) -> SessionPublic | None:
    """The session this (user, key) already started, from any source, or None."""
    future = inflight.get((user.user_id, key))
    if future is not None:
        return await _first_result(runtime, future)
    live = _existing(runtime, user, key)
    if live is not None:
        return from_live(live)
    if runtime.reader is None:
        return None
    try:
        record = await runtime.reader.run(
            session_by_idempotency_key,
            timeout_s=KEY_LOOKUP_TIMEOUT_S,
            owner_id=user.user_id,
            key=key,
        )
    except StorageUnavailable as exc:
        # A session must still start while storage is away (its record is journaled); only a
        # key used before the hub's last restart goes unrecognised meanwhile (docs/api.md).
        log.warning("Idempotency-Key checked against this run's sessions only: %s", exc)
        return None
    return None if record is None else from_record(record)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Start a session (idempotent with an Idempotency-Key header)",
    responses={
        200: {"model": SessionPublic, "description": "Replayed: this key already started it"},
        403: {"description": "Consent missing (consent-required) or device not claimed"},
        409: {"description": "The device is busy or unavailable"},
    },
)
async def start_session(
    body: SessionStart,
    request: Request,
    user: CurrentUser,
    runtime: RuntimeDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> SessionPublic:
    """Starts ``program`` on your ``device`` at ``level``; output ramps up from zero (S2).
    Needs accepted consent (403 ``consent-required``, S7) and a device you control (403
    ``claim-required``); one session per device (409, S8). With an ``Idempotency-Key`` a
    retry answers 200 with the session the first request started."""
    inflight: Inflight = request.app.state.inflight_starts
    if idempotency_key is not None:
        replayed = await _replay(runtime, inflight, user, idempotency_key)
        if replayed is not None:
            response.status_code = status.HTTP_200_OK
            return replayed
    _may_start(runtime, user, body.device)
    program, _ = await resolve_program(runtime, user, body.program)
    # Again after the program lookup's await: a revocation, consent withdrawn or hand-over
    # meanwhile applies to this start. (A hand-over during the device's own start is caught
    # by the runtime, which stops a session whose device changed hands.)
    user = runtime.access.principal(user.token_id) or _revoked()
    address = _may_start(runtime, user, body.device)
    future: asyncio.Future[str] | None = None
    if idempotency_key is not None:
        # Look again, with no await between this look and the registration below: a duplicate
        # that arrived during the awaits above is either in flight or already started.
        key = (user.user_id, idempotency_key)
        if key in inflight:
            response.status_code = status.HTTP_200_OK
            return await _first_result(runtime, inflight[key])
        live = _existing(runtime, user, idempotency_key)
        if live is not None:
            response.status_code = status.HTTP_200_OK
            return from_live(live)
        future = inflight[key] = asyncio.get_running_loop().create_future()
    try:
        session = await runtime.sessions.start(
            owner=user.owner,
            address=address,
            program=program,
            level=body.level,
            consented=True,
            user_cap_ua=user.cap_ua,
            idempotency_key=idempotency_key,
        )
        if future is not None:
            future.set_result(session.id)
    except Exception as exc:
        if future is not None:
            future.set_exception(exc)
            future.exception()  # mark it retrieved: no warning when no duplicate was waiting
        raise
    finally:
        if future is not None:
            future.cancel()  # a no-op once it has a result; tells waiters if we were cancelled
            inflight.pop((user.user_id, idempotency_key or ""), None)
    return from_live(session)


def _may_start(runtime: Runtime, user: Principal, device: str) -> str:
    """The device's address if ``user`` may start a session on it now (S7, S8); else 403/404."""
    if user.consent_accepted_at is None:
        raise ApiProblem(
            403,
            "accept the contraindication notice before a first session (POST /api/v1/me/consent)",
            kind="consent-required",
        )
    address, access = find_device(runtime, user, device)
    require_control(address, access)
    return address


def _revoked() -> NoReturn:
    raise unauthorized("the bearer token was revoked while the request ran; pair again")


# --- read -----------------------------------------------------------------------------------------

StateName = Literal["pending", "running", "paused", "completed", "stopped", "failed", "interrupted"]


def _page(
    *,
    session: DbSession,
    owner_id: int | None,
    device: str | None,
    states: list[str] | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
) -> history.Page[SessionRecord]:
    return history.list_sessions(
        session=session,
        owner_id=owner_id,
        device_address=device,
        states=states,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )


@router.get("", summary="Your sessions, newest first, with filters and paging")
async def list_sessions(
    user: CurrentUser,
    runtime: RuntimeDep,
    state: Annotated[list[StateName] | None, Query(description="Repeat to match several")] = None,
    device: Annotated[Address | None, Query()] = None,
    since: Annotated[
        QueryDateTime | None,
        Query(description="created_at >= since (ISO 8601; no zone: UTC)"),
    ] = None,
    until: Annotated[
        QueryDateTime | None,
        Query(description="created_at < until (ISO 8601; no zone: UTC)"),
    ] = None,
    owner_id: Annotated[
        int | None, Query(ge=1, le=MAX_DB_ID, description="Admins only: another user's")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_ID)] = 0,
) -> SessionPage:
    """Filters combine (AND); ``state`` may repeat. Page with ``limit`` and ``offset``:
    ``next_offset`` is null on the last page. Admins see everyone's, or one user's with
    ``owner_id``."""
    if owner_id is not None and not runtime.access.may_see_owned(user, owner_id):
        raise ApiProblem(403, "only admins list other users' sessions", kind="forbidden")
    owner = owner_id if user.is_admin else user.user_id
    page = await runtime.db(
        _page,
        owner_id=owner,
        device=device.upper() if device else None,
        states=list(state) if state else None,
        since=_aware(since),
        until=_aware(until),
        limit=limit,
        offset=offset,
    )
    items = []
    for record in page.items:
        live = runtime.sessions.sessions.get(record.id)
        items.append(from_live(live) if live is not None else from_record(record))
    return SessionPage(
        items=items,
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        next_offset=page.next_offset,
    )


def _aware(value: datetime | None) -> datetime | None:
    """Storage refuses naive times: a time without a zone is taken as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@router.get("/{session_id}", summary="One session with its events (state changes, cues, faults)")
async def get_session(
    session_id: SessionIdPath, user: CurrentUser, runtime: RuntimeDep
) -> SessionDetail:
    """A live session as it is now, an ended one as recorded, with every event so far."""
    live, stored = await find_session(runtime, user, session_id)
    if live is not None:
        # Its events so far are in storage (written in order); a live view needs the state.
        stored = await runtime.db(_detail, session_id=session_id)
        base = from_live(live)
    else:
        assert stored is not None
        base = from_record(stored.session)
    events = [
        SessionEventPublic(ts=e.ts, kind=e.kind, detail=e.detail)
        for e in (stored.events if stored is not None else [])
    ]
    return SessionDetail(**base.model_dump(), events=events)


async def control_target(runtime: Runtime, user: Principal, session_id: str) -> LiveSession:
    """The live session the user may control; 404 if invisible, 409 if it is only history."""
    live, stored = await find_session(runtime, user, session_id)
    if live is not None:
        return live
    assert stored is not None
    raise ApiProblem(
        409,
        f"session {session_id} is {stored.session.state} and not held by this hub",
        kind="conflict",
    )


# --- control --------------------------------------------------------------------------------------


async def stop_visible(
    runtime: Runtime, user: Principal, session_id: str, metrics: ApiMetrics
) -> SessionPublic:
    """Stop a session the user may control (REST and WebSocket); an ended one is returned as is.

    A session this hub holds is stopped from memory alone: storage is never waited for (S3).
    """
    live, stored = await find_session(runtime, user, session_id)
    if live is None:
        assert stored is not None
        return from_record(stored.session)  # ended already: stopping again changes nothing
    began = time.perf_counter()
    session = await runtime.sessions.stop(
        session_id,
        actor=user.owner,
        is_admin=user.is_admin,
        reason=f"stopped by user {user.user_id}",
    )
    metrics.stop_latency.observe(time.perf_counter() - began)
    return from_live(session)


@router.post("/{session_id}/stop", summary="Stop (always wins; idempotent)")
async def stop_session(
    session_id: SessionIdPath, request: Request, user: CurrentUser, runtime: RuntimeDep
) -> SessionPublic:
    """Output stops at once, whatever the session was doing (S3), and storage is never waited
    for. Stopping an ended session answers it unchanged."""
    return await stop_visible(runtime, user, session_id, request.app.state.metrics)


@router.post(
    "/{session_id}/pause",
    summary="Pause a running session",
    responses={409: {"description": "The session is not running, or the device did not pause"}},
)
async def pause_session(
    session_id: SessionIdPath, user: CurrentUser, runtime: RuntimeDep
) -> SessionPublic:
    """Output stops and the program position is kept; pausing a paused session is a no-op."""
    target = await control_target(runtime, user, session_id)
    session = await runtime.sessions.pause(target.id, actor=user.owner, is_admin=user.is_admin)
    return from_live(session)


@router.post(
    "/{session_id}/resume",
    summary="Resume a paused session (ramps up again)",
    responses={
        409: {"description": "The session has ended or waits for its device, or no skin contact"}
    },
)
async def resume_session(
    session_id: SessionIdPath, user: CurrentUser, runtime: RuntimeDep
) -> SessionPublic:
    """Output ramps up from zero again (S2); refused without skin contact (S5). Resuming a
    running session is a no-op."""
    target = await control_target(runtime, user, session_id)
    session = await runtime.sessions.resume(target.id, actor=user.owner, is_admin=user.is_admin)
    return from_live(session)


@router.put(
    "/{session_id}/level",
    summary="Change the intensity level (increases ramp up)",
    responses={409: {"description": "The session has ended, or the device did not change"}},
)
async def set_level(
    session_id: SessionIdPath, body: LevelChange, user: CurrentUser, runtime: RuntimeDep
) -> SessionPublic:
    """An increase ramps up (S2); a decrease applies at once. Caps still apply (S1)."""
    target = await control_target(runtime, user, session_id)
    session = await runtime.sessions.set_level(
        target.id, body.level, actor=user.owner, is_admin=user.is_admin
    )
    return from_live(session)


# --- telemetry ------------------------------------------------------------------------------------


def _rows(*, session: DbSession, session_id: str, every_ms: int | None) -> list[TelemetryRowPublic]:
    return [
        TelemetryRowPublic(
            t_ms=r.t_ms,
            n=r.n,
            frame=r.frame,
            state=r.state,
            segment_id=r.segment_id,
            current_mean_ua=r.current_mean_ua,
            current_peak_ua=r.current_peak_ua,
            impedance_ohm=r.impedance_ohm,
            contact_quality=r.contact_quality,
            battery_pct=r.battery_pct,
            temperature_c=r.temperature_c,
            faults=list(r.faults),
        )
        for r in history.telemetry_rows(session=session, session_id=session_id, every_ms=every_ms)
    ]


def _csv(*, session: DbSession, session_id: str, every_ms: int | None) -> str:
    return history.telemetry_csv(session=session, session_id=session_id, every_ms=every_ms)


@router.get(
    "/{session_id}/telemetry",
    response_model=TelemetryPublic,
    summary="Recorded telemetry, every sample or averaged per every_ms, as JSON or CSV",
    responses={
        200: {
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "t_ms,time_utc,n,frame,state,segment_id,current_mean_ua,"
                    "current_peak_ua,impedance_ohm,contact_quality,battery_pct,temperature_c,"
                    "faults\n1796025601000,2026-11-30T08:00:01.000Z,50,1200,running,0,178.4,"
                    "181,5210.0,92.0,81,31.5,\n",
                }
            }
        }
    },
)
async def telemetry(
    session_id: SessionIdPath,
    user: CurrentUser,
    runtime: RuntimeDep,
    format: Annotated[Literal["json", "csv"], Query(description="Or Accept: text/csv")] = "json",
    every_ms: Annotated[int | None, Query(ge=10, le=3_600_000)] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Every stored sample, or one row per ``every_ms`` window (means, peaks, minimum battery,
    every fault seen). CSV with ``format=csv`` or ``Accept: text/csv``. A live session's last
    samples are flushed first, so the answer is complete up to now."""
    live, _ = await find_session(runtime, user, session_id)
    if live is not None and runtime.writer is not None:
        await runtime.writer.flush()  # the last window of a live session is still buffered
    if format == "csv" or (accept is not None and "text/csv" in accept):
        text: str = await runtime.db(_csv, session_id=session_id, every_ms=every_ms)
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="session-{session_id}.csv"'},
        )
    rows: list[TelemetryRowPublic] = await runtime.db(
        _rows, session_id=session_id, every_ms=every_ms
    )
    body = TelemetryPublic(session_id=session_id, every_ms=every_ms, rows=rows)
    return Response(body.model_dump_json(), media_type="application/json")
