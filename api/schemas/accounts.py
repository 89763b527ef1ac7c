"""Bodies of the account routes: me and consent, pairing, users, tokens.

Tokens appear as ``TokenPublic`` (never the secret) except once, when made (``TokenCreated``,
``PairResult``). This module checks shapes only; who may do what is ``gateway.access``'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas.fields import EXAMPLE_NOW, DbId, Input, Name, examples

_CONSENT_EXAMPLE: dict[str, Any] = {
    "accepted": True,
    "accepted_at": "2026-11-29T19:12:03Z",
    "version": "2026-11",
    "current_version": "2026-11",
    "notice": "Do not use microcurrent if you have a pacemaker or other implanted electronic "
    "device, epilepsy, cancer, or are pregnant; ...",
}
_ME_EXAMPLE: dict[str, Any] = {
    "id": 2,
    "name": "Ana",
    "is_admin": False,
    "cap_ua": 300,
    "consent": _CONSENT_EXAMPLE,
}
_TOKEN_EXAMPLE: dict[str, Any] = {
    "id": 7,
    "user_id": 2,
    "name": "Ana's phone",
    "created_at": "2026-11-29T19:10:44Z",
    "revoked_at": None,
    "last_used_at": EXAMPLE_NOW,
}


class ConsentPublic(BaseModel):
    model_config = examples(_CONSENT_EXAMPLE)

    accepted: bool
    accepted_at: datetime | None
    version: str | None = Field(description="The notice version the user accepted, if any.")
    current_version: str
    notice: str = Field(description="The contraindication notice to show before accepting.")


class MePublic(BaseModel):
    model_config = examples(_ME_EXAMPLE)

    id: int
    name: str
    is_admin: bool
    cap_ua: int | None = Field(description="Personal amplitude cap in µA (S1), if set.")
    consent: ConsentPublic


class ConsentAccept(Input):
    model_config = examples({"version": "2026-11", "accept": True})

    version: str = Field(max_length=32, description="The notice version shown to the user.")
    accept: bool = Field(
        description="Must be true: the user read and accepts it.",
        json_schema_extra={"const": True},
    )

    @field_validator("accept")
    @classmethod
    def _accepted(cls, value: bool) -> bool:
        if value is not True:
            raise ValueError("must be true: the notice is accepted, or nothing is recorded")
        return value


class CapUpdate(Input):
    model_config = examples({"cap_ua": 300}, {"cap_ua": None})

    cap_ua: Annotated[int, Field(ge=10, le=500)] | None = Field(
        description="A personal cap in µA; null removes it. The hub cap still applies."
    )


class PairRequest(Input):
    model_config = examples({"code": "482913", "client_name": "Ana's phone"})

    code: str = Field(pattern=r"^\d{6}$", examples=["482913"], description="From `mcgw pair`.")
    client_name: Name = Field(default="phone", description="Names the token (e.g. the phone).")
    cookie: bool = Field(
        default=False,
        description="The hub's web page: set the token as an HttpOnly, SameSite=Strict cookie "
        "instead of returning it (``token`` is then null); needs a same-origin request.",
    )


class UserPublic(BaseModel):
    model_config = examples(
        {"id": 2, "name": "Ana", "is_admin": False, "consent_accepted": True, "cap_ua": 300}
    )

    id: int
    name: str
    is_admin: bool
    consent_accepted: bool
    cap_ua: int | None


class UserUpdate(Input):
    """Admin: grant or take admin rights."""

    model_config = examples({"is_admin": True})

    is_admin: bool


class TokenPublic(BaseModel):
    model_config = examples(_TOKEN_EXAMPLE)

    id: int
    user_id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    model_config = examples(
        {**_TOKEN_EXAMPLE, "token": "mcgw_3q2-Xy8vL0cT4nR9mKp1sWz6bA7dE5fG2hJ8kQ0uV4o"}
    )

    token: str = Field(description="The bearer token. Shown once; only its hash is stored.")


class PairResult(BaseModel):
    model_config = examples(
        {
            "token": "mcgw_3q2-Xy8vL0cT4nR9mKp1sWz6bA7dE5fG2hJ8kQ0uV4o",
            "token_id": 7,
            "user": _ME_EXAMPLE,
        }
    )

    token: str | None = Field(
        description="The bearer token. Shown once; store it on the phone. Null when it was set "
        "as the web page's cookie (``cookie: true``)."
    )
    token_id: int
    user: MePublic


class PairingCodeCreate(Input):
    """Admin: a one-time pairing code, as `mcgw pair` makes."""

    model_config = examples(
        {"name": "Ana"}, {"user_id": 2}, {"name": "Front desk", "is_admin": True}
    )

    name: Name = Field(default="phone", description="The new user's name (without user_id).")
    user_id: DbId | None = Field(default=None, description="Pair another phone of this user.")
    is_admin: bool = Field(default=False, description="The paired phone gets admin rights.")


class PairingCodePublic(BaseModel):
    model_config = examples({"code": "482913", "expires_at": EXAMPLE_NOW, "link": "/#/pair/482913"})

    code: str
    expires_at: datetime
    link: str = Field(description="The web page's pairing link (relative to the hub's URL).")


class TokenCreate(Input):
    """Admin: a token for an existing user (``user_id``) or for a new one (``new_user_name``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "backup script", "new_user_name": "backup"},
                {"name": "Ana's tablet", "user_id": 2},
            ],
            # Exactly one of user_id and new_user_name; is_admin with new_user_name only.
            "oneOf": [
                {
                    "required": ["user_id"],
                    "properties": {
                        "user_id": {"type": "integer"},
                        "new_user_name": {"type": "null"},
                        "is_admin": {"const": False},
                    },
                },
                {
                    "required": ["new_user_name"],
                    "properties": {
                        "new_user_name": {"type": "string"},
                        "user_id": {"type": "null"},
                    },
                },
            ],
        }
    )

    name: Name = Field(description="What the token is for, e.g. 'backup script'.")
    user_id: DbId | None = None
    new_user_name: Name | None = None
    is_admin: bool = Field(default=False, description="Only with new_user_name.")
