"""Pairing: a phone exchanges a one-time code from `mcgw pair` for its bearer token.

No bearer token here (the phone has none yet). Wrong codes lock out the address that sends them
(``api.ratelimit.PairingGuard``: 429 ``pairing-locked-out`` with Retry-After) and never harm
anyone else's code. A refused code says why in ``errors[0].reason``: ``unknown``, ``expired``
or ``used``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from sqlmodel import Session

from api.auth import Principal, RuntimeDep, principal_of
from api.errors import ApiProblem
from api.ratelimit import PairingGuard
from api.routes.me import me_public
from api.schemas.accounts import PairRequest, PairResult
from gateway.storage import pairing, repo
from gateway.storage.pairing import Refusal

router = APIRouter(tags=["pairing"])

_ADVICE = {
    Refusal.UNKNOWN: "this code is unknown: check the digits, or run `mcgw pair` for a new one",
    Refusal.EXPIRED: "this code has expired; run `mcgw pair` for a new one",
    Refusal.USED: "this code was already used; run `mcgw pair` for a new one",
}


def _redeem(
    *, session: Session, code: str, client_name: str, pepper: str
) -> tuple[Principal, str] | Refusal:
    user = pairing.redeem_pairing_code(session=session, code=code, pepper=pepper)
    if isinstance(user, Refusal):
        return user
    assert user.id is not None
    row, token = repo.create_token(
        session=session, user_id=user.id, name=client_name, pepper=pepper
    )
    return principal_of(user, row.id), token


@router.post(
    "/pair",
    status_code=status.HTTP_201_CREATED,
    summary="Exchange a pairing code for a bearer token",
    openapi_extra={"security": []},
    responses={
        400: {"description": "The code is unknown, expired or used (errors[0].reason says which)"},
        429: {
            "description": "Too many wrong codes from your address, or from everyone; see "
            "Retry-After"
        },
    },
)
async def pair(body: PairRequest, request: Request, runtime: RuntimeDep) -> PairResult:
    """The token is shown once: keep it in the phone's secure storage."""
    guard: PairingGuard = request.app.state.pairing_guard
    client = request.client.host if request.client else "unknown"
    refusal = guard.attempt(client)
    if refusal is not None:
        if refusal.locked_out:
            raise ApiProblem(
                429,
                f"too many wrong pairing codes from your address; retry in "
                f"{refusal.retry_after_s} s",
                kind="pairing-locked-out",
                headers={"Retry-After": str(refusal.retry_after_s)},
                errors=[("code", "locked out")],
            )
        raise ApiProblem(
            429,
            f"too many wrong pairing codes on this hub; retry in {refusal.retry_after_s} s",
            kind="rate-limited",
            headers={"Retry-After": str(refusal.retry_after_s)},
        )
    try:
        result = await runtime.db(
            _redeem,
            code=body.code,
            client_name=body.client_name,
            pepper=runtime.settings.token_pepper.get_secret_value(),
        )
    except BaseException:
        guard.withdraw(client)
        raise
    if isinstance(result, Refusal):  # already counted by attempt()
        raise ApiProblem(
            400, _ADVICE[result], kind="pairing-failed", errors=[("code", result.value)]
        )
    guard.succeeded(client)
    await runtime.access_changed()
    principal, token = result
    assert principal.token_id is not None
    return PairResult(token=token, token_id=principal.token_id, user=me_public(principal))
