"""The docs stay true to the code: every setting is documented, every CLI command is listed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from gateway.config import Settings
from mcgw.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _variables(model: type[BaseModel], prefix: str = "MCGW_") -> Iterator[str]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _variables(annotation, f"{prefix}{name.upper()}__")
        else:
            yield f"{prefix}{name.upper()}"


def test_every_setting_is_in_the_readme_table() -> None:
    missing = [var for var in _variables(Settings) if f"`{var}`" not in README]
    assert missing == []


def test_the_readme_documents_no_setting_that_does_not_exist() -> None:
    known = set(_variables(Settings)) | {"MCGW_CONFIG_FILE"}
    documented = {
        word.strip("`|")
        for line in README.splitlines()
        if line.startswith("| `MCGW_")
        for word in line.split()[:2]
        if word.startswith("`MCGW_")
    }
    assert documented - known == set()


def test_every_cli_command_is_in_the_readme() -> None:
    names = [command.name for command in app.registered_commands]
    names += [group.name for group in app.registered_groups]
    missing = [name for name in names if name and f"mcgw {name}" not in README]
    assert missing == []


def test_linked_docs_exist() -> None:
    for name in ("protocol", "architecture", "api", "websocket", "storage", "deployment"):
        assert (ROOT / "docs" / f"{name}.md").is_file(), f"docs/{name}.md is missing"
