"""Health (liveness) and readiness. No authentication: load balancers and `make run` poll them.

Readiness tells the truth and answers fast: every check reads state the parts keep themselves
(``gateway.health.checks``: the radio supervisor, the storage writer, the session journal),
plus one database read on the storage reader (never queued behind writes) bounded by
``READY_READ_TIMEOUT_S``. A locked, read-only or gone database makes it 503 within about a
second, naming the failing checks in ``errors``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import sqlalchemy as sa
from fastapi import APIRouter, Request
from sqlmodel import Session

from api.errors import ApiProblem
from api.schemas.health import CheckPublic, HealthPublic, MqttPublic, ReadyPublic
from gateway.errors import GatewayError
from gateway.health import checks
from gateway.runtime import Runtime

router = APIRouter(prefix="/health", tags=["health"])

READY_READ_TIMEOUT_S = 1.0


def api_version() -> str:
    try:
        return version("mcgw")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


@router.get("", summary="Liveness: the process answers")
async def health(request: Request) -> HealthPublic:
    """Answers while the process runs, even before the gateway is ready; no token needed.
    ``mqtt`` shows the broker connection when the MQTT bridge is on."""
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    bridge = runtime.mqtt if runtime is not None else None
    mqtt = None
    if bridge is not None:
        status = bridge.status
        mqtt = MqttPublic(
            state=status.state, detail=status.detail, since=status.since, dropped=status.dropped
        )
    return HealthPublic(hub_id=request.app.state.settings.hub_id, version=api_version(), mqtt=mqtt)


def _ping(*, session: Session) -> int:
    return int(session.connection().execute(sa.text("SELECT 1")).scalar_one())


@router.get(
    "/ready",
    summary="Readiness: the gateway, its radio and its storage work",
    responses={503: {"description": "Not ready: starting or stopping, or a part is down"}},
)
async def ready(request: Request) -> ReadyPublic:
    """200 with every check when the gateway runs, its radio is up, the database answers and
    takes writes and the session journal can be written; else 503 ``not-ready`` naming each
    failing check and why in ``errors``. Answers within about a second whatever storage does."""
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None or not runtime.started:
        raise ApiProblem(503, "the gateway is not running yet", kind="not-ready")
    results = {
        check.name: CheckPublic(ok=check.ok, detail=check.detail) for check in checks(runtime)
    }
    if runtime.reader is not None:
        results["database"] = await _database(runtime)
    failing = [(name, check.detail) for name, check in results.items() if not check.ok]
    if failing:
        raise ApiProblem(
            503,
            "not ready: " + "; ".join(f"{name}: {why}" for name, why in failing),
            kind="not-ready",
            errors=failing,
        )
    return ReadyPublic(ready=True, checks=results)


async def _database(runtime: Runtime) -> CheckPublic:
    assert runtime.reader is not None
    try:
        await runtime.reader.run(_ping, timeout_s=READY_READ_TIMEOUT_S)
    except GatewayError as exc:
        return CheckPublic(ok=False, detail=str(exc))
    return CheckPublic(ok=True, detail="answers")
