"""Strict input beyond bodies: unknown query parameters are refused (422), like unknown fields,
and times in a query are ISO 8601 date-times, nothing else.

A misspelt filter (``?stat=running``) would otherwise be ignored silently and return everything.
``reject_unknown_query`` is installed as an app-wide dependency; the allowed names come from each
route's own declaration. ``QueryDateTime`` is the type of a time in a query: pydantic alone
would take ``?until=0.5`` as half a second after 1970 and ``?since=2026-11-30`` as its midnight.
``time_zone_names`` documents a time-zone parameter as the zone names the host knows.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import available_timezones

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from pydantic import BeforeValidator
from starlette.requests import HTTPConnection

from api.errors import ApiProblem

_ISO_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})?"
)


def _iso_date_time(value: object) -> object:
    if isinstance(value, str) and _ISO_DATE_TIME.fullmatch(value):
        return value  # pydantic parses it (and refuses 2026-02-30)
    raise ValueError("must be an ISO 8601 date and time, e.g. 2026-11-30T08:00:00Z (no zone: UTC)")


QueryDateTime = Annotated[datetime, BeforeValidator(_iso_date_time)]
"""A date and time in a query string: ISO 8601 only (no unix number, no bare date)."""


def time_zone_names(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of a time-zone parameter: its schema lists the IANA names this
    host's zone database has (read when the schema is built, not at import), so a name the
    schema allows is one the route accepts."""
    schema["enum"] = sorted(available_timezones())


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
