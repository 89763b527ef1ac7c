"""Who is calling: bearer tokens to a ``Principal``, and the dependency aliases routes use.

Every route except health (and /metrics, which carries no personal data) takes ``CurrentUser``:
``Authorization: Bearer <token>``; a missing, malformed, unknown or revoked token is a 401 with
``WWW-Authenticate: Bearer``. The token is looked up by its keyed hash (``repo.authenticate_token``
in a worker thread); the plaintext never reaches a log or the database.

``Principal`` is a plain frozen value copied out of the database session, so nothing lazy
escapes the worker thread. Ownership rules (who may see or control what) live with each
resource's router; ``Principal.may_control`` is the common check.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session
from starlette.requests import HTTPConnection

from api.errors import ApiProblem, unauthorized
from gateway.runtime import Runtime
from gateway.storage import repo
from gateway.storage.models import User

MAX_TOKEN_LENGTH = 256
TOKEN_CACHE_TTL_S = 2.0
"""How long a verified token is trusted without asking the database again.

Revoking a token, accepting consent or changing a cap through this hub's API clears the cache at
once; a revocation made elsewhere (``mcgw token revoke``, another hub) takes effect within this.
"""
TOKEN_CACHE_MAX = 1024


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated user of one request (or WebSocket)."""

    user_id: int
    name: str
    is_admin: bool
    consent_accepted_at: datetime | None
    consent_version: str | None
    cap_ua: int | None
    token_id: int | None = None

    @property
    def owner(self) -> str:
        """The owner string the session manager uses for this user."""
        return str(self.user_id)

    def may_control(self, owner_id: int | None) -> bool:
        """Owner or admin (S8)."""
        return self.is_admin or owner_id == self.user_id

    @classmethod
    def of(cls, user: User, token_id: int | None = None) -> Principal:
        assert user.id is not None
        return cls(
            user_id=user.id,
            name=user.name,
            is_admin=user.is_admin,
            consent_accepted_at=user.consent_accepted_at,
            consent_version=user.consent_version,
            cap_ua=user.cap_ua,
            token_id=token_id,
        )


class TokenCache:
    """Recently verified tokens, so a request does not queue behind storage writes to auth.

    Every REST call needs its token checked; a database round trip through the storage thread
    costs milliseconds (behind any telemetry flush), which is most of an API stop's latency.
    Keys are SHA-256 digests, so no plaintext token is kept.
    """

    def __init__(self, ttl_s: float = TOKEN_CACHE_TTL_S, max_entries: int = TOKEN_CACHE_MAX):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[float, Principal]] = {}

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str) -> Principal | None:
        entry = self._entries.get(self._key(token))
        if entry is None:
            return None
        expires, principal = entry
        if time.monotonic() >= expires:
            del self._entries[self._key(token)]
            return None
        return principal

    def put(self, token: str, principal: Principal) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[self._key(token)] = (time.monotonic() + self.ttl_s, principal)

    def clear(self) -> None:
        self._entries.clear()


def token_cache(connection: HTTPConnection) -> TokenCache | None:
    cache = getattr(connection.app.state, "token_cache", None)
    return cache if isinstance(cache, TokenCache) else None


def clear_token_cache(connection: HTTPConnection) -> None:
    """Forget every cached token (after a revocation, consent or cap change)."""
    cache = token_cache(connection)
    if cache is not None:
        cache.clear()


def get_runtime(connection: HTTPConnection) -> Runtime:
    runtime: Runtime | None = getattr(connection.app.state, "runtime", None)
    if runtime is None or not runtime.started:
        raise ApiProblem(
            503, "the gateway is starting or stopping; retry shortly", kind="not-ready"
        )
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _lookup(*, session: Session, token: str, pepper: str) -> Principal | None:
    found = repo.authenticate_token(session=session, token=token, pepper=pepper)
    if found is None:
        return None
    user, row = found
    return Principal.of(user, row.id)


async def authenticate(runtime: Runtime, token: str, cache: TokenCache | None = None) -> Principal:
    """The principal of a bearer token; 401 problem if it is not a live token."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise unauthorized("the bearer token is malformed")
    if cache is not None and (cached := cache.get(token)) is not None:
        return cached
    principal: Principal | None = await runtime.db(
        _lookup, token=token, pepper=runtime.settings.token_pepper.get_secret_value()
    )
    if principal is None:
        raise unauthorized("the bearer token is unknown or revoked; pair again or ask an admin")
    if cache is not None:
        cache.put(token, principal)
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
    return await authenticate(runtime, credentials.credentials, token_cache(request))


CurrentUser = Annotated[Principal, Depends(current_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise ApiProblem(403, "this needs an admin token", kind="forbidden")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]
