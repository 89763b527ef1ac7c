"""Every error the API answers with, as RFC 9457 problem details, mapped in this one place.

A problem is ``application/problem+json`` with ``type``, ``title``, ``status``, ``detail``, the
request id, and ``errors: [{field, reason}]`` naming each bad field (``steps[2].frequency_hz``,
``query.limit``). The mapping:

============================  ======  ===============================
raised                        status  type
============================  ======  ===============================
RequestValidationError        422     urn:mcgw:problem:validation
gateway InvalidProgram        422     urn:mcgw:problem:invalid-program
gateway NotFound              404     urn:mcgw:problem:not-found
gateway Conflict              409     urn:mcgw:problem:conflict
gateway DeviceUnavailable     409     urn:mcgw:problem:device-unavailable
gateway SafetyViolation       409     urn:mcgw:problem:safety-violation
gateway Forbidden             403     urn:mcgw:problem:forbidden
storage StorageUnavailable    503     urn:mcgw:problem:storage-unavailable
storage JournalUnavailable    503     urn:mcgw:problem:storage-unavailable
other GatewayError            500     urn:mcgw:problem:gateway-error
ApiProblem                    any     as given (auth, consent, rate limit, body size)
HTTPException (404, 405, ..)  any     about:blank
anything else                 500     about:blank (no detail: it is a bug, and it is logged)
============================  ======  ===============================

A 405 names in ``Allow`` every method the path answers (``allowed_methods``), not only those of
the first route whose path matched, which is all Starlette knows when it raises it.

The same problem objects travel over the WebSocket inside ``error`` messages (``problem_for``).
This module does not decide who may do what; it only says how a refusal looks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from gateway.errors import (
    Conflict,
    DeviceUnavailable,
    Forbidden,
    GatewayError,
    InvalidProgram,
    NotFound,
    SafetyViolation,
    StorageUnavailable,
)
from gateway.logs import request_id
from gateway.storage.journal import JournalUnavailable

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:mcgw:problem:"


class FieldProblem(BaseModel):
    """One bad input: where (a dotted path with [index]) and why."""

    field: str = Field(examples=["steps[2].frequency_hz"])
    reason: str = Field(examples=["Input should be less than or equal to 1000"])


class Problem(BaseModel):
    """RFC 9457 problem details, with the fields at fault in ``errors``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:mcgw:problem:not-found",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "no session 0b9f... visible to you",
                    "instance": "/api/v1/sessions/0b9f",
                    "request_id": "6f1c2a4e9d0b4c0e",
                    "errors": [],
                }
            ]
        }
    )

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldProblem] = Field(default_factory=list)


class ApiProblem(Exception):
    """Raised by the API itself for a refusal that is not a gateway error."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title or HTTPStatus(status).phrase
        self.headers = dict(headers or {})
        self.errors = list(errors)


def unauthorized(detail: str, *, error: str = "invalid_token") -> ApiProblem:
    """401 with the WWW-Authenticate challenge RFC 6750 asks for."""
    return ApiProblem(
        401,
        detail,
        kind="unauthorized",
        headers={"WWW-Authenticate": f'Bearer realm="mcgw", error="{error}"'},
    )


def field_path(loc: Iterable[int | str]) -> str:
    """A pydantic ``loc`` as a field path: ('body', 'steps', 2, 'zone') -> 'steps[2].zone'.

    Body fields are named bare (they are what a client edits); query, path and header fields
    keep their source as a prefix (``query.limit``) so a client knows where to look.
    """
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def validation_errors(errors: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(field, reason) pairs of pydantic errors; the raw input is never echoed (secrets)."""
    pairs = []
    for error in errors:
        reason = str(error.get("msg", "invalid"))
        if error.get("type") == "json_invalid":
            reason = "the body is not valid JSON: " + str(error.get("ctx", {}).get("error", ""))
        pairs.append((field_path(error.get("loc", ())), reason.strip()))
    return pairs


_GATEWAY_MAP: tuple[tuple[type[GatewayError], int, str], ...] = (
    (InvalidProgram, 422, "invalid-program"),
    (NotFound, 404, "not-found"),
    (DeviceUnavailable, 409, "device-unavailable"),
    (SafetyViolation, 409, "safety-violation"),
    (Conflict, 409, "conflict"),
    (Forbidden, 403, "forbidden"),
    (StorageUnavailable, 503, "storage-unavailable"),
    (JournalUnavailable, 503, "storage-unavailable"),
)


def problem_for(exc: BaseException) -> tuple[Problem, dict[str, str]]:
    """The problem (and extra headers) that answers ``exc``, for HTTP and WebSocket alike."""
    headers: dict[str, str] = {}
    errors: list[tuple[str, str]] = []
    kind: str | None
    if isinstance(exc, ApiProblem):
        status, kind, title, detail = exc.status, exc.kind, exc.title, exc.detail
        headers, errors = exc.headers, exc.errors
    elif isinstance(exc, RequestValidationError):
        status, kind, title = 422, "validation", "Invalid request"
        detail = "the request does not match the schema; see errors"
        errors = validation_errors(exc.errors())
    elif isinstance(exc, GatewayError):
        status, kind = 500, "gateway-error"
        for cls, code, name in _GATEWAY_MAP:
            if isinstance(exc, cls):
                status, kind = code, name
                break
        title = HTTPStatus(status).phrase
        detail = str(exc)
        if isinstance(exc, InvalidProgram):
            title, errors = "Program refused", list(exc.problems)
    elif isinstance(exc, HTTPException):
        status, kind = exc.status_code, None
        title = HTTPStatus(status).phrase
        detail = exc.detail if exc.detail != title else None  # type: ignore[assignment]
        headers = dict(exc.headers or {})
    else:
        status, kind, title, detail = 500, None, "Internal Server Error", None
    problem = Problem(
        type=TYPE_PREFIX + kind if kind else "about:blank",
        title=title,
        status=status,
        detail=detail,
        request_id=request_id.get(),
        errors=[FieldProblem(field=field, reason=reason) for field, reason in errors],
    )
    return problem, headers


def problem_response(problem: Problem, headers: Mapping[str, str] | None = None) -> Response:
    body = orjson.dumps(problem.model_dump(exclude_none=True))
    return Response(
        body, problem.status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE
    )


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method of the resource at the request's path, as the OpenAPI document has it.

    A path served by several routes (``GET``, ``PATCH`` and ``DELETE /devices/{address}`` are
    three route objects) must name them all in a 405's ``Allow`` (RFC 9110, 15.5.6). Where a
    concrete path and a templated one both match (``/devices/scan``, ``/devices/{address}``),
    the concrete one is the resource, as OpenAPI matches paths.
    """
    # A mount rewrites root_path on its way in; app_root_path keeps the app's own.
    root_path = scope.get("app_root_path", scope.get("root_path", ""))
    path = get_route_path({"path": scope["path"], "root_path": root_path})
    by_template: dict[int, set[str]] = {}
    for route in iter_route_contexts(app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is None or not regex.match(path):
            continue
        methods = by_template.setdefault(str(route.path).count("{"), set())
        if isinstance(route.original_route, Mount):
            if isinstance(route.original_route.app, StaticFiles):
                methods |= {"GET", "HEAD"}
        else:
            methods |= route.methods or set()
    concrete = min((n for n, methods in by_template.items() if methods), default=None)
    return [] if concrete is None else sorted(by_template[concrete], key=_method_rank)


def _method_rank(method: str) -> tuple[int, str]:
    return (_METHOD_ORDER.index(method) if method in _METHOD_ORDER else len(_METHOD_ORDER), method)


async def _handle(request: Request, exc: Exception) -> Response:
    problem, headers = problem_for(exc)
    if problem.status == 405:
        allowed = allowed_methods(request.app, request.scope)
        if allowed:
            headers = {**headers, "Allow": ", ".join(allowed)}
    if problem.status == 500:
        # A bug: logged once here with the request id; the client sees no internals.
        log.error(
            "%s %s failed with %d", request.method, request.url.path, problem.status, exc_info=exc
        )
    elif problem.status >= 500 and not isinstance(exc, ApiProblem):
        # Storage or a device is away: one line; the part that failed logged its own outage.
        log.warning("%s %s: %d %s", request.method, request.url.path, problem.status, exc)
    problem.instance = request.url.path
    return problem_response(problem, headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the app can raise through ``problem_for``."""
    # Exceptions nobody expected are answered by api.middleware.RequestIdMiddleware.
    for exc_class in (ApiProblem, RequestValidationError, GatewayError, HTTPException):
        app.add_exception_handler(exc_class, _handle)
