"""Bearer tokens: list yours, revoke yours; admins create tokens (scripts) and revoke any.

The plaintext of a token is shown once, in the response that creates it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from sqlmodel import Session

from api.auth import AdminUser, CurrentUser, RuntimeDep
from api.errors import ApiProblem
from api.schemas.accounts import TokenCreate, TokenCreated, TokenPublic
from api.schemas.fields import MAX_DB_ID
from gateway.storage import repo
from gateway.storage.models import ApiToken

router = APIRouter(prefix="/tokens", tags=["tokens"])


def _public(row: ApiToken) -> TokenPublic:
    assert row.id is not None
    return TokenPublic.model_validate(row, from_attributes=True)


def _list(*, session: Session, user_id: int) -> list[TokenPublic]:
    return [_public(row) for row in repo.list_tokens(session=session, user_id=user_id)]


@router.get("", summary="List tokens (yours; an admin may name another user)")
async def list_tokens(
    user: CurrentUser,
    runtime: RuntimeDep,
    user_id: Annotated[int | None, Query(ge=1, le=MAX_DB_ID)] = None,
) -> list[TokenPublic]:
    """Names, creation, last use and revocation times; never the tokens themselves."""
    target = user.user_id if user_id is None else user_id
    if not runtime.access.may_see_owned(user, target):
        raise ApiProblem(404, "no such user visible to you", kind="not-found")
    tokens: list[TokenPublic] = await runtime.db(_list, user_id=target)
    return tokens


def _create(*, session: Session, body: TokenCreate, pepper: str) -> TokenCreated:
    if body.user_id is not None:
        user_id = body.user_id
        repo.get_user(session=session, user_id=user_id)
    else:
        assert body.new_user_name is not None
        user = repo.create_user(session=session, name=body.new_user_name, is_admin=body.is_admin)
        assert user.id is not None
        user_id = user.id
    row, token = repo.create_token(session=session, user_id=user_id, name=body.name, pepper=pepper)
    return TokenCreated(token=token, **_public(row).model_dump())


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Admin: create a token for a user or for a new (script) user",
)
async def create_token(body: TokenCreate, _admin: AdminUser, runtime: RuntimeDep) -> TokenCreated:
    """Give exactly one of ``user_id`` (an existing user) and ``new_user_name`` (a new user,
    an admin with ``is_admin``). The token is in this response only."""
    if (body.user_id is None) == (body.new_user_name is None):
        raise ApiProblem(
            422,
            "give exactly one of user_id and new_user_name",
            kind="validation",
            errors=[("user_id", "exactly one of user_id and new_user_name")],
        )
    if body.is_admin and body.user_id is not None:
        raise ApiProblem(
            422,
            "is_admin applies to a new user only",
            kind="validation",
            errors=[("is_admin", "only with new_user_name")],
        )
    created: TokenCreated = await runtime.db(
        _create, body=body, pepper=runtime.settings.token_pepper.get_secret_value()
    )
    await runtime.access_changed()
    return created


def _revoke(*, session: Session, token_id: int, user_id: int | None) -> None:
    repo.revoke_token(session=session, token_id=token_id, user_id=user_id)


@router.delete(
    "/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke a token (yours; an admin may revoke any). Idempotent.",
)
async def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=MAX_DB_ID)],
    user: CurrentUser,
    runtime: RuntimeDep,
) -> Response:
    """The token stops working at once, on open WebSocket connections too (closed with 4401)."""
    await runtime.db(_revoke, token_id=token_id, user_id=None if user.is_admin else user.user_id)
    runtime.access.revoke(token_id)
    await runtime.access_changed()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
