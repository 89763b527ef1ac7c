"""What every REST v1 body is made of: the strict ``Input`` base, checked field types, examples.

``Input`` forbids unknown fields (a typo is a 422 naming the field, never silently ignored) and
is strict: a level, amplitude or id must be a JSON integer (``"3"``, ``3.0`` and ``true`` are
refused), a flag a JSON boolean. ``Name`` and ``Description`` refuse control characters (NUL
included) and the invisible bidirectional-override characters that make a name display as
something else. ``examples`` attaches a model's examples; ``EXAMPLE_*`` are the facts the
examples of several resources share.

This module defines no request or response body of its own (the resource modules of
``api.schemas`` do).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


class Input(BaseModel):
    """Base of every request body: unknown fields are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
"""Characters that reorder text on screen (a name could display as another's)."""


def plain_text(value: str, *, newlines: bool = False) -> str:
    """Refuse control characters (NUL included; newline and tab only when ``newlines``), lone
    surrogates and bidirectional controls; the error names the first one found."""
    allowed = "\n\t" if newlines else ""
    for char in value:
        if char in allowed:
            continue
        if char in BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(
                f"must not contain the invisible or control character U+{ord(char):04X}"
            )
    return value


def _plain_name(value: str) -> str:
    return plain_text(value)


def _plain_paragraph(value: str) -> str:
    return plain_text(value, newlines=True)


_REFUSED = "\\u007f-\\u009f\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069"
NAME_PATTERN = (
    f"^[^\\u0000-\\u001f{_REFUSED}]*[^\\s\\u0000-\\u001f{_REFUSED}][^\\u0000-\\u001f{_REFUSED}]*$"
)
"""What ``Name`` accepts, for the schema: something besides spaces, no control or bidi character."""
DESCRIPTION_PATTERN = f"^[^\\u0000-\\u0008\\u000b-\\u001f{_REFUSED}]*$"
"""What ``Description`` accepts, for the schema: newlines and tabs, no other control character."""

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=80),
    AfterValidator(_plain_name),
    Field(json_schema_extra={"pattern": NAME_PATTERN}),
]
Description = Annotated[
    str,
    Field(max_length=500, json_schema_extra={"pattern": DESCRIPTION_PATTERN}),
    AfterValidator(_plain_paragraph),
]
Slug = Annotated[str, Field(pattern="^[a-z0-9][a-z0-9-]{1,47}$", examples=["my-morning"])]
Address = Annotated[
    str,
    Field(
        pattern="^[0-9A-Za-z][0-9A-Za-z:_-]{0,63}$",
        examples=["C0:4D:43:00:00:00"],
        description="The device's Bluetooth address (case-insensitive).",
    ),
]
MAX_DB_ID = 2_147_483_647
"""Ids fit a 32-bit signed integer (PostgreSQL ``integer``; larger ones would overflow SQLite)."""
DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID)]
Level = Annotated[int, Field(ge=1, le=5, description="Intensity level, 1 (gentlest) to 5.")]


def examples(*examples: dict[str, Any]) -> ConfigDict:
    """A model's examples, shown in /docs and checked against its schema by tests/api."""
    return ConfigDict(json_schema_extra={"examples": list(examples)})


# Examples are one consistent story: user 2 ("Ana") on device C0:4D:43:00:00:00, the first
# device of a simulated radio (`mcgw serve --ble sim:2`), so they work against the simulator.
EXAMPLE_NOW = "2026-11-30T08:00:00Z"
EXAMPLE_SESSION_ID = "6f9619ff-8b86-4d01-b42d-00c04fc964ff"
