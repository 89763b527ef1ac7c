"""The benchmark code runs: floors with tiny sizes, the report writer on a synthetic result, and
the pure helpers that join and summarise measurements. Structure only, never timing."""

from __future__ import annotations

import copy
import sys
from array import array
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import floors  # noqa: E402
import mqtt_bridge  # noqa: E402
import radios  # noqa: E402
import run as bench_run  # noqa: E402
import ws_fanout  # noqa: E402
from harness import joins, machine, phones, processes, stats, wire  # noqa: E402

FIGURE_KEYS = {"median", "min", "max", "spread_pct", "runs"}


def figure(value: float, runs: int = 3) -> dict[str, Any]:
    return stats.summarize([value * (1 + i / 10) for i in range(runs)])


def test_floors_measure_with_tiny_sizes_in_and_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(processes.HELPER_LOG_ENV, str(tmp_path / "helpers.log"))
    try:
        result = floors.measure(repeats=1, notify_n=20, rate=1000, write_n=10, burst_n=20)
    finally:
        processes.close_helper_log()
    assert result["bench"] == "floors"
    assert result["config"]["repeats"] == 1
    for where in ("in_process", "cross_process"):
        part = result[where]
        for metric in ("notify_latency_ms", "write_rtt_ms"):
            assert set(part[metric]) == {"p50", "p99", "max"}
            for value in part[metric].values():
                assert set(value) == FIGURE_KEYS
                assert len(value["runs"]) == 1
        assert set(part["burst_per_s"]) == FIGURE_KEYS
        assert isinstance(part["notify_lost"], int)
        assert isinstance(part["burst_lost"], int)


def test_summaries_and_percentiles() -> None:
    assert stats.percentile([], 50) != stats.percentile([], 50)  # NaN
    assert stats.percentile([1.0, 2.0, 3.0], 50) == 2.0
    summary = stats.summarize([1.0, 2.0, 4.0])
    assert summary["median"] == 2.0
    assert summary["spread_pct"] == 150.0
    assert stats.summarize([])["median"] is None
    assert "spread" in stats.spread_line("x", summary, "ms")
    assert set(machine.machine()) >= {"cpu", "cores", "python", "versions"}


def test_phone_records_join_with_what_devices_sent() -> None:
    records = phones.Records()
    for client in range(2):
        for frame, sent in ((1, 10.001), (2, 10.021)):
            message = {"device": "D", "seq": frame, "frame": frame, "received_at": sent}
            records.add(client, message, sent + 0.002)
    sends = {
        "D": (array("i", [1, 2, 3]), array("q", [10_000_000_000, 10_020_000_000, 10_040_000_000]))
    }
    window = joins.window_figures(records.dump(), sends, 9.0, 11.0, clients=2)
    assert window["expected"] == 6
    assert window["delivered"] == 4
    assert window["lost"] == 2
    assert set(window["e2e_ms"]) == {"n", "p50", "p90", "p99", "max"}


def test_fanout_step_figures_and_mqtt_framing() -> None:
    records = {
        "seq": array("q", [5, 6, 5, 6]),
        "sent": array("d", [1.0, 1.01] * 2),
        "read": array("d", [1.002, 1.012] * 2),
    }
    step = {"first_seq": 5, "last_seq": 7, "published": 3, "t0": 1.0, "t1": 1.03}
    figures = ws_fanout.step_figures(
        records, step, clients=2, rate=100.0, cpu_pct=10.0, generators_pct=[20.0]
    )
    assert figures["lost"] == 2
    assert figures["sustained"] is False
    packet = wire.mqtt_publish_packet("t", b"x" * 200)
    assert packet[0] == 0x30
    assert packet[1] & 0x80  # a two-byte remaining length


def synthetic_results() -> dict[str, Any]:
    steps = [
        {
            "offered_per_s": rate * 100,
            "offered_per_client_hz": rate,
            "delivered_per_s": figure(rate * 99.0),
            "p50_ms": figure(1.0),
            "p99_ms": figure(3.0),
            "lost": [0, 0, 0],
            "sustained": [True] * 3,
            "server_cpu_pct": figure(20.0),
        }
        for rate in (100, 200)
    ]
    system = {
        "steps": steps,
        "sustained_capacity_per_s": figure(20000),
        "max_delivered_per_s": figure(30000),
    }
    latency = {q: figure(v) for q, v in (("p50", 0.4), ("p99", 0.9), ("max", 3.0))}
    floor_part = {
        "notify_latency_ms": latency,
        "write_rtt_ms": latency,
        "notify_lost": 0,
        "burst_per_s": figure(3000),
        "burst_lost": 0,
    }
    capacity_step = {
        "setup": "sim-process",
        "devices": 50,
        "carried": False,
        "lost_at_phones": 3,
        "device_frames_lost": 0,
        "sessions_running": 50,
        "e2e_ms": latency,
        "hub_cpu_pct": figure(60.0),
        "sim_cpu_pct": figure(80.0),
        "hub_loop_lag_ms": {"p99": 50.0},
        "hub_gc_pauses": {},
    }
    return {
        "generated_at": "2026-01-01T00:00:00+00:00",
        "elapsed_s": 400.0,
        "machine": machine.machine(),
        "benches": {
            "floors": {"in_process": floor_part, "cross_process": floor_part},
            "storage_ingest": {
                "floor_sqlite3_rows": {"samples_per_s": 400000},
                "writer_1_session": {"samples_per_s": 200000},
                "writer_50_sessions": {"samples_per_s": 700000},
            },
            "postgres_ingest": {
                "floor_psycopg_rows": figure(50000),
                "writer_1_session": figure(40000),
                "writer_50_sessions": figure(90000),
            },
            "gateway_core": {"not_measured": "bench/gateway_core.py does not exist yet"},
            "telemetry_e2e": {
                "telemetry": {
                    "e2e_ms": latency,
                    "ble_leg_ms": latency,
                    "gateway_leg_ms": {q: figure(9.0) for q in ("p50", "p99", "max")},
                    "hub_cpu_pct": figure(40.0),
                    "hub_rss_mib": figure(120.0),
                    "lost": 0,
                },
                "stop": {
                    "output_off_ms": {"p50": figure(8.0), "p99": figure(15.0)},
                    "http_answer_ms": {"p50": figure(10.0), "p99": figure(20.0)},
                },
                "stop_ws": {"output_off_ms": {"p50": figure(2.0), "p99": figure(4.0)}},
                "profile": ["1.0 % own  somewhere"],
                "stop_profile": ["2.00 ms per stop  somewhere"],
            },
            "ws_fanout": {
                "config": {"clients": 100},
                "systems": {"bare": system, "gateway": copy.deepcopy(system)},
            },
            "capacity": {
                "capacity": {"in-process": 14, "sim-process": 28},
                "steps": {"sim-process": [capacity_step]},
            },
            "radios": {
                "config": {"devices": 21},
                "steady": capacity_step | {"devices": 21, "sessions_running": 21},
                "failover": {
                    "devices": 7,
                    "sessions_running_again": 7,
                    "all_running_s": 0.4,
                    "first_running_s": 0.2,
                    "moved": 7,
                    "ended_on": {},
                    "per_device": {},
                },
            },
            "footprint": {
                "sim7": {
                    "ready_s": figure(1.8),
                    "devices_bonded_s": figure(2.1),
                    "rss_mib": figure(120.0),
                    "idle_cpu_pct": figure(20.0),
                },
                "hci": {
                    "no_devices": {"rss_mib": 110.0, "idle_cpu_pct": figure(0.5)},
                    "seven_devices": {"rss_mib": 120.0, "idle_cpu_pct": figure(8.0)},
                },
                "import_rss_mib": {"python": 10.0, "+ bumble": 90.0},
            },
        },
    }


def test_report_on_a_synthetic_result() -> None:
    doc = bench_run.render(synthetic_results())
    for heading in (
        "# Benchmarks",
        "## Machine",
        "## Targets",
        "## Every figure",
        "## What limits the missed targets",
        "## Not measured",
    ):
        assert heading in doc
    assert "not measured: bench/gateway_core.py does not exist yet" in doc
    assert "MISSED" in doc
    assert "MET" in doc
    verdicts = {t.name: t.verdict for t in bench_run.targets(synthetic_results())}
    assert verdicts["Stop"] == "MISSED"
    assert verdicts["Capacity"] == "MISSED"
    assert verdicts["Radio failover"] == "MISSED"  # 3 frames lost at the phones
    assert "a radio dropped: its 7 sessions all running again" in doc
    assert verdicts["Scheduler"].startswith("not measured")


@pytest.mark.parametrize("drop", ["floors", "telemetry_e2e", "footprint", "capacity", "radios"])
def test_report_survives_a_missing_benchmark(drop: str) -> None:
    results = synthetic_results()
    del results["benches"][drop]
    doc = bench_run.render(results)
    assert f"{drop} was not run" in doc
    assert bench_run.render({"benches": {}}).startswith("# Benchmarks")


def bench_imports() -> dict[str, set[str]]:
    """bench module -> the bench modules it imports (harness modules as ``harness.x``)."""
    import ast

    files = {
        str(path.relative_to(BENCH).with_suffix("")).replace("/", "."): path
        for path in BENCH.rglob("*.py")
    }
    names = {name.removesuffix(".__init__") for name in files}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in names}
        graph[name.removesuffix(".__init__")] = found - {name.removesuffix(".__init__")}
    return graph


def test_bench_imports_have_no_cycle_and_the_harness_imports_no_benchmark() -> None:
    graph = bench_imports()
    assert "harness.processes" in graph
    assert "telemetry_e2e" in graph
    for name, imported in graph.items():
        if name.startswith("harness"):
            assert all(i.startswith("harness") for i in imported), (name, imported)
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for imported in graph.get(name, ()):
            visit(imported, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_mqtt_state_changes_join_with_the_messages_that_show_them() -> None:
    topic = "bench/hub/device/d/state"
    lines = [
        f"1000000\t{topic}\t" + '{"session": {"state": "running"}}',
        f"3000000\t{topic}\t" + '{"session": {"state": "running"}}',
        f"4000000\t{topic}\t" + '{"session": {"state": "paused"}}',
        "5000000\tbench/floor\t4500000 xxxx",
        f"9000000\t{topic}\t" + '{"session": {"state": "running"}}',
    ]
    changes = [(2_000_000, "running"), (3_500_000, "paused"), (8_000_000, "running")]
    change_ms, floor_ms = mqtt_bridge.join(changes, [4_500_000, 7_000_000], lines, topic)
    assert change_ms == [1.0, 0.5, 1.0]
    assert floor_ms == [0.5]  # the second floor message never arrived: not counted


def test_radios_places_seven_per_radio_and_times_the_failover_from_hub_events() -> None:
    devices = [f"D{i:02}" for i in range(21)]
    plan = radios.signal_plan(devices, ["A", "B", "C"], 7)
    loudest = {d: max(("A", "B", "C"), key=lambda r: plan[d, r]) for d in devices}
    assert [list(loudest.values()).count(r) for r in ("A", "B", "C")] == [7, 7, 7]
    assert sorted(plan["D07", r] for r in ("A", "B", "C")) == [radios.FAR, radios.ALT, radios.NEAR]

    view = {
        "radios": [{"name": "radio0"}, {"name": "radio1"}],
        "devices": [{"radio": "radio0"}, {"radio": "radio0"}, {"radio": None}],
    }
    assert radios.placement(view) == {"radio0": 2, "radio1": 0}

    def event(kind: str, device: str, ts: float, **more: str) -> dict[str, Any]:
        return {"type": kind, "address": device, "ts": ts, **more}

    events = [
        event("session_state", "X", 99.0, state="running", reason=radios.RESUMED),  # before
        event("device_state", "X", 100.01, state="lost"),
        event("session_state", "X", 100.02, state="paused", reason="link lost; reconnecting"),
        event("device_state", "X", 100.3, state="bonded"),
        event("session_state", "X", 100.35, state="running", reason=radios.RESUMED),
        event("device_state", "Y", 100.01, state="lost"),
        event("session_state", "Y", 130.5, state="interrupted", reason="link lost for more"),
    ]
    figures = radios.failover_figures(events, ["X", "Y"], 100.0)
    assert figures["per_device"]["X"] == {
        "lost_s": 0.01, "bonded_s": 0.3, "running_s": 0.35, "ended": None,
    }  # fmt: skip
    assert figures["per_device"]["Y"]["ended"] == "interrupted"
    assert (figures["sessions_running_again"], figures["all_running_s"]) == (1, None)
    assert figures["first_running_s"] == 0.35
