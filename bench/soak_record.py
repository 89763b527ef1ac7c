"""What a soak records (samples, faults, sessions, failures) and its report: table and plot.

``Soak`` is the run's state, appended to by the workload in bench/soak.py; ``report`` and
``plot`` turn it into ``report.md`` and ``soak.png``. Nothing here starts a process or injects
a fault.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STUCK_S = 90.0
"""A device refusing every start this long after its last fault has not come back: a failure."""


@dataclass
class Sample:
    t_s: float
    rss_mib: float
    cpu_pct: float
    sessions: int
    errors: int
    records_pending: float
    loop_lag_max_s: float
    frames: int


@dataclass
class Soak:
    minutes: float
    devices: int
    watchers: int
    seed: int
    fault_gap_s: tuple[float, float] = (20.0, 60.0)
    started: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    start_refusals: dict[str, int] = field(default_factory=dict)
    refusal_details: dict[str, str] = field(default_factory=dict)
    stuck: list[str] = field(default_factory=list)
    """Devices that refused every start for longer than STUCK_S (they never came back)."""
    errors: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    frames: int = 0
    gaps: int = 0
    dropped: int = 0
    last_fault: float = 0.0
    """Monotonic time the last fault ended."""

    def t(self) -> float:
        return round(time.monotonic() - self.started, 1)

    @property
    def ending(self) -> bool:
        return time.monotonic() - self.started >= self.minutes * 60

    async def nap(self, seconds: float) -> None:
        """Sleep, but not past the end of the soak."""
        left = self.minutes * 60 - (time.monotonic() - self.started)
        await asyncio.sleep(max(0.0, min(seconds, left)))


def plot(soak: Soak, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s / 60 for s in soak.samples]
    figure, (memory, cpu) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    memory.plot(t, [s.rss_mib for s in soak.samples], color="tab:blue")
    memory.set_ylabel("gateway RSS (MiB)")
    cpu.plot(t, [s.cpu_pct for s in soak.samples], color="tab:orange")
    cpu.set_ylabel("gateway CPU (% of a core)")
    cpu.set_xlabel("minutes")
    for at, _kind in soak.faults:
        for axis in (memory, cpu):
            axis.axvline(at / 60, color="grey", alpha=0.25, linewidth=0.8)
    memory.set_title(
        f"soak: {soak.devices} devices, {soak.watchers} watchers, {len(soak.session_ids)} "
        f"sessions, {len(soak.faults)} faults (grey lines), seed {soak.seed}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def report(soak: Soak, records: dict[str, Any], growth: float, max_growth: float) -> str:
    lines = [
        f"# Soak, {soak.minutes:g} min, seed {soak.seed}",
        "",
        f"- devices {soak.devices}, watchers {soak.watchers}; sessions started "
        f"{len(soak.session_ids)}; end states {records['states']}",
        f"- start refusals by kind: {soak.start_refusals or 'none'} "
        f"(first of each: {soak.refusal_details or '-'})",
        f"- devices that never came back (refused every start {STUCK_S:g} s after the last "
        f"fault): {len(soak.stuck)}",
        f"- faults injected: {len(soak.faults)} "
        f"({', '.join(f'{k} {n}' for k, n in sorted(_count(k for _, k in soak.faults).items()))})",
        f"- lost records: {len(records['lost'])}; sessions left open: {len(records['open'])}",
        "- end reasons: "
        + "; ".join(f"{why} ×{n}" for why, n in sorted(records["reasons"].items())),
        f"- unsafe output: {len(soak.unsafe)}",
        f"- client-side errors: {len(soak.errors)}",
        f"- frames received by watchers: {soak.frames}; gaps {soak.gaps}; dropped {soak.dropped}",
        f"- RSS growth after warm-up: {growth:+.1f} MiB (bound {max_growth:g})",
        "- longest event-loop stall: "
        f"{max((s.loop_lag_max_s for s in soak.samples), default=0):.3f} s",
        "",
        "| min | RSS MiB | CPU % | sessions | records waiting | loop lag max s | frames |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    step = max(1, len(soak.samples) // 30)
    for sample in soak.samples[::step]:
        lines.append(
            f"| {sample.t_s / 60:.1f} | {sample.rss_mib:.1f} | {sample.cpu_pct:.1f} | "
            f"{sample.sessions} | {sample.records_pending:g} | {sample.loop_lag_max_s:.3f} | "
            f"{sample.frames} |"
        )
    for title, items in (
        ("Unsafe output", soak.unsafe),
        ("Devices that never came back", soak.stuck),
        ("Errors", soak.errors),
    ):
        if items:
            lines += ["", f"## {title}", "", *(f"- {item}" for item in items[:50])]
    return "\n".join(lines) + "\n"


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out
