"""The docs stay true to the code: every setting is documented, every CLI command is listed."""

from __future__ import annotations

import ast
import re
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


PATH_TOKEN = re.compile(r"`((?:mcgw|api|gateway|ble|bench|tests|docs|deploy)/[\w./-]*)`")
LAYERS = ("mcgw", "api", "gateway", "ble")


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _packages() -> list[str]:
    """Every package of the layers, as ``path/`` (migrations are data, not a package to find)."""
    return sorted(
        f"{init.parent.relative_to(ROOT).as_posix()}/"
        for layer in LAYERS
        for init in (ROOT / layer).rglob("__init__.py")
        if "migrations" not in init.parts
    )


def test_where_to_find_things_names_only_paths_that_exist() -> None:
    table = _section(README, "## Where to find things")
    named = PATH_TOKEN.findall(table)
    assert len(named) >= 20, "the table should name the modules a newcomer looks for"
    missing = [path for path in named if not (ROOT / path).exists()]
    assert missing == []


def test_where_to_find_things_lists_every_package() -> None:
    table = _section(README, "## Where to find things")
    missing = [package for package in _packages() if f"`{package}" not in table]
    assert missing == []


def test_the_architecture_names_only_modules_that_exist() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = PATH_TOKEN.findall(text)
    assert len(named) >= 20
    missing = sorted({path for path in named if not (ROOT / path).exists()})
    assert missing == []


def _defined_names() -> dict[str, set[str]]:
    """Every name a module defines (classes, functions, methods, assigned names and
    attributes), by path."""
    names: dict[str, set[str]] = {}
    for folder in (*LAYERS, "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            found = names.setdefault(path.relative_to(ROOT).as_posix(), set())
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    found.add(node.name)
                targets = (
                    node.targets
                    if isinstance(node, ast.Assign)
                    else [node.target]
                    if isinstance(node, ast.AnnAssign)
                    else []
                )
                for target in targets:
                    if isinstance(target, ast.Name):
                        found.add(target.id)
                    elif isinstance(target, ast.Attribute):
                        found.add(target.attr)
    return names


def test_the_architecture_names_functions_where_they_are() -> None:
    # "`sessions.py` `_check_contact`": the name must be defined in a module of that file name;
    # every test named must exist. A function that moves takes its doc line with it.
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    names = _defined_names()
    every = set().union(*names.values())
    wrong: list[str] = []
    for file, name in re.findall(r"`([\w/]+\.py)` `([A-Za-z_][\w.]*)", text):
        modules = [path for path in names if path == file or path.endswith(f"/{file}")]
        if not any(name.split(".")[-1] in names[path] for path in modules):
            wrong.append(f"{file} {name}")
    wrong += [
        name for name in set(re.findall(r"\b(test_\w+)\b(?!\.py)", text)) if name not in every
    ]
    assert len(re.findall(r"`[\w/]+\.py` `", text)) >= 20
    assert wrong == []
