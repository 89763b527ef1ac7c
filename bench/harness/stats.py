"""Statistics every benchmark reports: percentiles of one run, a figure over repeats.

A *figure* is ``{"median", "min", "max", "spread_pct", "runs"}`` (``summarize``); the report
reads the median and the spread. Nothing here measures or prints.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

QUANTILES = ("p50", "p99", "max")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_stats(values_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of one run's samples, in the samples' unit."""
    return {
        "n": len(values_ms),
        "p50": percentile(values_ms, 50),
        "p90": percentile(values_ms, 90),
        "p99": percentile(values_ms, 99),
        "max": max(values_ms) if values_ms else math.nan,
    }


def summarize(runs: Iterable[float], digits: int = 3) -> dict[str, Any]:
    """One figure over repeats: median, min, max, spread (max - min, % of the median), runs."""
    clean = [float(v) for v in runs if not math.isnan(float(v))]
    if not clean:
        return {"median": None, "min": None, "max": None, "spread_pct": None, "runs": []}
    median = statistics.median(clean)
    spread = (max(clean) - min(clean)) / abs(median) * 100 if median else 0.0
    return {
        "median": round(median, digits),
        "min": round(min(clean), digits),
        "max": round(max(clean), digits),
        "spread_pct": round(spread, 1),
        "runs": [round(v, digits) for v in clean],
    }


def summarize_quantiles(
    runs: Sequence[Mapping[str, Any]], key: str, quantiles: Sequence[str] = QUANTILES
) -> dict[str, dict[str, Any]]:
    """``{q: summarize(run[key][q] for each run)}``: one run's latency stats over repeats."""
    return {q: summarize([run[key][q] for run in runs]) for q in quantiles}


def spread_line(name: str, figure: dict[str, Any], unit: str) -> str:
    """``name: median unit (min-max, spread N %)``, printed by every benchmark to stderr."""
    if figure.get("median") is None:
        return f"{name}: no data"
    return (
        f"{name}: {figure['median']:g} {unit} (runs {figure['min']:g}-{figure['max']:g}, "
        f"spread {figure['spread_pct']:g} %)"
    )
