"""Programs: the built-in library plus each user's own, validated against the hub's caps.

A custom program is checked twice before it is stored: its shape by the schema (ranges, unknown
fields, strict types: 422 with ``steps[2].frequency_hz``-style paths) and its safety by
``gateway.programs.validate_program`` against the hub and zone caps (S1) and the session-length
cap (S10): 422 ``invalid-program`` with one entry per step and field. It is checked again
against the device's limits when a session starts. A personal cap does not refuse a program: a
session plays it with the steps above the cap lowered to it (``limited_by_cap``).

Slugs are one namespace per database (built-ins included). Another user's program is invisible
(404); admins see and edit every custom program. Built-ins cannot be changed (409).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from sqlmodel import Session

from api.auth import CurrentUser, Principal, RuntimeDep
from api.errors import ApiProblem
from api.schemas.programs import ProgramCreate, ProgramPublic, ProgramUpdate
from gateway.errors import NotFound
from gateway.programs import Caps, Program, validate_program
from gateway.runtime import Runtime
from gateway.storage import repo
from gateway.storage.models import ProgramRecord

router = APIRouter(prefix="/programs", tags=["programs"])

SlugPath = Annotated[str, Path(pattern="^[a-z0-9][a-z0-9-]{1,47}$", examples=["quick-lift"])]


def _public(program: Program, owner_id: int | None, user: Principal) -> ProgramPublic:
    return ProgramPublic(
        slug=program.slug,
        name=program.name,
        description=program.description,
        builtin=program.builtin,
        owned_by_you=owner_id == user.user_id,
        duration_s=program.duration_s,
        steps=list(program.steps),
    )


def _custom(*, session: Session, owner_id: int | None) -> list[tuple[Program, int | None]]:
    records = repo.list_programs(session=session, owner_id=owner_id)
    return [(repo.to_program(r), r.owner_id) for r in records if not r.builtin]


def _one(*, session: Session, slug: str) -> tuple[Program, int | None]:
    record = repo.get_program(session=session, slug=slug)
    return repo.to_program(record), record.owner_id


async def resolve_program(
    runtime: Runtime, user: Principal, slug: str
) -> tuple[Program, int | None]:
    """A built-in or a custom program the user may see, with its owner; 404 otherwise."""
    builtin = runtime.programs.get(slug)
    if builtin is not None:
        return builtin, None
    try:
        program, owner_id = await runtime.db(_one, slug=slug)
    except NotFound:
        owner_id, program = -1, None
    if program is None or program.builtin or not runtime.access.may_see_owned(user, owner_id):
        raise ApiProblem(404, f"no program {slug!r} visible to you", kind="not-found")
    return program, owner_id


@router.get("", summary="Built-in programs and your own")
async def list_programs(user: CurrentUser, runtime: RuntimeDep) -> list[ProgramPublic]:
    """The built-in library first, then your own programs (an admin sees everyone's)."""
    custom = await runtime.db(_custom, owner_id=None if user.is_admin else user.user_id)
    builtins = [_public(p, None, user) for p in runtime.programs.values()]
    return builtins + [
        _public(p, owner, user) for p, owner in custom if p.slug not in runtime.programs
    ]


@router.get("/{slug}", summary="One program")
async def get_program(slug: SlugPath, user: CurrentUser, runtime: RuntimeDep) -> ProgramPublic:
    """A built-in program or one of yours, with its steps and total duration."""
    program, owner_id = await resolve_program(runtime, user, slug)
    return _public(program, owner_id, user)


def _checked(
    runtime: Runtime, user: Principal, slug: str, body: ProgramCreate | ProgramUpdate
) -> Program:
    program = Program(
        slug=slug, name=body.name, description=body.description, steps=tuple(body.steps)
    )
    return validate_program(program, Caps(runtime.settings.safety, user_cap_ua=user.cap_ua))


def _create(*, session: Session, program: Program, owner_id: int) -> ProgramRecord:
    return repo.create_program(session=session, program=program, owner_id=owner_id)


@router.post(
    "/check",
    summary="Check a custom program against every cap without saving it",
    responses={422: {"description": "What is wrong, one error per step and field"}},
)
async def check_program(
    body: ProgramCreate, user: CurrentUser, runtime: RuntimeDep
) -> ProgramPublic:
    """Exactly the checks ``POST /programs`` makes (the slug's uniqueness aside), for a client
    that validates a program as it is typed; nothing is stored."""
    program = _checked(runtime, user, body.slug, body)
    return _public(program, user.user_id, user)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a custom program (validated against every cap)",
    responses={409: {"description": "The slug is taken (by a built-in or another program)"}},
)
async def create_program(
    body: ProgramCreate, user: CurrentUser, runtime: RuntimeDep
) -> ProgramPublic:
    """Yours only. Refused with 422 ``invalid-program`` when a step breaks the hub or zone caps
    (S1) or the program is longer than the session-length cap (S10), one error per step and
    field; a personal cap does not refuse it (sessions play it lowered to your cap)."""
    if body.slug in runtime.programs:
        raise ApiProblem(
            409, f"{body.slug!r} is a built-in program; pick another slug", kind="conflict"
        )
    program = _checked(runtime, user, body.slug, body)
    await runtime.db(_create, program=program, owner_id=user.user_id)
    return _public(program, user.user_id, user)


def _update(*, session: Session, program: Program, owner_id: int | None) -> ProgramRecord:
    return repo.update_program(session=session, program=program, owner_id=owner_id)


@router.put(
    "/{slug}",
    summary="Replace your custom program's name, description and steps",
    responses={409: {"description": "A built-in program cannot be changed; copy it"}},
)
async def update_program(
    slug: SlugPath, body: ProgramUpdate, user: CurrentUser, runtime: RuntimeDep
) -> ProgramPublic:
    """Validated like a new program (422 ``invalid-program``). Sessions already started with
    it keep the steps they started with."""
    if slug in runtime.programs:
        raise ApiProblem(
            409, f"{slug!r} is built in and cannot be changed; copy it", kind="conflict"
        )
    _, owner_id = await resolve_program(runtime, user, slug)
    program = _checked(runtime, user, slug, body)
    await runtime.db(_update, program=program, owner_id=None if user.is_admin else user.user_id)
    return _public(program, owner_id, user)


def _delete(*, session: Session, slug: str, owner_id: int | None) -> None:
    repo.delete_program(session=session, slug=slug, owner_id=owner_id)


@router.delete(
    "/{slug}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete your custom program (sessions that used it keep their history)",
    responses={409: {"description": "A built-in program cannot be deleted"}},
)
async def delete_program(slug: SlugPath, user: CurrentUser, runtime: RuntimeDep) -> Response:
    """Its slug is free again afterwards; the sessions that played it still name it."""
    if slug in runtime.programs:
        raise ApiProblem(409, f"{slug!r} is built in and cannot be deleted", kind="conflict")
    await resolve_program(runtime, user, slug)
    await runtime.db(_delete, slug=slug, owner_id=None if user.is_admin else user.user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
