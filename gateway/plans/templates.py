"""Built-in plan templates: the regimens makers advise, ready to start on a given day.

* ``loading-maintenance``: 5 sessions a week for 4 weeks (loading), then 2 a week, open-ended
  (maintenance; a third in a week is welcome and counts, the plan expects 2).
* ``neck-routine``: Tuesday, Thursday and Saturday at 20:00, neck programs and zone only.
* ``gentle-start``: a first week of 3 sessions at level 2 at most, then 5 a week for 3 weeks,
  then 2 a week.

A template is phases without a start day or zone: the caller adds those when creating a plan.
This module holds data only (no storage, no clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

from gateway.plans.schedule import Phase, Repeat


@dataclass(frozen=True, slots=True)
class Template:
    slug: str
    name: str
    description: str
    phases: tuple[Phase, ...]


TEMPLATES: tuple[Template, ...] = (
    Template(
        slug="loading-maintenance",
        name="Loading, then maintenance",
        description="5 sessions a week for 4 weeks, then 2 (or 3) a week to keep the results.",
        phases=(
            Phase(name="loading", repeat=Repeat(per_week=5), days=28, programs=("full-face",)),
            Phase(name="maintenance", repeat=Repeat(per_week=2), programs=("full-face",)),
        ),
    ),
    Template(
        slug="neck-routine",
        name="Neck routine",
        description="Neck and jawline on Tuesday, Thursday and Saturday evenings at 20:00.",
        phases=(
            Phase(
                name="routine",
                repeat=Repeat(days_of_week=(1, 3, 5), times_of_day=(time(20, 0),)),
                programs=("neck-tone",),
                zones=("neck",),
            ),
        ),
    ),
    Template(
        slug="gentle-start",
        name="Gentle start",
        description=(
            "A first week of 3 short sessions at level 2 at most, then 5 a week for 3 weeks, "
            "then 2 a week."
        ),
        phases=(
            Phase(
                name="gentle",
                repeat=Repeat(per_week=3),
                days=7,
                programs=("quick-lift",),
                max_level=2,
            ),
            Phase(name="loading", repeat=Repeat(per_week=5), days=21, programs=("full-face",)),
            Phase(name="maintenance", repeat=Repeat(per_week=2), programs=("full-face",)),
        ),
    ),
)

BY_SLUG: dict[str, Template] = {t.slug: t for t in TEMPLATES}
