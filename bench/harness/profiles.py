"""cProfile files read into short tables for the report: top functions, a request's path.

A profile here is always of one server's event-loop thread (everything of the app runs on
it), taken by the server itself while a benchmark drives it (``profiled``). These functions
only read the file; what a table means is the report's business (bench/targets.py).
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

_T = TypeVar("_T")


async def profiled(work: Awaitable[_T], path: str | None) -> _T:
    """Await ``work``; with ``path``, under cProfile, the profile written there."""
    if path is None:
        return await work
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return await work
    finally:
        profiler.disable()
        profiler.dump_stats(path)


def _short(filename: str) -> str:
    return "/".join(Path(filename).parts[-2:]) if filename != "~" else "builtin"


def top_functions(path: str, limit: int = 12, *, per: int | None = None) -> list[str]:
    """The ``limit`` functions with the most own time, one line each; with ``per`` (e.g. the
    frames delivered while profiling), also own time and calls per one of those."""
    stats = pstats.Stats(path)
    rows = []
    for (filename, line, name), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((own, cumulative, calls, f"{_short(filename)}:{line}({name})"))
    total = sum(r[0] for r in rows) or 1
    rows.sort(reverse=True)
    lines = []
    for own, cumulative, calls, where in rows[:limit]:
        line = f"{own / total * 100:5.1f} % own, {cumulative:6.3f} s cum, {calls:8d} calls"
        if per:
            line += f", {own / per * 1e6:5.2f} µs and {calls / per:4.2f} calls per frame"
        lines.append(f"{line}  {where}")
    return lines


def own_total_s(path: str) -> float:
    """The profiled thread's own time summed over every function (seconds), idle wait included."""
    stats = pstats.Stats(path)
    return float(sum(own for (_cc, _n, own, _cum, _callers) in stats.stats.values()))  # type: ignore[attr-defined]


def busy_s(path: str) -> float:
    """Own time summed, minus the time spent waiting in the event loop's poll (idle)."""
    stats = pstats.Stats(path)
    idle = sum(
        own
        for (filename, _line, name), (_cc, _n, own, _cum, _c) in stats.stats.items()  # type: ignore[attr-defined]
        if filename == "~" and "poll" in name
    )
    return own_total_s(path) - idle


def request_path(
    path: str, per: int, keep: tuple[str, ...], skip: tuple[str, ...], limit: int = 16
) -> list[str]:
    """Functions whose file:name contains one of ``keep`` (and none of ``skip``), by cumulative
    time per ``per`` requests ("calls" counts coroutine resumptions)."""
    stats = pstats.Stats(path)
    rows = []
    for (filename, line, name), (_cc, calls, _own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{filename}:{name}"
        if not any(part in where for part in keep) or any(part in where for part in skip):
            continue
        rows.append((cumulative, calls, f"{_short(filename)}:{line}({name})"))
    rows.sort(reverse=True)
    return [
        f"{cumulative / per * 1000:7.2f} ms per stop, {calls:6d} calls  {where}"
        for cumulative, calls, where in rows[:limit]
    ]
