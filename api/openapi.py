"""The OpenAPI document: FastAPI's, with every error response described as problem+json.

FastAPI documents its own 422 shape (``HTTPValidationError``), which this API never sends.
``build_openapi`` replaces it and adds, to every operation, the error responses it can give
(401 with the bearer scheme, 404, 413 for bodies, 422, 503), each as
``application/problem+json`` with the ``Problem`` schema; responses a route declared itself
(409, 429, ...) get the same content. Built once per app, on first request of /openapi.json.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.errors import PROBLEM_MEDIA_TYPE, Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_STANDARD = {
    "400": "The body could not be decoded (not UTF-8 text)",
    "401": "Missing, malformed, unknown or revoked bearer token (WWW-Authenticate: Bearer)",
    "403": "Authenticated but not allowed (admin only, consent or claim required)",
    "404": "No such resource visible to you",
    "413": "Request body larger than the hub's limit",
    "422": "Invalid request: see errors[].field and errors[].reason",
    "503": "The gateway is starting or stopping, or its storage is down",
}


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}


def build_openapi(app: FastAPI, *, description: str) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem_schema.pop("$defs", {}))
    components["Problem"] = problem_schema
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for methods in schema.get("paths", {}).values():
        for operation in methods.values():
            _describe_errors(operation)
    return schema


def _describe_errors(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    wanted = {"404", "503"}
    if operation.get("security"):
        wanted |= {"401", "403"}
    if operation.get("parameters") or operation.get("requestBody"):
        wanted.add("422")
    if operation.get("requestBody"):
        wanted |= {"400", "413"}
    for code in wanted:
        responses.setdefault(code, {"description": _STANDARD[code]})
    for code, response in responses.items():
        if code[0] in "45":
            response["content"] = _problem_content()
            if code == "422":
                response["description"] = _STANDARD["422"]
            if code == "401":
                response["headers"] = {
                    "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}
                }
