"""Who is calling: bearer tokens to a ``Principal``, and the dependency aliases routes use.

Every route except health (and /metrics, which carries no personal data) takes ``CurrentUser``:
``Authorization: Bearer <token>``; a missing, malformed, unknown or revoked token is a 401 with
``WWW-Authenticate: Bearer``. The token is checked against the hub's access policy
(``gateway.access``) in memory: no database round trip and no write, so a stop is never delayed
or refused because storage is slow or down. A token the policy does not know waits for one
shared check of the access epoch (a token made by ``mcgw token create`` a moment ago works).

Whether the caller may see or control a thing is the policy's decision too (``Access``); this
module only says who is calling. The plaintext token never reaches a log or the database.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from api.errors import ApiProblem, unauthorized
from gateway.access import Principal, principal_of
from gateway.errors import GatewayError
from gateway.runtime import Runtime

__all__ = ["AdminUser", "CurrentUser", "Principal", "RuntimeDep", "authenticate", "principal_of"]

MAX_TOKEN_LENGTH = 256


def get_runtime(connection: HTTPConnection) -> Runtime:
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


async def current_user(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        header = request.headers.get("authorization")
        if header is None:
            raise unauthorized("send Authorization: Bearer <token>", error="invalid_request")
        raise unauthorized("the Authorization header must use the Bearer scheme")
    return await authenticate(runtime, credentials.credentials)


CurrentUser = Annotated[Principal, Depends(current_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise ApiProblem(403, "this needs an admin token", kind="forbidden")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]
