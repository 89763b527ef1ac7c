"""Reporting: a benchmark's own output, and the rows and cells of the Markdown report.

A benchmark prints its spread across repeats on stderr and one JSON object on stdout
(``print_result``). The report (bench/run.py) reads a figure's median (``median``), walks into a
result (``dig``), formats values (``fmt``, ``delta``) and builds rows: value, floor, ratio and
the variance across repeats (``Row``), and Markdown tables. What the report says is in
bench/figures.py, bench/targets.py and bench/document.py; this module only shapes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from harness.stats import spread_line


def print_result(result: dict[str, Any], lines: Iterable[tuple[str, Any, str] | str]) -> None:
    """A benchmark's output: each spread line (``(name, figure, unit)`` or a ready line) on
    stderr, then the result as one JSON object on stdout."""
    for line in lines:
        text = line if isinstance(line, str) else spread_line(*line)
        print(text, file=sys.stderr)
    print(json.dumps(result, indent=2))


SpreadLines = Callable[[dict[str, Any]], Iterable[tuple[str, Any, str] | str]]


def run_main(
    parser: argparse.ArgumentParser,
    measure: Callable[..., dict[str, Any]],
    lines: SpreadLines,
    argv: list[str] | None = None,
) -> None:
    """A benchmark's ``main``: its flags are ``measure``'s keywords; measure, print the result."""
    result = measure(**vars(parser.parse_args(argv)))
    print_result(result, lines(result))


def dig(data: Any, *path: str) -> Any:
    """``data[p0][p1]...`` or None when any step is missing (a digit indexes a list)."""
    for key in path:
        if isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        elif isinstance(data, dict) and key in data:
            data = data[key]
        else:
            return None
    return data


def median(figure: Any) -> float | None:
    """The value of a figure: a summary's median, or a bare number."""
    if isinstance(figure, dict):
        value = figure.get("median")
        return float(value) if isinstance(value, int | float) else None
    return float(figure) if isinstance(figure, int | float) else None


def spread(figure: Any) -> str:
    if isinstance(figure, dict) and figure.get("runs"):
        runs = figure["runs"]
        if len(runs) < 2:
            return "1 run"
        return f"±{figure['spread_pct'] / 2:.0f} % ({min(runs):g}-{max(runs):g}, n={len(runs)})"
    return "n/a"


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if float(value).is_integer() and abs(value) < 1000:
        text = f"{int(value)}"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def delta(value: float | None, unit: str = "ms") -> str:
    """A signed difference: +1.2 ms, -0.40 ms."""
    if value is None:
        return "-"
    return ("+" if value >= 0 else "-") + fmt(abs(value), unit)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("MET" if ok else "MISSED")


@dataclass
class Row:
    """One line of "Every figure, next to its floor"."""

    group: str
    name: str
    figure: Any
    unit: str
    floor: Any = None
    floor_name: str = ""

    def cells(self) -> list[str]:
        value, base = median(self.figure), median(self.floor)
        ratio = f"{value / base:.2f}x" if value is not None and base else "-"
        floor_text = f"{fmt(base, self.unit)} ({self.floor_name})" if base is not None else "-"
        return [self.name, fmt(value, self.unit), floor_text, ratio, spread(self.figure)]


def table(header: list[str], body: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in body)])


def code(lines: list[str]) -> str:
    return "```\n" + "\n".join(lines) + "\n```"


def flatten(data: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Every number in a result with its dotted path (a figure counts as its median)."""
    out: list[tuple[str, float]] = []
    if isinstance(data, dict):
        if "median" in data and isinstance(data["median"], int | float):
            return [(prefix, float(data["median"]))]
        for key, value in data.items():
            if key in ("runs", "config", "elapsed_s"):
                continue
            out.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, int | float) and not isinstance(data, bool):
        out.append((prefix, float(data)))
    return out
