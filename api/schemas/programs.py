"""Bodies of the program routes: custom programs in and out.

Program steps reuse ``gateway.programs.ProgramStep``: one definition of a step for validation,
storage and the API. This module does not validate a program against the safety limits
(``gateway.programs.validate_program`` does).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from api.schemas.fields import Description, Input, Name, Slug, examples
from gateway.programs import ProgramStep

_STEP_EXAMPLES: list[dict[str, Any]] = [
    {"zone": "forehead", "amplitude_ua": 300, "duration_s": 120},
    {
        "zone": "cheeks",
        "waveform": "square_biphasic",
        "frequency_hz": 10.0,
        "amplitude_ua": 350,
        "duty_pct": 50,
        "duration_s": 180,
        "move_cue_s": 6,
    },
]


class ProgramCreate(Input):
    model_config = examples(
        {
            "slug": "my-morning",
            "name": "My morning",
            "description": "Forehead, then cheeks.",
            "steps": _STEP_EXAMPLES,
        }
    )

    slug: Slug
    name: Name
    description: Description = ""
    steps: list[ProgramStep] = Field(min_length=1, max_length=60)


class ProgramUpdate(Input):
    model_config = examples(
        {"name": "My morning", "description": "Forehead, then cheeks.", "steps": _STEP_EXAMPLES}
    )

    name: Name
    description: Description = ""
    steps: list[ProgramStep] = Field(min_length=1, max_length=60)


class ProgramPublic(BaseModel):
    model_config = examples(
        {
            "slug": "my-morning",
            "name": "My morning",
            "description": "Forehead, then cheeks.",
            "builtin": False,
            "owned_by_you": True,
            "duration_s": 300,
            "steps": [
                {
                    "zone": "forehead",
                    "waveform": "square_biphasic",
                    "frequency_hz": 10.0,
                    "amplitude_ua": 300,
                    "duty_pct": 50,
                    "duration_s": 120,
                    "move_cue_s": 5,
                },
                _STEP_EXAMPLES[1],
            ],
        }
    )

    slug: str
    name: str
    description: str
    builtin: bool
    owned_by_you: bool
    duration_s: int
    steps: list[ProgramStep]
