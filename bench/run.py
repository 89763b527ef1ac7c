"""``make bench``: run every benchmark, keep the JSON, write docs/benchmarks.md.

Each benchmark runs as its own process (``python bench/<name>.py``, JSON on stdout, its spread
across repeats on stderr), in order, under a time limit; the PostgreSQL ingest runs here. Results
go to bench/results/latest.json (git-ignored) and a Markdown report to docs/benchmarks.md: the
machine, a table of the BRIEF's targets (figure, floor of the same run, ratio, verdict), every
figure next to its floor with the spread across repeats, and for each missed target what limits
it (a short profile, GC pauses, event-loop lag). A benchmark that cannot run is reported as
"not measured: <why>", never with a made-up number.

The table of benchmarks is ``BENCHES``; which figures the report shows is bench/figures.py, the
targets bench/targets.py, the document bench/document.py. This module only runs and writes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from document import render
from harness import BENCH, ROOT
from harness.machine import machine
from harness.report import fmt
from postgres_ingest import postgres_ingest
from targets import targets

RESULTS = BENCH / "results" / "latest.json"
DOC = ROOT / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    args: tuple[str, ...] = ()
    timeout_s: float = 300.0


BENCHES = (
    Bench("floors", "floors.py", timeout_s=120),
    Bench("storage_ingest", "storage_ingest.py", timeout_s=120),
    Bench("postgres_ingest", "", timeout_s=120),
    Bench("gateway_core", "gateway_core.py", timeout_s=180),
    Bench("telemetry_e2e", "telemetry_e2e.py", ("--profile", "--pinned"), timeout_s=240),
    Bench("ws_fanout", "ws_fanout.py", ("--seconds", "1.5"), timeout_s=420),
    Bench("capacity", "capacity.py", timeout_s=300),
    Bench("radios", "radios.py", timeout_s=240),
    Bench("footprint", "footprint.py", timeout_s=300),
    Bench("mqtt_bridge", "mqtt_bridge.py", timeout_s=240),
    Bench("webapp", "webapp.py", timeout_s=240),
)


# --- running -------------------------------------------------------------------------------------


def run_script(bench: Bench, quick: bool) -> dict[str, Any]:
    """One benchmark process; its JSON, or ``{"not_measured": why}``."""
    path = BENCH / bench.script
    if not path.exists():
        return {"not_measured": f"bench/{bench.script} does not exist yet"}
    args = [*bench.args, *(QUICK_ARGS.get(bench.name, ()) if quick else ())]
    try:
        done = subprocess.run(
            [sys.executable, str(path), *args],
            stdout=subprocess.PIPE,
            timeout=bench.timeout_s,
            check=False,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return {"not_measured": f"bench/{bench.script} took longer than {bench.timeout_s:.0f} s"}
    if done.returncode != 0:
        return {
            "not_measured": f"bench/{bench.script} failed (exit {done.returncode}); "
            "its error is above in the make bench output"
        }
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        return {"not_measured": f"bench/{bench.script} printed no JSON object"}
    return result


QUICK_ARGS: dict[str, tuple[str, ...]] = {
    "floors": ("--repeats", "1", "--notify-n", "200", "--write-n", "100", "--burst-n", "200"),
    "storage_ingest": ("--runs", "1"),
    "telemetry_e2e": ("--windows", "1", "--window-s", "2", "--stop-cycles", "1"),
    "ws_fanout": ("--repeats", "1", "--clients", "20", "--factor", "4", "--max-rate", "400"),
    "capacity": ("--steps", "7", "--windows", "1"),
    "radios": ("--windows", "1"),
    "footprint": ("--launches", "1", "--idle-s", "2"),
    "mqtt_bridge": ("--transitions", "20", "--repeats", "1", "--cpu-s", "1.5"),
    "webapp": ("--repeats", "1", "--seconds", "2"),
}


def run_all(only: list[str] | None, quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    results: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
        "quick": quick,
        "benches": {},
    }
    for bench in BENCHES:
        if only and bench.name not in only:
            continue
        print(f"== {bench.name}", file=sys.stderr, flush=True)
        began = time.perf_counter()
        if bench.name == "postgres_ingest":
            try:
                result = postgres_ingest(runs=1 if quick else 3)
            except Exception as exc:
                result = {"not_measured": f"the PostgreSQL ingest failed: {exc}"}
        else:
            result = run_script(bench, quick)
        result.setdefault("elapsed_s", round(time.perf_counter() - began, 1))
        if "not_measured" in result:
            print(f"   not measured: {result['not_measured']}", file=sys.stderr)
        results["benches"][bench.name] = result
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the plumbing")
    parser.add_argument("--render", metavar="JSON", help="only re-render the doc from a result")
    parser.add_argument("--doc", default=str(DOC))
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(Path(args.render).read_text())
    else:
        results = run_all(args.only, args.quick)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2))
    Path(args.doc).write_text(render(results))
    for target in targets(results):
        print(f"{target.name}: {target.measured} -> {target.verdict}", file=sys.stderr)
    print(
        f"wrote {RESULTS.relative_to(ROOT)} and {Path(args.doc).name} "
        f"in {fmt(results.get('elapsed_s'), 's')}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
