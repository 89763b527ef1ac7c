"""The OpenAPI document: FastAPI's, completed so that it is the whole contract of REST v1.

``build_openapi`` takes FastAPI's document and:

* describes every error an operation can answer, each as ``application/problem+json`` with the
  ``Problem`` schema: 404, 422 (any operation: unknown query parameters are refused) and 503
  everywhere; 401 (with its ``WWW-Authenticate`` header) and 403 on operations that need a token;
  400 and 413 on operations with a body; and the ones a route declared itself (409, 429 with
  ``Retry-After``, ...). FastAPI's own 422 shape (``HTTPValidationError``), which this API never
  sends, is removed. 405 is not listed per operation: any path answers it, with ``Allow``.
* gives every JSON body, request and success response, an ``example`` taken from its model's
  ``examples`` (``api.schemas``), so /docs shows one and a client generator has one;
* adds OpenAPI ``links`` from the operations that create or list things to the operations that
  use them (``_LINKS``): documentation for a client, and the paths schemathesis' stateful phase
  walks (start a session, then stop, pause or read it).

Built once per app, on the first request of /openapi.json. It decides nothing about behaviour.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from api import errors
from api.errors import PROBLEM_MEDIA_TYPE, Problem
from api.schemas import accounts, devices, health, hub, plans, programs, radios, sessions, stats

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_STANDARD = {
    "400": "The body could not be decoded (not UTF-8 text)",
    "401": "Missing, malformed, unknown or revoked bearer token (WWW-Authenticate: Bearer)",
    "403": "Authenticated but not allowed (admin only, consent or claim required)",
    "404": "No such resource visible to you",
    "413": "Request body larger than the hub's limit",
    "422": "Invalid request (a field, a parameter, an unknown query parameter): see "
    "errors[].field and errors[].reason",
    "503": "The gateway is starting or stopping, or its storage is down",
}
_HEADERS: dict[str, dict[str, Any]] = {
    "401": {
        "WWW-Authenticate": {
            "description": 'The challenge: Bearer realm="mcgw", error="..."',
            "schema": {"type": "string"},
        }
    },
    "429": {
        "Retry-After": {
            "description": "Seconds to wait before trying again",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    },
}


class _Link(NamedTuple):
    """``source`` answering ``statuses`` gives what ``target`` needs: ``values`` maps each of
    its parameters (or body fields) to a JSON pointer into the source's response body."""

    source: str
    statuses: tuple[str, ...]
    name: str
    target: str
    values: dict[str, str]
    body: dict[str, Any] | None = None


_SESSION = "/api/v1/sessions/{session_id}"
_PROGRAM = "/api/v1/programs/{slug}"
_DEVICE = "/api/v1/devices/{address}"
_LINKS: tuple[_Link, ...] = (
    *(
        _Link("POST /api/v1/sessions", ("201", "200"), name, target, {"session_id": "id"})
        for name, target in (
            ("GetSession", f"GET {_SESSION}"),
            ("StopSession", f"POST {_SESSION}/stop"),
            ("PauseSession", f"POST {_SESSION}/pause"),
            ("ResumeSession", f"POST {_SESSION}/resume"),
            ("SetSessionLevel", f"PUT {_SESSION}/level"),
            ("GetSessionTelemetry", f"GET {_SESSION}/telemetry"),
        )
    ),
    _Link("GET /api/v1/sessions", ("200",), "GetSession", f"GET {_SESSION}",
          {"session_id": "items/0/id"}),
    *(
        _Link("POST /api/v1/programs", ("201",), name, target, {"slug": "slug"})
        for name, target in (
            ("GetProgram", f"GET {_PROGRAM}"),
            ("ReplaceProgram", f"PUT {_PROGRAM}"),
            ("DeleteProgram", f"DELETE {_PROGRAM}"),
        )
    ),
    _Link("GET /api/v1/programs", ("200",), "GetProgram", f"GET {_PROGRAM}", {"slug": "0/slug"}),
    _Link("GET /api/v1/devices", ("200",), "GetDevice", f"GET {_DEVICE}",
          {"address": "0/address"}),
    _Link("GET /api/v1/devices", ("200",), "ClaimDevice", f"POST {_DEVICE}/claim",
          {"address": "0/address"}),
    *(
        _Link(f"POST {_DEVICE}/claim", ("200",), name, target, {"address": "address"})
        for name, target in (
            ("GetDevice", f"GET {_DEVICE}"),
            ("RenameDevice", f"PATCH {_DEVICE}"),
            ("ForgetDevice", f"DELETE {_DEVICE}"),
            ("SetDeviceOwner", f"PUT {_DEVICE}/owner"),
        )
    ),
    _Link(f"POST {_DEVICE}/claim", ("200",), "StartSession", "POST /api/v1/sessions",
          {}, body={"device": "address", "program": "=quick-lift"}),
    _Link(f"PUT {_DEVICE}/owner", ("200",), "GetDevice", f"GET {_DEVICE}", {"address": "address"}),
    _Link("POST /api/v1/tokens", ("201",), "RevokeToken", "DELETE /api/v1/tokens/{token_id}",
          {"token_id": "id"}),
    _Link("POST /api/v1/tokens", ("201",), "UpdateUser", "PATCH /api/v1/users/{user_id}",
          {"user_id": "user_id"}),
    _Link("GET /api/v1/users", ("200",), "UpdateUser", "PATCH /api/v1/users/{user_id}",
          {"user_id": "0/id"}),
)  # fmt: skip
"""In ``values`` and ``body``, "=x" is the literal x rather than a pointer."""


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
    _restore_examples(components)
    for methods in schema.get("paths", {}).values():
        for operation in methods.values():
            _describe_errors(operation)
            _add_examples(operation, components)
    _add_links(schema)
    return schema


def _restore_examples(components: dict[str, Any]) -> None:
    """Put back the models' examples as written: FastAPI drops every null from the document,
    and an example without its required nullable fields (``"ended_at": null``) is invalid."""
    written: dict[str, Any] = {}
    bodies = (health, accounts, devices, hub, plans, programs, radios, sessions, stats, errors)
    for module in bodies:
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel):
                extra = value.model_config.get("json_schema_extra")
                if isinstance(extra, dict) and "examples" in extra:
                    written[value.__name__] = extra["examples"]
    for name, component in components.items():
        examples = written.get(name.removesuffix("-Input").removesuffix("-Output"))
        if examples is not None:
            component["examples"] = examples


def _describe_errors(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    wanted = {"404", "422", "503"}
    if operation.get("security"):
        wanted |= {"401", "403"}
    if operation.get("requestBody"):
        wanted |= {"400", "413"}
    for code in wanted:
        responses.setdefault(code, {"description": _STANDARD[code]})
    for code, response in responses.items():
        if code[0] in "45":
            response["content"] = _problem_content()
            if code == "422":
                response["description"] = _STANDARD["422"]
            if code in _HEADERS:
                response["headers"] = copy.deepcopy(_HEADERS[code])


def _example_of(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """The first example of a schema (following a $ref and anyOf; an array of one example), or
    None."""
    ref = schema.get("$ref")
    if ref is not None:
        return _example_of(components.get(ref.rsplit("/", 1)[-1], {}), components)
    if schema.get("examples"):
        return schema["examples"][0]
    if schema.get("type") == "array" and "items" in schema:
        item = _example_of(schema["items"], components)
        return None if item is None else [item]
    for branch in schema.get("anyOf", []):  # an optional body: the example of its model
        example = _example_of(branch, components)
        if example is not None:
            return example
    return None


def _add_examples(operation: dict[str, Any], components: dict[str, Any]) -> None:
    bodies = [operation.get("requestBody", {})]
    bodies += [r for code, r in operation.get("responses", {}).items() if code.startswith("2")]
    for body in bodies:
        for media in body.get("content", {}).values():
            if "example" in media or "examples" in media or "schema" not in media:
                continue
            example = _example_of(media["schema"], components)
            if example is not None:
                media["example"] = example


def _add_links(schema: dict[str, Any]) -> None:
    for link in _LINKS:
        source, target = _operation(schema, link.source), _operation(schema, link.target)
        definition: dict[str, Any] = {"operationId": target["operationId"]}
        if link.values:
            definition["parameters"] = {k: _expression(v) for k, v in link.values.items()}
        if link.body is not None:
            definition["requestBody"] = {k: _expression(v) for k, v in link.body.items()}
        for status in link.statuses:
            response = source["responses"].get(status)
            if response is not None:
                response.setdefault("links", {})[link.name] = definition


def _operation(schema: dict[str, Any], label: str) -> dict[str, Any]:
    method, path = label.split(" ", 1)
    operation: dict[str, Any] | None = schema.get("paths", {}).get(path, {}).get(method.lower())
    if operation is None:
        raise LookupError(f"a link names {label}, which the app does not have")
    return operation


def _expression(pointer: str) -> str:
    return pointer[1:] if pointer.startswith("=") else f"$response.body#/{pointer}"
