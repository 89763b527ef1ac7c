"""Resident memory per imported package, measured inside a real ``mcgw serve`` process.

``profiled_command(out_path)`` is the command line of a gateway started as ``mcgw serve`` would
be, with one addition made before anything else is imported: every module load is wrapped so
that the growth of the process's resident set while the module executes, minus what the
modules it imported in turn added, is booked to that module ("self" memory, the way
``python -X importtime`` books self time). When the process exits (SIGTERM: uvicorn shuts down
and returns), the per-module figures are summed per top-level package and written to
``out_path`` as JSON: ``{"packages": {name: MiB}, "via": {name: "the last modules whose import
brought it in"}, "modules": count, "imports_mib": total,
"rss_at_exit_mib": ...}``.

RSS moves in pages and allocator arenas, so one module's figure can be off by a few hundred
KiB; summed per package the figures are good to about a MiB. Memory a package allocates later,
while it runs (buffers, caches), is not booked to it: it is in the difference between the
sum and the process's RSS. Nothing here is imported by the gateway.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROFILER = """\
import atexit, json, os, signal, sys
import _frozen_importlib as _bootstrap

_PAGE = os.sysconf("SC_PAGE_SIZE")
_statm = open("/proc/self/statm", "rb", buffering=0)

def _rss_mib():
    _statm.seek(0)
    return int(_statm.read().split()[1]) * _PAGE / 1048576

_own = {}
_stack = []
_names = []
_via = {}
_original = _bootstrap._load_unlocked

def _load_unlocked(spec):
    top = spec.name.partition(".")[0]
    if top not in _via:
        _via[top] = [n for n in _names if n.partition(".")[0] != top][-3:]
    _stack.append(0.0)
    _names.append(spec.name)
    before = _rss_mib()
    try:
        return _original(spec)
    finally:
        grown = _rss_mib() - before
        children = _stack.pop()
        _names.pop()
        _own[spec.name] = _own.get(spec.name, 0.0) + grown - children
        if _stack:
            _stack[-1] += grown

_bootstrap._load_unlocked = _load_unlocked

def _ranked(figures):
    return {k: round(v, 2) for k, v in sorted(figures.items(), key=lambda kv: -kv[1])}

def _write():
    packages = {}
    for name, mib in _own.items():
        top = name.partition(".")[0]
        packages[top] = packages.get(top, 0.0) + mib
    with open(OUT_PATH, "w") as out:
        json.dump({
            "packages": _ranked(packages),
            "via": {k: " <- ".join(reversed(v)) for k, v in _via.items() if v},
            "top_modules": dict(list(_ranked(_own).items())[:30]),
            "modules": len(_own),
            "imports_mib": round(sum(_own.values()), 1),
            "rss_at_exit_mib": round(_rss_mib(), 1),
        }, out)

atexit.register(_write)
# uvicorn re-raises the SIGTERM it caught once it has shut down: end through atexit then.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sys.argv = ["mcgw", *ARGS]
from mcgw.cli import app
app()
"""


def profiled_command(out_path: Path, args: list[str]) -> list[str]:
    """``python -c ...``: ``mcgw <args>`` with every import's self RSS booked, written at exit."""
    code = PROFILER.replace("OUT_PATH", repr(str(out_path))).replace("ARGS", repr(args))
    return [sys.executable, "-c", code]


def package_table(profile: dict[str, object], *, top: int = 15) -> list[tuple[str, float]]:
    """The ``top`` packages by self RSS, then the rest summed as ``(others)``."""
    packages = profile.get("packages")
    if not isinstance(packages, dict):
        return []
    ranked = sorted(((str(k), float(v)) for k, v in packages.items()), key=lambda kv: -kv[1])
    head = ranked[:top]
    rest = sum(v for _, v in ranked[top:])
    return [*head, ("(others)", round(rest, 2))] if rest else head
