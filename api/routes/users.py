"""Users, for admins: who has an account on this hub, and who is an admin.

Granting or taking admin rights applies at once, to open WebSocket connections too (a user who
is no longer an admin stops receiving what only admins see). Users are made by pairing
(``mcgw pair``) or by an admin creating a token for a new user (``POST /api/v1/tokens``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from sqlmodel import Session

from api.auth import AdminUser, RuntimeDep
from api.errors import ApiProblem
from api.schemas.accounts import UserPublic, UserUpdate
from api.schemas.fields import MAX_DB_ID
from gateway.storage import repo
from gateway.storage.models import User

router = APIRouter(prefix="/users", tags=["users"])

UserIdPath = Annotated[int, Path(ge=1, le=MAX_DB_ID, examples=[2])]


def _public(user: User) -> UserPublic:
    assert user.id is not None
    return UserPublic(
        id=user.id,
        name=user.name,
        is_admin=user.is_admin,
        consent_accepted=user.consent_accepted_at is not None,
        cap_ua=user.cap_ua,
    )


def _list(*, session: Session) -> list[UserPublic]:
    return [_public(user) for user in repo.list_users(session=session)]


@router.get("", summary="Admin: every user of this hub's database")
async def list_users(_admin: AdminUser, runtime: RuntimeDep) -> list[UserPublic]:
    """Names, admin rights, whether they accepted the notice, and their personal cap."""
    users: list[UserPublic] = await runtime.db(_list)
    return users


def _set_admin(*, session: Session, user_id: int, is_admin: bool) -> UserPublic:
    return _public(repo.set_user_admin(session=session, user_id=user_id, is_admin=is_admin))


@router.patch(
    "/{user_id}",
    summary="Admin: grant or take admin rights",
    responses={409: {"description": "You cannot take your own admin rights"}},
)
async def update_user(
    user_id: UserIdPath, body: UserUpdate, admin: AdminUser, runtime: RuntimeDep
) -> UserPublic:
    """Takes effect at once, on the user's open WebSocket connections too."""
    if user_id == admin.user_id and not body.is_admin:
        raise ApiProblem(
            409,
            "you cannot take your own admin rights (ask another admin); the hub needs one",
            kind="conflict",
        )
    updated: UserPublic = await runtime.db(_set_admin, user_id=user_id, is_admin=body.is_admin)
    await runtime.access_changed()
    return updated
