"""The import rules of the layers, read from the source (every import, including those inside
functions and under ``TYPE_CHECKING``).

``mcgw`` (the command) -> ``api`` -> ``gateway`` -> ``ble``, never back; nothing imports
``mcgw``; ``api`` never speaks BLE itself; the codec (``ble.protocol``) opens no socket and
awaits nothing. A rule broken anywhere fails with the file, line and import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mcgw", "api", "gateway", "ble")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted and absolute
    where: str  # path:line

    def __str__(self) -> str:
        return f"{self.where}: {self.module} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, source: str | None = None) -> list[Import]:
    """Every import statement of one file, made absolute."""
    text = path.read_text() if source is None else source
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, where) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append(Import(module, target, where))
    return found


def all_imports() -> list[Import]:
    found: list[Import] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found += imports_of(path)
    return found


def top(name: str) -> str:
    return name.split(".", 1)[0]


FORBIDDEN: dict[str, set[str]] = {
    # importing package -> top-level packages it must never import
    "ble": {"gateway", "api", "mcgw"},
    "gateway": {"api", "mcgw"},
    "api": {"mcgw", "bleak", "bumble"},
}

PURE_CODEC_FORBIDS = {"bleak", "bumble", "asyncio", "socket", "bleak_retry_connector"}


def broken(imports: list[Import]) -> list[Import]:
    """The imports that break a layer rule."""
    bad: list[Import] = []
    for imp in imports:
        forbidden = set(FORBIDDEN.get(top(imp.module), set()))
        if imp.module == "ble.protocol" or imp.module.startswith("ble.protocol."):
            forbidden |= PURE_CODEC_FORBIDS
        if top(imp.target) in forbidden:
            bad.append(imp)
    return bad


def test_every_package_is_read() -> None:
    imports = all_imports()
    layers = {top(imp.module) for imp in imports}
    assert layers == set(PACKAGES)
    assert len(imports) > 300, "the walk found too few imports to be reading the tree"


def test_the_layers_import_only_downwards() -> None:
    bad = broken(all_imports())
    assert not bad, "imports against the layer rules:\n" + "\n".join(map(str, bad))


def test_nothing_below_the_command_imports_it() -> None:
    users = [
        imp for imp in all_imports() if top(imp.target) == "mcgw" and top(imp.module) != "mcgw"
    ]
    assert not users, "\n".join(map(str, users))


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("ble/link.py", "from gateway.sessions import SessionManager\n"),
        ("ble/sim/firmware.py", "def f():\n    from ..protocol import x\n    import api.app\n"),
        (
            "gateway/runtime.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from api.app import create_app\n",
        ),
        ("gateway/devices.py", "import mcgw.cli\n"),
        ("api/ws.py", "from bumble.device import Device\n"),
        ("ble/protocol.py", "import asyncio\n"),
    ],
)
def test_the_check_catches_a_wrong_import(path: str, source: str) -> None:
    # The walk itself is attacked: each of these must be reported, wherever it hides.
    assert broken(imports_of(ROOT / path, source))


def test_relative_imports_are_resolved() -> None:
    found = imports_of(
        ROOT / "ble/sim/firmware.py", "from ..protocol import Stop\nfrom . import x\n"
    )
    assert [imp.target for imp in found] == ["ble.protocol", "ble.sim"]


def test_every_module_logs_through_one_logger_named_for_it() -> None:
    # STYLE 11: ``log = logging.getLogger(__name__)``. Only gateway/logs.py, which configures
    # logging for the process, may ask for other loggers.
    odd: list[str] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "gateway" / "logs.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "getLogger"
                ):
                    line = ast.get_source_segment(path.read_text(), node) or ""
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    if line != "logging.getLogger(__name__)":
                        odd.append(f"{where}: {line}")
            text = path.read_text()
            if (
                "logging.getLogger(__name__)" in text
                and "log = logging.getLogger(__name__)" not in text
            ):
                odd.append(f"{path.relative_to(ROOT)}: the module logger is not named `log`")
    assert odd == []
