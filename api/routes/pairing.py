"""Pairing: a phone exchanges a one-time code from `mcgw pair` for its bearer token.

No bearer token here (the phone has none yet). Attempts are rate limited per client address and
globally (``RateLimiter``: 429 with Retry-After), and every wrong code also counts against the
live codes, which burn after a few wrong guesses (``gateway.storage.pairing``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from sqlmodel import Session

from api.auth import Principal, RuntimeDep
from api.errors import ApiProblem
from api.ratelimit import RateLimiter
from api.routes.me import me_public
from api.schemas import PairRequest, PairResult
from gateway.storage import pairing, repo

router = APIRouter(tags=["pairing"])


def _redeem(
    *, session: Session, code: str, client_name: str, pepper: str
) -> tuple[Principal, str] | None:
    user = pairing.redeem_pairing_code(session=session, code=code, pepper=pepper)
    if user is None:
        return None
    assert user.id is not None
    row, token = repo.create_token(
        session=session, user_id=user.id, name=client_name, pepper=pepper
    )
    return Principal.of(user, row.id), token


@router.post(
    "/pair",
    status_code=status.HTTP_201_CREATED,
    summary="Exchange a pairing code for a bearer token",
    openapi_extra={"security": []},
    responses={
        400: {"description": "Wrong, expired or used code"},
        429: {"description": "Too many attempts; see Retry-After"},
    },
)
async def pair(body: PairRequest, request: Request, runtime: RuntimeDep) -> PairResult:
    limiter: RateLimiter = request.app.state.pair_limiter
    client = request.client.host if request.client else "unknown"
    wait_s = limiter.hit(client)
    if wait_s:
        raise ApiProblem(
            429,
            f"too many pairing attempts; retry in {wait_s} s",
            kind="rate-limited",
            headers={"Retry-After": str(wait_s)},
        )
    result = await runtime.db(
        _redeem,
        code=body.code,
        client_name=body.client_name,
        pepper=runtime.settings.token_pepper.get_secret_value(),
    )
    if result is None:
        raise ApiProblem(
            400,
            "the code is wrong, expired or already used; run `mcgw pair` for a new one",
            kind="pairing-failed",
        )
    principal, token = result
    assert principal.token_id is not None
    return PairResult(token=token, token_id=principal.token_id, user=me_public(principal))
