"""Strict input beyond bodies: unknown query parameters are refused (422), like unknown fields.

A misspelt filter (``?stat=running``) would otherwise be ignored silently and return everything.
Installed as an app-wide dependency; the allowed names come from each route's own declaration.
"""

from __future__ import annotations

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.requests import HTTPConnection

from api.errors import ApiProblem


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def reject_unknown_query(connection: HTTPConnection) -> None:
    route = connection.scope.get("route")
    if not isinstance(route, APIRoute | APIWebSocketRoute) or not connection.query_params:
        return
    # Only requests that carry a query pay for this walk (a few fields, no I/O).
    unknown = sorted(set(connection.query_params) - _query_names(route.dependant))
    if unknown:
        raise ApiProblem(
            422,
            f"unknown query parameter(s): {', '.join(unknown)}",
            kind="validation",
            errors=[(f"query.{name}", "unknown query parameter") for name in unknown],
        )
