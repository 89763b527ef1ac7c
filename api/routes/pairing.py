"""Pairing: a phone exchanges a one-time code from `mcgw pair` for its bearer token; admins
make codes from the web page (``POST /pairing-codes``).

No bearer token here (the phone has none yet). The hub's web page asks for ``cookie: true``:
the token is then set as an HttpOnly, SameSite=Strict cookie and never given to the page's
script (docs/webapp.md). Wrong codes lock out the address that sends them
(``api.ratelimit.PairingGuard``: 429 ``pairing-locked-out`` with Retry-After) and never harm
anyone else's code. A refused code says why in ``errors[0].reason``: ``unknown``, ``expired``
or ``used``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlmodel import Session

from api.auth import SESSION_COOKIE, AdminUser, Principal, RuntimeDep, principal_of, same_origin
from api.errors import ApiProblem
from api.ratelimit import PairingGuard
from api.routes.me import me_public
from api.schemas.accounts import PairingCodeCreate, PairingCodePublic, PairRequest, PairResult
from gateway.errors import NotFound
from gateway.storage import pairing, repo
from gateway.storage.pairing import Refusal

PAIR_LINK = "/#/pair/{code}"
"""The web page's pairing route with the code in the fragment (never sent to any server)."""

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
        403: {"description": "cookie: true from a page that is not the hub's own (cross-origin)"},
        429: {
            "description": "Too many wrong codes from your address, or from everyone; see "
            "Retry-After"
        },
    },
)
async def pair(
    body: PairRequest, request: Request, response: Response, runtime: RuntimeDep
) -> PairResult:
    """The token is shown once: keep it in the phone's secure storage. With ``cookie: true``
    (the hub's own page) it is set as a cookie instead and ``token`` is null."""
    if body.cookie and not same_origin(request):
        raise ApiProblem(
            403,
            "a cookie is set only for the hub's own page (Origin must be this host)",
            kind="cross-origin",
        )
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
    if body.cookie:
        set_session_cookie(request, response, token)
        return PairResult(token=None, token_id=principal.token_id, user=me_public(principal))
    return PairResult(token=token, token_id=principal.token_id, user=me_public(principal))


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    """The page's credential: HttpOnly (no script reads it), SameSite=Strict (no other site's
    request carries it), Secure when the page came over HTTPS. No Max-Age: it lasts until
    sign-out or revocation, like an app's stored token."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _issue(
    *, session: Session, body: PairingCodeCreate, pepper: str, ttl_s: int
) -> pairing.IssuedCode:
    return pairing.create_pairing_code(
        session=session,
        pepper=pepper,
        user_id=body.user_id,
        user_name=body.name,
        is_admin=body.is_admin,
        ttl_s=ttl_s,
    )


@router.post(
    "/pairing-codes",
    status_code=status.HTTP_201_CREATED,
    summary="Admin: a one-time pairing code for a phone (as `mcgw pair`)",
)
async def create_pairing_code(
    body: PairingCodeCreate, _admin: AdminUser, runtime: RuntimeDep
) -> PairingCodePublic:
    """Valid ``api.pairing_code_ttl_s`` (5 minutes by default), single use; ``link`` opens the
    hub's web page with the code filled in."""
    try:
        issued = await runtime.db(
            _issue,
            body=body,
            pepper=runtime.settings.token_pepper.get_secret_value(),
            ttl_s=runtime.settings.api.pairing_code_ttl_s,
        )
    except NotFound as exc:
        raise ApiProblem(404, str(exc), kind="not-found", errors=[("user_id", str(exc))]) from exc
    return PairingCodePublic(
        code=issued.code, expires_at=issued.expires_at, link=PAIR_LINK.format(code=issued.code)
    )
