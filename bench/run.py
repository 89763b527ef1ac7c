"""``make bench``: run every benchmark, keep the JSON, write docs/benchmarks.md.

Each benchmark runs as its own process (``python bench/<name>.py``, JSON on stdout, its spread
across repeats on stderr), in order, under a time limit; the PostgreSQL ingest runs here. Results
go to bench/results/latest.json (git-ignored) and a Markdown report to docs/benchmarks.md: the
machine, a table of the BRIEF's targets (figure, floor of the same run, ratio, verdict), every
figure next to its floor with the spread across repeats, and for each missed target what limits
it (a short profile, GC pauses, event-loop lag). A benchmark that cannot run is reported as
"not measured: <why>", never with a made-up number.

``render(results)`` is pure (the smoke test feeds it a synthetic result).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from floors import machine, summarize  # noqa: E402

RESULTS = BENCH / "results" / "latest.json"
DOC = ROOT / "docs" / "benchmarks.md"
POSTGRES_URL = os.environ.get(
    "MCGW_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BENCH_DB = "mcgw_bench"


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
    Bench("telemetry_e2e", "telemetry_e2e.py", ("--profile",), timeout_s=180),
    Bench("ws_fanout", "ws_fanout.py", ("--seconds", "1.5"), timeout_s=240),
    Bench("capacity", "capacity.py", timeout_s=300),
    Bench("footprint", "footprint.py", timeout_s=180),
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
    "ws_fanout": ("--repeats", "1", "--clients", "20", "--rates", "100", "400"),
    "capacity": ("--steps", "7", "--windows", "1"),
    "footprint": ("--launches", "1", "--idle-s", "2"),
}


def postgres_ingest(runs: int = 3) -> dict[str, Any]:
    """Telemetry ingest on PostgreSQL: psycopg executemany (floor) against the StorageWriter.

    Same data as bench/storage_ingest.py (a 20-minute 50 Hz session), in a database of its own
    (``mcgw_bench``, dropped afterwards) on the server of ``MCGW_BENCH_POSTGRES_URL``.
    """
    try:
        import psycopg
    except ImportError:
        return {"not_measured": "psycopg is not installed"}
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_URL)
    admin = f"host={url.host} port={url.port or 5432} user={url.username} dbname={url.database}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
            connection.execute(f"CREATE DATABASE {BENCH_DB}")
    except psycopg.Error as exc:
        return {"not_measured": f"PostgreSQL at {url.host}:{url.port} is not usable: {exc}"}
    bench_url = url.set(database=BENCH_DB, drivername="postgresql+psycopg")
    try:
        return _postgres_runs(bench_url, runs)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


def _postgres_runs(url: Any, runs: int) -> dict[str, Any]:
    import psycopg
    from storage_ingest import COLUMNS, INT_TABLE_SQL, N, int_rows, make_samples

    samples = make_samples()
    rows = int_rows(samples)
    conninfo = f"host={url.host} port={url.port or 5432} user={url.username} dbname={url.database}"
    floor, one, fifty = [], [], []
    for run in range(runs):
        with psycopg.connect(conninfo) as connection:
            table = f"floor_{run}"
            connection.execute(INT_TABLE_SQL.replace("CREATE TABLE t ", f"CREATE TABLE {table} "))
            connection.commit()
            insert = f"INSERT INTO {table} VALUES ({','.join(['%s'] * COLUMNS)})"
            started = time.perf_counter()
            with connection.cursor() as cursor:
                for i in range(0, len(rows), 1000):
                    cursor.executemany(insert, rows[i : i + 1000])
                    connection.commit()
            floor.append(len(rows) / (time.perf_counter() - started))
        one.append(asyncio.run(_writer(url, samples, 1)))
        fifty.append(asyncio.run(_writer(url, samples, 50)))
    floor_median = summarize(floor, 0)
    return {
        "bench": "postgres_ingest",
        "config": {"samples": N, "runs": runs, "server": f"{url.host}:{url.port or 5432}"},
        "floor_psycopg_rows": floor_median,
        "writer_1_session": summarize(one, 0),
        "writer_50_sessions": summarize(fifty, 0),
    }


async def _writer(url: Any, samples: list[Any], sessions: int) -> float:
    """Samples per second through StorageWriter, as storage_ingest.py measures it on SQLite."""
    import sqlalchemy as sa
    from storage_ingest import HZ, PER_NOTIFICATION, SESSION_S

    from gateway.config import DatabaseSettings
    from gateway.storage import repo, session_log
    from gateway.storage.engine import create_engine_from_settings, upgrade
    from gateway.storage.writer import StorageWriter

    engine = create_engine_from_settings(
        DatabaseSettings(url=url.render_as_string(hide_password=False))
    )
    with engine.begin() as connection:
        connection.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade(engine)
    writer = StorageWriter(engine, flush_s=3600)
    await writer.start()
    user = await writer.run(lambda s: repo.create_user(session=s, name="bench"))
    ids = []
    for index in range(sessions):
        record, _ = await writer.run(
            lambda s, i=index: session_log.create_session(
                session=s,
                hub_id="bench",
                owner_id=user.id,
                device_address=f"AA:00:00:00:00:{i:02X}",
                program_slug="bench",
                intensity=3,
                planned_s=SESSION_S,
            )
        )
        ids.append(record.id)
    per_window = HZ
    windows = len(samples) // sessions // per_window
    started = time.perf_counter()
    for w in range(windows):
        chunk = samples[w * per_window : (w + 1) * per_window]
        for session_id in ids:
            for i in range(0, per_window, PER_NOTIFICATION):
                writer.append_telemetry(session_id, chunk[i : i + PER_NOTIFICATION])
        await writer.flush()
    elapsed = time.perf_counter() - started
    await writer.close()
    engine.dispose()
    return windows * per_window * sessions / elapsed


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


# --- reading results -----------------------------------------------------------------------------


def dig(data: Any, *path: str) -> Any:
    """``data[p0][p1]...`` or None when any step is missing."""
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
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


@dataclass
class Row:
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


@dataclass
class Target:
    name: str
    aim: str
    measured: str
    verdict: str
    """MET, MISSED, or "not measured: <why>"."""
    limits: str = ""


def rows(results: dict[str, Any]) -> list[Row]:
    benches = results.get("benches", {})
    out: list[Row] = []
    floors = benches.get("floors", {})
    for where, label in (("in_process", "in process"), ("cross_process", "across processes")):
        part = floors.get(where)
        if not part:
            continue
        for q in ("p50", "p99"):
            out.append(
                Row(
                    "floors",
                    f"notification latency {q}, {label}",
                    part["notify_latency_ms"][q],
                    "ms",
                )
            )
        for q in ("p50", "p99"):
            out.append(
                Row(
                    "floors",
                    f"write-with-response round trip {q}, {label}",
                    part["write_rtt_ms"][q],
                    "ms",
                )
            )
        out.append(Row("floors", f"notification burst, {label}", part["burst_per_s"], "/s"))
    in_floor = floors.get("in_process", {})
    e2e = benches.get("telemetry_e2e", {})
    if "telemetry" in e2e:
        t = e2e["telemetry"]
        for q in ("p50", "p99"):
            out.append(
                Row(
                    "telemetry",
                    f"device -> phone {q} (7 dev x 50 Hz, 20 phones)",
                    t["e2e_ms"][q],
                    "ms",
                    dig(in_floor, "notify_latency_ms", q),
                    f"notify {q}",
                )
            )
        out.append(
            Row(
                "telemetry",
                "BLE leg p99 (device -> gateway receive)",
                t["ble_leg_ms"]["p99"],
                "ms",
                dig(in_floor, "notify_latency_ms", "p99"),
                "notify p99",
            )
        )
        out.append(
            Row(
                "telemetry",
                "gateway leg p99 (receive -> phone read)",
                t["gateway_leg_ms"]["p99"],
                "ms",
            )
        )
        out.append(Row("telemetry", "hub CPU under that load", t["hub_cpu_pct"], "%"))
        out.append(Row("telemetry", "hub RSS under that load", t["hub_rss_mib"], "MiB"))
    if "stop" in e2e:
        for q in ("p50", "p99"):
            out.append(
                Row(
                    "stop",
                    f"API stop -> device output off {q}",
                    e2e["stop"]["output_off_ms"][q],
                    "ms",
                    dig(in_floor, "write_rtt_ms", q),
                    f"write RTT {q}",
                )
            )
        out.append(
            Row(
                "stop",
                "API stop -> HTTP answer p99",
                e2e["stop"]["http_answer_ms"]["p99"],
                "ms",
                dig(in_floor, "write_rtt_ms", "p99"),
                "write RTT p99",
            )
        )
    if "stop_ws" in e2e:
        for q in ("p50", "p99"):
            out.append(
                Row(
                    "stop",
                    f"WebSocket stop -> device output off {q}",
                    e2e["stop_ws"]["output_off_ms"][q],
                    "ms",
                    dig(in_floor, "write_rtt_ms", q),
                    f"write RTT {q}",
                )
            )
    core = benches.get("gateway_core", {})
    if dig(core, "stop", "request_to_output_off_ms"):
        for q in ("p50", "p99"):
            out.append(
                Row(
                    "gateway core (no HTTP)",
                    f"SessionManager.stop -> output off {q}",
                    core["stop"]["request_to_output_off_ms"][q],
                    "ms",
                    dig(core, "floor", "isolated_write_round_trip_ms", q),
                    f"isolated write {q}",
                )
            )
        out.append(
            Row(
                "gateway core (no HTTP)",
                "SessionManager.stop -> STOP confirmed p99",
                core["stop"]["request_to_confirmed_ms"]["p99"],
                "ms",
                dig(core, "floor", "isolated_write_round_trip_ms", "p99"),
                "isolated write p99",
            )
        )
        for q in ("p50", "p99"):
            out.append(
                Row(
                    "gateway core (no HTTP)",
                    f"scheduler dispatch lateness {q}",
                    core["scheduler"]["dispatch_lateness_ms"][q],
                    "ms",
                )
            )
        for key, stall in (dig(core, "scheduler", "stalls") or {}).items():
            out.append(
                Row(
                    "gateway core (no HTTP)",
                    f"output gaps through a {key.removeprefix('stall_')} radio stall "
                    f"({stall['runs']} runs; lease expiries {stall['lease_expiries']})",
                    stall["output_gaps"],
                    "",
                )
            )
    fan = benches.get("ws_fanout", {})
    bare = dig(fan, "systems", "bare")
    for system, label in (
        ("gateway", "mcgw /api/v1/ws"),
        ("bare", "bare uvicorn broadcast"),
        ("mosquitto", "Mosquitto relay"),
    ):
        figures = dig(fan, "systems", system)
        if not figures:
            continue
        floor = bare if system != "bare" else None
        clients = dig(fan, "config", "clients")
        out.append(
            Row(
                "fan-out",
                f"{label}: sustained frames/s to {clients} clients",
                figures["sustained_capacity_per_s"],
                "/s",
                floor and floor["sustained_capacity_per_s"],
                "bare",
            )
        )
        out.append(
            Row(
                "fan-out",
                f"{label}: most frames/s delivered (saturation)",
                figures["max_delivered_per_s"],
                "/s",
                floor and floor["max_delivered_per_s"],
                "bare",
            )
        )
        first = figures["steps"][0]
        out.append(
            Row(
                "fan-out",
                f"{label}: p99 at {first['offered_per_s']:,} frames/s",
                first["p99_ms"],
                "ms",
                floor and floor["steps"][0]["p99_ms"],
                "bare",
            )
        )
        out.append(
            Row(
                "fan-out",
                f"{label}: server CPU at {first['offered_per_s']:,} frames/s",
                first["server_cpu_pct"],
                "%",
                floor and floor["steps"][0]["server_cpu_pct"],
                "bare",
            )
        )
    storage = benches.get("storage_ingest", {})
    if "floor_sqlite3_rows" in storage:
        base = storage["floor_sqlite3_rows"]["samples_per_s"]
        for key, label in (
            ("writer_1_session", "StorageWriter, 1 session"),
            ("writer_50_sessions", "StorageWriter, 50 sessions"),
            ("core_rows", "SQLAlchemy Core rows"),
        ):
            if key in storage:
                out.append(
                    Row(
                        "storage",
                        f"SQLite ingest, {label}",
                        storage[key]["samples_per_s"],
                        "samples/s",
                        base,
                        "sqlite3 executemany",
                    )
                )
    pg = benches.get("postgres_ingest", {})
    if "floor_psycopg_rows" in pg:
        for key, label in (
            ("writer_1_session", "1 session"),
            ("writer_50_sessions", "50 sessions"),
        ):
            out.append(
                Row(
                    "storage",
                    f"PostgreSQL ingest, StorageWriter, {label}",
                    pg[key],
                    "samples/s",
                    pg["floor_psycopg_rows"],
                    "psycopg executemany",
                )
            )
    foot = benches.get("footprint", {})
    if "sim7" in foot:
        out.append(Row("footprint", "time to ready (sim:7)", foot["sim7"]["ready_s"], "s"))
        out.append(
            Row(
                "footprint",
                "time to 7 devices bonded (sim:7)",
                foot["sim7"]["devices_bonded_s"],
                "s",
            )
        )
        out.append(Row("footprint", "RSS, sim:7 (sims in process)", foot["sim7"]["rss_mib"], "MiB"))
        out.append(
            Row("footprint", "idle CPU, sim:7 (sims in process)", foot["sim7"]["idle_cpu_pct"], "%")
        )
    if "hci" in foot:
        hci = foot["hci"]
        out.append(
            Row("footprint", "RSS, gateway alone, no device", hci["no_devices"]["rss_mib"], "MiB")
        )
        out.append(
            Row(
                "footprint", "RSS, gateway alone, 7 devices", hci["seven_devices"]["rss_mib"], "MiB"
            )
        )
        out.append(
            Row(
                "footprint",
                "idle CPU, gateway alone, no device",
                hci["no_devices"]["idle_cpu_pct"],
                "%",
            )
        )
        out.append(
            Row(
                "footprint",
                "idle CPU, gateway alone, 7 devices",
                hci["seven_devices"]["idle_cpu_pct"],
                "%",
            )
        )
    cap = benches.get("capacity", {})
    for setup, steps in (cap.get("steps") or {}).items():
        for step in steps:
            if "e2e_ms" not in step:
                continue
            out.append(
                Row(
                    "capacity",
                    f"{setup}, {step['devices']} devices: e2e p99",
                    step["e2e_ms"]["p99"],
                    "ms",
                )
            )
            out.append(
                Row(
                    "capacity",
                    f"{setup}, {step['devices']} devices: hub CPU",
                    step["hub_cpu_pct"],
                    "%",
                )
            )
    return out


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("MET" if ok else "MISSED")


def targets(results: dict[str, Any]) -> list[Target]:
    benches = results.get("benches", {})
    floors = benches.get("floors", {})
    e2e = benches.get("telemetry_e2e", {})
    out: list[Target] = []

    def missing(*names: str) -> str | None:
        for name in names:
            reason = dig(benches, name, "not_measured")
            if reason or name not in benches:
                return f"not measured: {reason or f'{name} was not run'}"
        return None

    # Stop
    why = missing("floors", "telemetry_e2e")
    if why is None:
        stop = median(dig(e2e, "stop", "output_off_ms", "p99"))
        rtt = median(dig(floors, "in_process", "write_rtt_ms", "p99"))
        ok = None if stop is None or rtt is None else stop - rtt < 5
        out.append(
            Target(
                "Stop",
                "API stop -> output off p99 < 5 ms above a write round trip",
                f"{fmt(stop, 'ms')} vs {fmt(rtt, 'ms')} ({delta((stop or 0) - (rtt or 0))})",
                verdict(ok),
                limits_stop(e2e) if ok is False else "",
            )
        )
    else:
        out.append(
            Target("Stop", "API stop -> output off p99 < 5 ms above a write round trip", "-", why)
        )
    core = benches.get("gateway_core") or {}
    above = dig(core, "stop", "output_off_p99_above_isolated_write_p99_ms")
    if isinstance(above, int | float):
        off = median(dig(core, "stop", "request_to_output_off_ms", "p99"))
        iso = median(dig(core, "floor", "isolated_write_round_trip_ms", "p99"))
        out.append(
            Target(
                "Stop, gateway level",
                "SessionManager.stop -> output off p99 < 5 ms above a write round trip (no HTTP)",
                f"{fmt(off, 'ms')} vs {fmt(iso, 'ms')} ({delta(above)})",
                verdict(above < 5),
            )
        )
    # Telemetry
    why = missing("floors", "telemetry_e2e")
    if why is None:
        p99 = median(dig(e2e, "telemetry", "e2e_ms", "p99"))
        floor = median(dig(floors, "in_process", "notify_latency_ms", "p99"))
        ok = None if p99 is None or floor is None else p99 - floor < 5
        lost = dig(e2e, "telemetry", "lost")
        out.append(
            Target(
                "Live telemetry",
                "device -> phone p99 < 5 ms above the notification floor, 7 x 50 Hz, "
                "20 phones, 2 cores",
                f"{fmt(p99, 'ms')} vs {fmt(floor, 'ms')} "
                f"({delta((p99 or 0) - (floor or 0))}), {lost} lost",
                verdict(ok),
                limits_telemetry(e2e) if ok is False else "",
            )
        )
    else:
        out.append(Target("Live telemetry", "p99 < 5 ms above the notification floor", "-", why))
    # Scheduler
    core = benches.get("gateway_core")
    why = missing("gateway_core")
    if why is None and core is not None:
        out.append(
            Target(
                "Scheduler",
                "no output gap through radio stalls up to 500 ms",
                core_summary(core),
                core_verdict(core),
            )
        )
    else:
        out.append(
            Target(
                "Scheduler",
                "no output gap through radio stalls up to 500 ms",
                "-",
                why or "not measured",
            )
        )
    # Footprint
    foot = benches.get("footprint", {})
    why = missing("footprint")
    if why is None:
        rss = median(dig(foot, "hci", "seven_devices", "rss_mib"))
        cpu = median(dig(foot, "hci", "seven_devices", "idle_cpu_pct"))
        ready = median(dig(foot, "sim7", "ready_s"))
        out.append(
            Target(
                "Footprint: RSS",
                "< 90 MB with 7 devices (gateway alone)",
                f"{fmt(rss, 'MiB')} ({fmt(rss * 1.048576 if rss else None, 'MB')})",
                verdict(None if rss is None else rss < 90 / 1.048576),
                limits_rss(foot) if rss is not None and rss >= 90 / 1.048576 else "",
            )
        )
        out.append(
            Target(
                "Footprint: idle CPU",
                "< 2 % of a core (gateway alone, 7 devices)",
                f"{fmt(cpu, '%')}",
                verdict(None if cpu is None else cpu < 2),
                limits_idle(foot) if cpu is not None and cpu >= 2 else "",
            )
        )
        out.append(
            Target(
                "Footprint: ready",
                "< 2 s (mcgw serve --ble sim:7 -> health 200)",
                f"{fmt(ready, 's')}",
                verdict(None if ready is None else ready < 2),
            )
        )
    else:
        for name in ("Footprint: RSS", "Footprint: idle CPU", "Footprint: ready"):
            out.append(Target(name, "", "-", why))
    # Capacity
    cap = benches.get("capacity", {})
    why = missing("capacity")
    if why is None:
        best = cap.get("capacity", {})
        gateway_only = best.get("sim-process")
        text = ", ".join(f"{k}: {v} devices" for k, v in best.items())
        ok = None if gateway_only is None else gateway_only >= 50
        out.append(
            Target(
                "Capacity",
                "50 devices at 50 Hz, no lost frame, one gateway process",
                text,
                verdict(ok),
                limits_capacity(cap) if ok is False else "",
            )
        )
    else:
        out.append(Target("Capacity", "50 devices at 50 Hz, no lost frame", "-", why))
    return out


def core_summary(core: dict[str, Any]) -> str:
    """A line from bench/gateway_core.py's JSON (its known shape, else any gap/lateness key)."""
    gaps = dig(core, "scheduler", "output_gaps")
    if isinstance(gaps, int):
        stalls = dig(core, "scheduler", "stalls") or {}
        runs = max((s.get("runs", 0) for s in stalls.values()), default=0)
        names = "/".join(k.removeprefix("stall_").removesuffix("ms") for k in stalls)
        late = dig(core, "scheduler", "dispatch_lateness_ms") or {}
        return (
            f"{gaps} output gaps (stalls of {names} ms, {runs} runs each, and every unstalled "
            f"session); dispatch lateness p50 {fmt(median(late.get('p50')), 'ms')}, "
            f"p99 {fmt(median(late.get('p99')), 'ms')}"
        )
    parts = []
    for path, value in flatten(core):
        if any(word in path for word in ("gap", "lateness", "stop")) and len(parts) < 4:
            parts.append(f"{path} = {value:g}")
    return "; ".join(parts) or "see the gateway core section"


def core_verdict(core: dict[str, Any]) -> str:
    gaps = dig(core, "scheduler", "output_gaps")
    if isinstance(gaps, int):
        return verdict(gaps == 0)
    for path, value in flatten(core):
        if path.endswith(("max_gap_ms", "gaps", "gap_count", "output_gaps")):
            return verdict(value == 0)
    return "see below"


def flatten(data: Any, prefix: str = "") -> list[tuple[str, float]]:
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


# --- what limits a missed target -----------------------------------------------------------------


def limits_stop(e2e: dict[str, Any]) -> str:
    http = median(dig(e2e, "stop", "http_answer_ms", "p50"))
    off = median(dig(e2e, "stop", "output_off_ms", "p50"))
    off99 = median(dig(e2e, "stop", "output_off_ms", "p99"))
    ws50 = median(dig(e2e, "stop_ws", "output_off_ms", "p50"))
    ws99 = median(dig(e2e, "stop_ws", "output_off_ms", "p99"))
    text = (
        f"Over REST the STOP reaches the device {fmt(off, 'ms')} (p50) / {fmt(off99, 'ms')} (p99) "
        f"after the request is sent, and the HTTP answer comes at {fmt(http, 'ms')} (p50). The "
        f"same stop sent on an already authenticated WebSocket turns output off in "
        f"{fmt(ws50, 'ms')} (p50) / {fmt(ws99, 'ms')} (p99): the session layer and the radio are "
        "not what is slow. The difference is the REST request before the route runs: the "
        "middleware stack and, above all, the bearer-token check, a round trip through the "
        "storage thread (a SQLite read, plus a commit when last_used_at is due) on every "
        "request. Authenticating from an in-memory cache of token hashes (invalidated on revoke) "
        "and recording last_used_at off the request path would remove most of it."
    )
    profile = e2e.get("stop_profile")
    if profile:
        text += (
            "\n\nThe request path during stops (cProfile of the hub's event-loop thread, "
            "cumulative per stop; waits for the storage thread are not in it, and calls count "
            "coroutine resumptions):\n\n" + code(profile)
        )
    return text


def limits_telemetry(e2e: dict[str, Any]) -> str:
    t = e2e.get("telemetry", {})
    text = (
        f"BLE leg p99 {fmt(median(dig(t, 'ble_leg_ms', 'p99')), 'ms')}, gateway leg p99 "
        f"{fmt(median(dig(t, 'gateway_leg_ms', 'p99')), 'ms')}, hub CPU "
        f"{fmt(median(t.get('hub_cpu_pct')), '%')} of a core; {loop_and_gc(e2e)}."
    )
    if e2e.get("profile"):
        text += "\n\nProfile of the hub under this load (cProfile, own time):\n\n" + code(
            e2e["profile"]
        )
    return text


def limits_rss(foot: dict[str, Any]) -> str:
    empty = dig(foot, "hci", "no_devices", "rss_mib")
    text = (
        f"The gateway with no device at all already holds {fmt(empty, 'MiB')}: the cost is the "
        "imported stack, not the devices."
    )
    imports = foot.get("import_rss_mib")
    if imports:
        text += " Resident memory after importing, cumulatively:\n\n" + code(
            [f"{name:<28} {mib:6.1f} MiB" for name, mib in imports.items()]
        )
    return text


def limits_idle(foot: dict[str, Any]) -> str:
    empty = median(dig(foot, "hci", "no_devices", "idle_cpu_pct"))
    return (
        f"With no device the gateway idles at {fmt(empty, '%')}; the rest is the 7 connected "
        "devices' telemetry, which the gateway subscribes to at 50 Hz whether or not a session "
        "runs or anyone watches (350 notifications/s to decode, number and ring-buffer). "
        "Lowering the telemetry rate while a device has no session and no subscriber would "
        "bring it down."
    )


GC_ADVICE = (
    "Full (generation 2) collections walk a heap that holds every device's 3,000-frame replay "
    "ring (50 devices: 150,000 frames, each with its sample and cached JSON). Keeping the ring as "
    "bytes, or gc.freeze() after start-up with a higher generation-2 threshold, are the "
    "candidate fixes; a stall that long also delays a STOP (S3) and the scheduler."
)


def limits_capacity(cap: dict[str, Any]) -> str:
    lines, gc_bound = [], False
    for setup, steps in (cap.get("steps") or {}).items():
        failed = next((s for s in steps if not s.get("carried")), None)
        if failed is None:
            continue
        if "error" in failed:
            lines.append(f"{setup} at {failed['devices']} devices: {failed['error']}")
            continue
        cpu = median(failed["hub_cpu_pct"]) or 0.0
        lag_max = (failed.get("hub_loop_lag_ms") or {}).get("max") or 0.0
        gc_max = ((failed.get("hub_gc_pauses") or {}).get("gen2") or {}).get("max_ms") or 0.0
        sim_lag_max = (failed.get("sim_loop_lag_ms") or {}).get("max") or 0.0
        if cpu >= 80:
            cause = f"the gateway process is CPU-bound ({fmt(cpu, '%')} of a core)"
            if setup == "in-process":
                cause += ", the simulators sharing its core"
        elif sim_lag_max > lag_max:
            cause = (
                f"the simulator process ({fmt(median(failed['sim_cpu_pct']), '%')} of a core) "
                f"stalls for up to {fmt(sim_lag_max, 'ms')} and then sends in bursts, which the "
                f"gateway ({fmt(cpu, '%')} CPU, loop stalls up to {fmt(lag_max, 'ms')}) works "
                "through late: on 2 cores the simulator, not the gateway, runs out first"
            )
        elif gc_max and gc_max >= lag_max / 2:
            gc_bound = True
            cause = (
                f"the event loop stalls for up to {fmt(lag_max, 'ms')} at {fmt(cpu, '%')} CPU, "
                f"in line with full GC pauses (longest {fmt(gc_max, 'ms')})"
            )
        else:
            cause = (
                f"the event loop stalls for up to {fmt(lag_max, 'ms')} at {fmt(cpu, '%')} CPU "
                "with no GC pause to match: profile the hub at this step"
            )
        lines.append(
            f"{setup} at {failed['devices']} devices: {cause}. Lost {failed['lost_at_phones']} "
            f"at phones and {failed['device_frames_lost']} at the hub, "
            f"{failed['sessions_running']} sessions running, e2e p99 "
            f"{fmt(median(failed['e2e_ms']['p99']), 'ms')}"
            + (
                f", sim process CPU {fmt(median(failed['sim_cpu_pct']), '%')}"
                if failed.get("sim_cpu_pct")
                else ""
            )
            + f"; {loop_and_gc(failed)}."
        )
    text = "\n".join(f"- {line}" for line in lines)
    return text + ("\n\n" + GC_ADVICE if gc_bound else "")


def loop_and_gc(step: dict[str, Any]) -> str:
    lag = step.get("hub_loop_lag_ms") or {}
    gc = (step.get("hub_gc_pauses") or {}).get("gen2") or {}
    return (
        f"hub event-loop lag p99 {fmt(lag.get('p99'), 'ms')}, max {fmt(lag.get('max'), 'ms')}; "
        f"full GC pauses: {gc.get('count', 0)}, longest {fmt(gc.get('max_ms'), 'ms')}"
    )


def code(lines: list[str]) -> str:
    return "```\n" + "\n".join(lines) + "\n```"


# --- the report ----------------------------------------------------------------------------------


def table(header: list[str], body: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in body)])


def load(results: dict[str, Any], when: str) -> str:
    values = results.get(f"load_average_{when}")
    return " / ".join(f"{v:g}" for v in values) if values else "not recorded"


def render(results: dict[str, Any]) -> str:
    """docs/benchmarks.md from one run's results."""
    m = results.get("machine", {})
    versions = m.get("versions", {})
    out = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` (bench/run.py) at {results.get('generated_at', '?')} in "
        f"{fmt(results.get('elapsed_s'), 's')}; do not edit by hand. The raw figures are in "
        "bench/results/latest.json; how each is measured is in bench/README.md. Every figure is "
        "compared with a floor taken in the same run on the same machine: read the ratios, not "
        "the absolute numbers.",
        "",
    ]
    if results.get("quick"):
        out += ["**Quick run (tiny sizes, one repeat): not a measurement.**", ""]
    out += [
        "## Machine",
        "",
        table(
            ["CPU", "cores", "RAM", "OS", "Python", *versions.keys()],
            [
                [
                    str(m.get("cpu")),
                    str(m.get("cores")),
                    f"{m.get('ram_gib')} GiB",
                    str(m.get("os")),
                    str(m.get("python")),
                    *(str(v) for v in versions.values()),
                ]
            ],
        ),
        "",
        f"Load average (1, 5, 15 min) when the run began: {load(results, 'start')}; when it "
        f"ended: {load(results, 'end')}. The benchmarks use both cores themselves; anything else "
        "running on the machine shows up as spread between repeats and between runs.",
        "",
        '## Targets (BRIEF, "Numbers the product aims at")',
        "",
        table(
            ["target", "aim", "measured", "verdict"],
            [[t.name, t.aim, t.measured, t.verdict] for t in targets(results)],
        ),
        "",
        "## Every figure, next to its floor",
        "",
        "Value and floor are medians over repeats; the variance column is half the range across "
        "repeats as a % of the median, then the range and the number of repeats.",
        "",
    ]
    groups: dict[str, list[Row]] = {}
    for row in rows(results):
        groups.setdefault(row.group, []).append(row)
    for group, members in groups.items():
        out += [
            f"### {group}",
            "",
            table(
                ["figure", "value", "floor", "ratio", "variance across repeats"],
                [r.cells() for r in members],
            ),
            "",
        ]
    core = dig(results, "benches", "gateway_core")
    if (
        core
        and "not_measured" not in core
        and not isinstance(dig(core, "scheduler", "output_gaps"), int)
    ):
        out += [
            "### gateway core (bench/gateway_core.py)",
            "",
            table(["figure", "value"], [[p, fmt(v)] for p, v in flatten(core)[:40]]),
            "",
        ]
    missed = [t for t in targets(results) if t.verdict == "MISSED"]
    if missed:
        out += ["## What limits the missed targets", ""]
        for target in missed:
            out += [
                f"### {target.name}: {target.measured} (aim: {target.aim})",
                "",
                target.limits or "No diagnosis recorded.",
                "",
            ]
    skipped = [
        (name, bench["not_measured"])
        for name, bench in results.get("benches", {}).items()
        if isinstance(bench, dict) and "not_measured" in bench
    ]
    for system, why in (dig(results, "benches", "ws_fanout", "systems_not_measured") or {}).items():
        skipped.append((f"ws_fanout {system}", why))
    if skipped:
        out += ["## Not measured", ""]
        out += [f"- {name}: not measured: {why}" for name, why in skipped]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


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
