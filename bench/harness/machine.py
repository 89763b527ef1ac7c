"""What the figures were measured on: CPU, cores, RAM, OS, Python and package versions.

Read from /proc and the installed distributions; nothing here measures a figure.
"""

from __future__ import annotations

import contextlib
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = ("bleak", "bumble", "uvicorn", "fastapi", "starlette", "websockets", "uvloop", "mcgw")


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _proc_line(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line
    return None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    model = _proc_line("/proc/cpuinfo", "model name")
    if model is not None:
        cpu = model.split(":", 1)[1].strip()
    ram_gib = None
    total = _proc_line("/proc/meminfo", "MemTotal:")
    with contextlib.suppress(ValueError, IndexError, AttributeError):
        ram_gib = round(int(total.split()[1]) / 1024 / 1024, 1)  # type: ignore[union-attr]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {name: package_version(name) for name in PACKAGES},
    }
