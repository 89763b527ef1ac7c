"""The caller's own account: profile, the contraindication notice and consent (S7), personal cap,
usage statistics (streaks, minutes and dose per zone per week), and signing out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Request, Response, status
from sqlmodel import Session

from api.auth import SESSION_COOKIE, CurrentUser, Principal, RuntimeDep, principal_of
from api.errors import ApiProblem
from api.schemas.accounts import CapUpdate, ConsentAccept, ConsentPublic, MePublic
from api.schemas.stats import StatsPublic, WeekPublic
from api.strict import time_zone_names
from gateway.storage import history, repo

router = APIRouter(prefix="/me", tags=["me"])

CONSENT_VERSION = "2026-11"
CONSENT_NOTICE = (
    "Do not use microcurrent if you have a pacemaker or other implanted electronic device, "
    "epilepsy, cancer, or are pregnant; not after recent facial surgery, fillers or injections "
    "without your doctor's approval; not on broken or irritated skin; not under 18. Always use a "
    "water-based conductive gel, keep the device moving, and stop if you feel pain or tingling "
    "that does not fade."
)


def me_public(user: Principal) -> MePublic:
    return MePublic(
        id=user.user_id,
        name=user.name,
        is_admin=user.is_admin,
        cap_ua=user.cap_ua,
        consent=ConsentPublic(
            accepted=user.consent_accepted_at is not None,
            accepted_at=user.consent_accepted_at,
            version=user.consent_version,
            current_version=CONSENT_VERSION,
            notice=CONSENT_NOTICE,
        ),
    )


@router.get("", summary="Who am I: profile, consent state and personal cap")
async def get_me(user: CurrentUser) -> MePublic:
    """Includes the current contraindication notice, to show before a first session (S7)."""
    return me_public(user)


def _accept(*, session: Session, user_id: int, version: str, token_id: int | None) -> Principal:
    return principal_of(
        repo.accept_consent(session=session, user_id=user_id, version=version), token_id
    )


@router.post(
    "/consent",
    summary="Accept the contraindication notice (needed before a first session)",
    responses={409: {"description": "The notice changed; show the current one again"}},
)
async def accept_consent(body: ConsentAccept, user: CurrentUser, runtime: RuntimeDep) -> MePublic:
    """Records when and which version of the notice you accepted (S7)."""
    if body.version != CONSENT_VERSION:
        raise ApiProblem(
            409,
            f"the current notice is version {CONSENT_VERSION}; show it and accept that one",
            kind="consent-outdated",
        )
    updated = await runtime.db(
        _accept, user_id=user.user_id, version=body.version, token_id=user.token_id
    )
    await runtime.access_changed()
    return me_public(updated)


def _withdraw(*, session: Session, user_id: int, token_id: int | None) -> Principal:
    return principal_of(repo.withdraw_consent(session=session, user_id=user_id), token_id)


@router.delete("/consent", summary="Withdraw your consent: no new session until you accept again")
async def withdraw_consent(user: CurrentUser, runtime: RuntimeDep) -> MePublic:
    """A session already running is not stopped by this (stop it if you want it to end)."""
    updated = await runtime.db(_withdraw, user_id=user.user_id, token_id=user.token_id)
    await runtime.access_changed()
    return me_public(updated)


def _set_cap(
    *, session: Session, user_id: int, cap_ua: int | None, token_id: int | None
) -> Principal:
    return principal_of(
        repo.set_user_cap(session=session, user_id=user_id, cap_ua=cap_ua), token_id
    )


@router.put("/cap", summary="Set or clear your personal amplitude cap (µA)")
async def set_cap(body: CapUpdate, user: CurrentUser, runtime: RuntimeDep) -> MePublic:
    """Programs above it play lowered to it (``limited_by_cap`` on the session); the hub and
    zone caps still apply."""
    updated = await runtime.db(
        _set_cap, user_id=user.user_id, cap_ua=body.cap_ua, token_id=user.token_id
    )
    await runtime.access_changed()
    return me_public(updated)


def _stats(*, session: Session, user_id: int, tz: ZoneInfo, weeks: int) -> StatsPublic:
    streak = history.streaks(session=session, user_id=user_id, tz=tz)
    since = datetime.now(UTC) - timedelta(weeks=weeks)
    rows = history.weekly_minutes(session=session, user_id=user_id, since=since, tz=tz)
    return StatsPublic(
        streak_current=streak.current,
        streak_best=streak.best,
        last_day=streak.last_day,
        weeks=[
            WeekPublic(
                iso_year=w.iso_year,
                iso_week=w.iso_week,
                week_start=w.week_start,
                minutes_by_zone=w.minutes_by_zone,
                total_minutes=w.total_minutes,
                dose_uas_by_zone=w.dose_uas_by_zone,
            )
            for w in rows
        ],
    )


@router.get("/stats", summary="Your streaks, minutes and delivered dose per zone per ISO week")
async def get_stats(
    user: CurrentUser,
    runtime: RuntimeDep,
    tz: Annotated[
        str,
        Query(
            max_length=64,
            description="IANA time zone for days and weeks",
            json_schema_extra=time_zone_names,
        ),
    ] = "UTC",
    weeks: Annotated[int, Query(ge=1, le=104, description="How many weeks back")] = 12,
) -> StatsPublic:
    """Days and ISO weeks are counted in ``tz``; a streak counts days with a completed
    session."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ApiProblem(
            422, f"unknown time zone {tz!r}", kind="validation", errors=[("query.tz", str(exc))]
        ) from exc
    stats: StatsPublic = await runtime.db(_stats, user_id=user.user_id, tz=zone, weeks=weeks)
    return stats


def _revoke(*, session: Session, token_id: int, user_id: int) -> None:
    repo.revoke_token(session=session, token_id=token_id, user_id=user_id)


@router.post(
    "/sign-out",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Sign out: revoke the token this request used and clear the web page's cookie",
)
async def sign_out(request: Request, user: CurrentUser, runtime: RuntimeDep) -> Response:
    """The token stops working at once (its open WebSocket connections are closed with 4401);
    the user's other phones and tokens are untouched."""
    if user.token_id is not None:
        await runtime.db(_revoke, token_id=user.token_id, user_id=user.user_id)
        runtime.access.revoke(user.token_id)
        await runtime.access_changed()
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response
