"""Health (liveness) and readiness. No authentication: load balancers and `make run` poll them."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import sqlalchemy as sa
from fastapi import APIRouter, Request
from sqlmodel import Session

from api.errors import ApiProblem
from api.schemas import HealthPublic, ReadyPublic
from gateway.runtime import Runtime

router = APIRouter(prefix="/health", tags=["health"])


def api_version() -> str:
    try:
        return version("mcgw")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


@router.get("", summary="Liveness: the process answers")
async def health(request: Request) -> HealthPublic:
    return HealthPublic(hub_id=request.app.state.settings.hub_id, version=api_version())


def _ping(*, session: Session) -> int:
    return int(session.connection().execute(sa.text("SELECT 1")).scalar_one())


@router.get(
    "/ready",
    summary="Readiness: the gateway runs and its database answers",
    responses={503: {"description": "Not ready (starting, stopping or storage down)"}},
)
async def ready(request: Request) -> ReadyPublic:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None or not runtime.started:
        raise ApiProblem(503, "the gateway is not running yet", kind="not-ready")
    # Any failure here is the storage being down: StorageUnavailable maps to 503.
    await runtime.db(_ping)
    return ReadyPublic(ready=True, checks={"runtime": "ok", "storage": "ok"})
