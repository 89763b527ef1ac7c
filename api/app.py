"""``create_app(settings)``: the FastAPI application of one hub.

Nothing is built at import time: the gateway ``Runtime`` (radio, devices, sessions, storage) is
created and started inside the app's lifespan and stopped after it, so every test gets its own
app, database and virtual radio. Per-app state lives on ``app.state``: settings, the runtime,
metrics (its own Prometheus registry), open WebSocket connections, the pairing guard, the scan
lock and the in-flight idempotent starts. Who may see and control what is the runtime's access
policy (``gateway.access``), asked by every route and every WebSocket message.

Middleware, outermost first: request id (X-Request-ID in and out, the logging context, a 500
problem for anything unexpected), CORS (``settings.api.cors_origins``; bearer tokens, so no
credentials mode), the body-size limit (413). Errors become problem+json in ``api.errors``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import Response

from api.docs import install_docs
from api.errors import install_error_handlers
from api.live import Connection
from api.metrics import CONTENT_TYPE, ApiMetrics
from api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from api.openapi import build_openapi
from api.ratelimit import PairingGuard
from api.routes import (
    devices,
    fleet,
    health,
    hub,
    me,
    pairing,
    plans,
    programs,
    radios,
    sessions,
    tokens,
    users,
)
from api.routes.health import api_version
from api.strict import reject_unknown_query
from api.webapp import install_webapp
from api.ws import close_all
from api.ws import router as ws_router
from gateway.config import Settings
from gateway.runtime import Runtime

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"

DESCRIPTION = """\
REST v1 of mcgw, the microcurrent BLE gateway. Phones pair with a one-time code
(`POST /api/v1/pair`), then send `Authorization: Bearer <token>` on every request.
Live telemetry and session events come over the WebSocket at `/api/v1/ws`
(docs/websocket.md). Every error is `application/problem+json` (RFC 9457).
"""

TAGS: list[dict[str, Any]] = [
    {"name": "health", "description": "Liveness and readiness; no token needed."},
    {"name": "pairing", "description": "Exchange a one-time code for a bearer token."},
    {"name": "me", "description": "Your profile, consent (S7), personal cap, statistics."},
    {"name": "tokens", "description": "List and revoke tokens; admins create them."},
    {"name": "users", "description": "Admins: users and admin rights."},
    {"name": "devices", "description": "Known and discovered devices; claim, rename, forget."},
    {"name": "programs", "description": "Built-in and custom treatment programs."},
    {"name": "sessions", "description": "Start, control and review treatment sessions."},
    {"name": "plans", "description": "Treatment plans (templates, phases); adherence in /me."},
    {"name": "fleet", "description": "Admins: every hub on the MQTT broker (docs/mqtt.md)."},
    {"name": "hub", "description": "This hub's caps and limits; admins: its settings."},
    {"name": "radios", "description": "Admins: the radios' health, slots and device links."},
    {"name": "metrics", "description": "Prometheus metrics; no token needed."},
]


def create_app(
    settings: Settings, *, runtime_factory: Callable[[Settings], Runtime] = Runtime
) -> FastAPI:
    """The app for one hub. ``runtime_factory`` lets tests wrap the runtime they get."""
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = runtime_factory(settings)
        try:
            await runtime.start()
        except BaseException:
            await runtime.stop()  # release whatever half of it opened
            raise
        app.state.runtime = runtime
        metrics.runtime = runtime
        log.info("mcgw API ready (hub %s)", settings.hub_id)
        try:
            yield
        finally:
            await close_all(app.state.connections)
            app.state.runtime = None
            await runtime.stop()
            metrics.runtime = None

    app = FastAPI(
        title="mcgw",
        version=api_version(),
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,  # api.docs serves /docs from the hub itself (no CDN)
        redoc_url=None,
        openapi_url="/openapi.json",
        dependencies=[Depends(reject_unknown_query)],
    )
    app.state.settings = settings
    app.state.runtime = None
    app.state.metrics = metrics
    app.state.connections = set[Connection]()
    app.state.pairing_guard = PairingGuard()
    app.state.scan_lock = asyncio.Lock()

    install_error_handlers(app)
    for module in (
        health,
        pairing,
        me,
        tokens,
        users,
        hub,
        devices,
        programs,
        sessions,
        plans,
        fleet,
        radios,
    ):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(ws_router, prefix=API_PREFIX)
    install_docs(app)
    install_webapp(app)
    _install_metrics(app, metrics)
    _install_openapi(app)
    _install_middleware(app, settings)
    return app


def _install_openapi(app: FastAPI) -> None:
    """The schema is built once, on first request, by ``api.openapi``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, description=DESCRIPTION)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_metrics(app: FastAPI, metrics: ApiMetrics) -> None:
    """``GET /metrics``: Prometheus text, no token."""

    @app.get(
        "/metrics",
        tags=["metrics"],
        summary="Prometheus metrics (text exposition format)",
        response_class=Response,
        responses={
            200: {
                "content": {
                    CONTENT_TYPE: {
                        "schema": {"type": "string"},
                        "example": "# HELP mcgw_devices Managed devices by state\n"
                        "# TYPE mcgw_devices gauge\n"
                        'mcgw_devices{state="bonded"} 2.0\n',
                    }
                }
            }
        },
    )
    async def prometheus_metrics() -> Response:
        """Counters and gauges of this hub (devices, sessions, BLE, storage, API); no token
        needed, and nothing personal in them."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    """Request id (outermost), CORS, body limit."""
    # add_middleware wraps what is there: the last added is the outermost.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.api.max_body_bytes)
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "WWW-Authenticate"],
        )
    app.add_middleware(RequestIdMiddleware)
