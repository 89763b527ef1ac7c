"""Who is calling: bearer tokens to a ``Principal``, and the dependency aliases routes use.

Every route except health (and /metrics, which carries no personal data) takes ``CurrentUser``:
``Authorization: Bearer <token>``, or the hub's own web page's cookie (``SESSION_COOKIE``,
HttpOnly, SameSite=Strict, set by ``POST /api/v1/pair`` with ``"cookie": true``); a missing,
malformed, unknown or revoked token is a 401 with ``WWW-Authenticate: Bearer``. A request that
authenticates with the cookie and changes anything (any method but GET, HEAD, OPTIONS) must come
from the hub's own origin: its ``Origin`` (or, without one, ``Sec-Fetch-Site: same-origin``)
must name the host the request was sent to, or it is a 403 ``cross-origin`` (docs/webapp.md says
why both). The bearer header wins when both are sent.

The token is checked against the hub's access policy
(``gateway.access``) in memory: no database round trip and no write, so a stop is never delayed
or refused because storage is slow or down. A token the policy does not know waits for one
shared check of the access epoch (a token made by ``mcgw token create`` a moment ago works).

Whether the caller may see or control a thing is the policy's decision too (``Access``); this
module only says who is calling. The plaintext token never reaches a log or the database.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from api.errors import ApiProblem, unauthorized
from gateway.access import Principal, principal_of
from gateway.errors import GatewayError
from gateway.runtime import Runtime

__all__ = [
    "SESSION_COOKIE",
    "AdminUser",
    "CurrentUser",
    "Principal",
    "RuntimeDep",
    "authenticate",
    "principal_of",
    "same_origin",
]

MAX_TOKEN_LENGTH = 256
SESSION_COOKIE = "mcgw_token"
"""The web page's credential: the bearer token in an HttpOnly, SameSite=Strict cookie."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_runtime(connection: HTTPConnection) -> Runtime:
    """The started runtime, or 503. ``async`` though it awaits nothing: FastAPI runs a plain
    ``def`` dependency on its thread pool, a thread hop (about a millisecond under load) in
    front of every request, a stop included."""
    runtime: Runtime | None = getattr(connection.app.state, "runtime", None)
    if runtime is None or not runtime.started:
        raise ApiProblem(
            503, "the gateway is starting or stopping; retry shortly", kind="not-ready"
        )
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def authenticate(runtime: Runtime, token: str) -> Principal:
    """The principal of a bearer token; 401 problem if it is not a live token."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise unauthorized("the bearer token is malformed")
    policy = runtime.access
    principal = policy.authenticate(token)
    if principal is None and runtime.access_sync is not None:
        try:
            await runtime.access_sync.refresh()
        except GatewayError as exc:
            raise ApiProblem(
                503,
                "this token cannot be checked right now (storage does not answer); retry shortly",
                kind="storage-unavailable",
            ) from exc
        principal = policy.authenticate(token)
    if principal is None:
        raise unauthorized("the bearer token is unknown or revoked; pair again or ask an admin")
    if runtime.access_sync is not None:
        runtime.access_sync.used(principal)
    return principal


_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="mcgw token",
    description="A token from POST /api/v1/pair (phones) or `mcgw token create` (scripts).",
)


def same_origin(connection: HTTPConnection) -> bool:
    """True when the browser says the request comes from a page of this very host: its
    ``Origin`` names the ``Host`` the request went to (scheme and port included, so
    ``http://hub:8420`` only), or, when a browser sent no Origin, ``Sec-Fetch-Site`` says
    ``same-origin``. Anything else (another site, a missing header) is False."""
    origin = connection.headers.get("origin")
    host = connection.headers.get("host")
    if origin is None:
        return connection.headers.get("sec-fetch-site") == "same-origin"
    if not host or origin == "null":
        return False
    parts = urlsplit(origin)
    scheme = connection.url.scheme
    expected = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return parts.scheme == expected and parts.netloc.lower() == host.lower()


def cookie_token(connection: HTTPConnection) -> str | None:
    """The web page's token from its cookie, if the request carries one."""
    return connection.cookies.get(SESSION_COOKIE) or None


async def current_user(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is not None:
        return await authenticate(runtime, credentials.credentials)
    header = request.headers.get("authorization")
    if header is not None:
        raise unauthorized("the Authorization header must use the Bearer scheme")
    token = cookie_token(request)
    if token is None:
        raise unauthorized("send Authorization: Bearer <token>", error="invalid_request")
    if request.method not in SAFE_METHODS and not same_origin(request):
        # A page of another site could make the browser send the cookie along (SameSite keeps
        # most of them out; this keeps out the rest, e.g. a sibling host on the same site).
        raise ApiProblem(
            403,
            "a change made with the web page's cookie must come from the hub's own page "
            "(Origin must be this host); apps send Authorization: Bearer instead",
            kind="cross-origin",
        )
    return await authenticate(runtime, token)


CurrentUser = Annotated[Principal, Depends(current_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise ApiProblem(403, "this needs an admin token", kind="forbidden")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]
