"""Which figures the report lists, next to which floor: a table, read against one run's results.

Each ``Figure`` says where its value sits in ``results["benches"]`` (a path, ``/``-separated, a
number indexes a list), its unit and where its floor sits; ``{q}``, ``{where}`` and the like are
filled in by ``each``. A figure whose ``when`` paths hold nothing in the results (a benchmark not
run, or an older result) is left out. The few rows whose names come from the results themselves
(fan-out systems, stall lengths, capacity steps) are built by the functions after the table.
This module only says what to show; formatting is bench/harness/report.py's, the document is
bench/document.py's. The table is data and longer than a function would be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from harness.report import Row, dig

Q = ("p50", "p99")
WHERE = (("in_process", "in process"), ("cross_process", "across processes"))
IN_FLOOR = "floors/in_process"
CORE = "gateway core (no HTTP)"


@dataclass(frozen=True)
class Figure:
    """One row of the report: the group, the name, where value and floor sit, and when."""

    group: str
    name: str
    path: str
    unit: str
    floor: str = ""
    floor_name: str = ""
    when: tuple[str, ...] = ()

    def fill(self, **values: str) -> Figure:
        def text(s: str) -> str:
            return s.format(**values)

        return replace(
            self,
            name=text(self.name),
            path=text(self.path),
            floor=text(self.floor),
            floor_name=text(self.floor_name),
            when=tuple(text(w) for w in self.when),
        )

    def row(self, benches: dict[str, Any]) -> Row | None:
        if not all(dig(benches, *w.split("/")) for w in self.when):
            return None
        floor = dig(benches, *self.floor.split("/")) if self.floor else None
        value = dig(benches, *self.path.split("/"))
        return Row(self.group, self.name, value, self.unit, floor, self.floor_name)


def each(figure: Figure, key: str, values: Iterable[str]) -> list[Figure]:
    """``figure`` once per value of ``{key}``."""
    return [figure.fill(**{key: value}) for value in values]


def floors_part(where: str, label: str) -> list[Figure]:
    part = f"floors/{where}"
    when = (part,)
    # fmt: off
    return [
        *each(Figure("floors", f"notification latency {{q}}, {label}",
                     f"{part}/notify_latency_ms/{{q}}", "ms", when=when), "q", Q),
        *each(Figure("floors", f"write-with-response round trip {{q}}, {label}",
                     f"{part}/write_rtt_ms/{{q}}", "ms", when=when), "q", Q),
        Figure("floors", f"notification burst, {label}", f"{part}/burst_per_s", "/s", when=when),
    ]
    # fmt: on


E2E = ("telemetry_e2e/telemetry",)
STOP = ("telemetry_e2e/stop",)
STOP_WS = ("telemetry_e2e/stop_ws",)
CORE_STOP = ("gateway_core/stop/request_to_output_off_ms",)
SQLITE = "storage_ingest/floor_sqlite3_rows"
PG = ("postgres_ingest/floor_psycopg_rows",)
SIM7 = ("footprint/sim7",)
HCI = ("footprint/hci",)
PINNED = ("footprint/hci_pinned",)
E2E_PINNED = ("telemetry_e2e/telemetry_pinned",)
MQTT = ("mqtt_bridge/latency",)
MQTT_CPU = ("mqtt_bridge/cpu",)
RADIOS = ("radios/steady",)
WEB = ("webapp/render",)

# fmt: off
TABLE: tuple[Figure | Callable[[dict[str, Any]], list[Figure]], ...] = (
    *(figure for where, label in WHERE for figure in floors_part(where, label)),
    *each(Figure("telemetry", "device -> phone {q} (7 dev x 50 Hz, 20 phones)",
                 "telemetry_e2e/telemetry/e2e_ms/{q}", "ms",
                 IN_FLOOR + "/notify_latency_ms/{q}", "notify {q}", E2E), "q", Q),
    Figure("telemetry", "BLE leg p99 (device -> gateway receive)",
           "telemetry_e2e/telemetry/ble_leg_ms/p99", "ms",
           IN_FLOOR + "/notify_latency_ms/p99", "notify p99", E2E),
    Figure("telemetry", "gateway leg p99 (receive -> phone read)",
           "telemetry_e2e/telemetry/gateway_leg_ms/p99", "ms", when=E2E),
    Figure("telemetry", "hub CPU under that load", "telemetry_e2e/telemetry/hub_cpu_pct", "%",
           when=E2E),
    Figure("telemetry", "hub RSS under that load", "telemetry_e2e/telemetry/hub_rss_mib", "MiB",
           when=E2E),
    *each(Figure("telemetry", "pinned to one core: device -> phone {q}",
                 "telemetry_e2e/telemetry_pinned/e2e_ms/{q}", "ms",
                 "telemetry_e2e/telemetry/e2e_ms/{q}", "unpinned", E2E_PINNED), "q", Q),
    Figure("telemetry", "pinned to one core: hub CPU", "telemetry_e2e/telemetry_pinned/hub_cpu_pct",
           "%", "telemetry_e2e/telemetry/hub_cpu_pct", "unpinned", E2E_PINNED),
    Figure("telemetry", "pinned to one core: frames lost", "telemetry_e2e/telemetry_pinned/lost",
           "", when=E2E_PINNED),
    *each(Figure("stop", "REST stop -> device output off {q} (raw HTTP client)",
                 "telemetry_e2e/stop/output_off_ms/{q}", "ms",
                 IN_FLOOR + "/write_rtt_ms/{q}", "write RTT {q}", STOP), "q", Q),
    Figure("stop", "REST stop -> HTTP answer p99 (raw HTTP client)",
           "telemetry_e2e/stop/http_answer_ms/p99", "ms",
           IN_FLOOR + "/write_rtt_ms/p99", "write RTT p99", STOP),
    *each(Figure("stop", "REST stop -> device output off {q} (httpx client)",
                 "telemetry_e2e/stop_httpx/output_off_ms/{q}", "ms",
                 "telemetry_e2e/stop/output_off_ms/{q}", "raw client {q}",
                 ("telemetry_e2e/stop_httpx",)), "q", Q),
    *each(Figure("stop", "WebSocket stop -> device output off {q}",
                 "telemetry_e2e/stop_ws/output_off_ms/{q}", "ms",
                 IN_FLOOR + "/write_rtt_ms/{q}", "write RTT {q}", STOP_WS), "q", Q),
    *each(Figure(CORE, "SessionManager.stop -> output off {q}",
                 "gateway_core/stop/request_to_output_off_ms/{q}", "ms",
                 "gateway_core/floor/isolated_write_round_trip_ms/{q}", "isolated write {q}",
                 CORE_STOP), "q", Q),
    Figure(CORE, "SessionManager.stop -> STOP confirmed p99",
           "gateway_core/stop/request_to_confirmed_ms/p99", "ms",
           "gateway_core/floor/isolated_write_round_trip_ms/p99", "isolated write p99",
           CORE_STOP),
    *each(Figure(CORE, "scheduler dispatch lateness {q}",
                 "gateway_core/scheduler/dispatch_lateness_ms/{q}", "ms", when=CORE_STOP),
          "q", Q),
    lambda benches: stall_figures(benches),
    lambda benches: fanout_figures(benches),
    *(Figure("storage", f"SQLite ingest, {label}", f"storage_ingest/{key}/samples_per_s",
             "samples/s", SQLITE + "/samples_per_s", "sqlite3 executemany",
             (SQLITE, f"storage_ingest/{key}"))
      for key, label in (("writer_1_session", "StorageWriter, 1 session"),
                         ("writer_50_sessions", "StorageWriter, 50 sessions"),
                         ("core_rows", "SQLAlchemy Core rows"))),
    *(Figure("storage", f"PostgreSQL ingest, StorageWriter, {label}", f"postgres_ingest/{key}",
             "samples/s", "postgres_ingest/floor_psycopg_rows", "psycopg executemany", PG)
      for key, label in (("writer_1_session", "1 session"),
                         ("writer_50_sessions", "50 sessions"))),
    Figure("web page", "first screen on the wire (Pair, not paired)",
           "webapp/weight/pair_screen/wire_bytes", "B", when=WEB),
    Figure("web page", "first screen on the wire (Devices, paired)",
           "webapp/weight/devices_screen/wire_bytes", "B", when=WEB),
    Figure("web page", "first contentful paint", "webapp/render/first_contentful_paint_ms",
           "ms", "webapp/render/floor_first_paint_ms", "bare page first paint", WEB),
    Figure("web page", "Devices screen drawn", "webapp/render/devices_drawn_ms", "ms",
           "webapp/render/floor_first_paint_ms", "bare page first paint", WEB),
    Figure("web page", "Live screen: first reading drawn", "webapp/live/first_reading_ms",
           "ms", "webapp/render/floor_first_paint_ms", "bare page first paint", WEB),
    Figure("web page", "main thread per second, Live at 50 Hz",
           "webapp/main_thread/live_ms_per_s", "ms/s", "webapp/main_thread/floor_ms_per_s",
           "bare WebSocket client", WEB),
    Figure("web page", "frames received per second, Live",
           "webapp/main_thread/live_frames_per_s", "/s", when=WEB),
    Figure("footprint", "time to ready (sim:7, new database: migrations)",
           "footprint/sim7/ready_s", "s", when=SIM7),
    Figure("footprint", "time to ready (sim:7, restart on a migrated database)",
           "footprint/sim7/ready_restart_s", "s", when=("footprint/sim7/ready_restart_s",)),
    Figure("footprint", "time to 7 devices bonded (sim:7)", "footprint/sim7/devices_bonded_s",
           "s", when=SIM7),
    Figure("footprint", "RSS, sim:7 (sims in process)", "footprint/sim7/rss_mib", "MiB",
           when=SIM7),
    Figure("footprint", "idle CPU, sim:7 (sims in process)", "footprint/sim7/idle_cpu_pct", "%",
           when=SIM7),
    Figure("footprint", "RSS, gateway alone, no device", "footprint/hci/no_devices/rss_mib",
           "MiB", when=HCI),
    Figure("footprint", "RSS, gateway alone, 7 devices", "footprint/hci/seven_devices/rss_mib",
           "MiB", when=HCI),
    Figure("footprint", "idle CPU, gateway alone, no device",
           "footprint/hci/no_devices/idle_cpu_pct", "%", when=HCI),
    Figure("footprint", "idle CPU, gateway alone, 7 devices",
           "footprint/hci/seven_devices/idle_cpu_pct", "%", when=HCI),
    Figure("footprint", "RSS, gateway alone, 7 sessions to 20 phones",
           "footprint/hci/streaming/rss_mib", "MiB", when=("footprint/hci/streaming",)),
    Figure("footprint", "peak RSS, gateway alone, 7 sessions to 20 phones",
           "footprint/hci/streaming/peak_rss_mib", "MiB", when=("footprint/hci/streaming",)),
    Figure("footprint", "CPU, gateway alone, 7 sessions to 20 phones",
           "footprint/hci/streaming/cpu_pct", "%", when=("footprint/hci/streaming",)),
    Figure("footprint", "pinned to one core: RSS, 7 devices",
           "footprint/hci_pinned/seven_devices/rss_mib", "MiB",
           "footprint/hci/seven_devices/rss_mib", "unpinned", PINNED),
    Figure("footprint", "pinned to one core: idle CPU, 7 devices",
           "footprint/hci_pinned/seven_devices/idle_cpu_pct", "%",
           "footprint/hci/seven_devices/idle_cpu_pct", "unpinned", PINNED),
    Figure("footprint", "pinned to one core: RSS, 7 sessions to 20 phones",
           "footprint/hci_pinned/streaming/rss_mib", "MiB",
           "footprint/hci/streaming/rss_mib", "unpinned", PINNED),
    Figure("footprint", "pinned to one core: CPU, 7 sessions to 20 phones",
           "footprint/hci_pinned/streaming/cpu_pct", "%",
           "footprint/hci/streaming/cpu_pct", "unpinned", PINNED),
    Figure("footprint", "pinned to one core: time to ready (gateway alone)",
           "footprint/hci_pinned/ready_s", "s", "footprint/hci/ready_s", "unpinned", PINNED),
    Figure("footprint", "idle CPU per simulated device, sim:7 / 7 (gateway included)",
           "footprint/sim7/idle_cpu_pct_per_device", "%", when=SIM7),
    lambda benches: capacity_figures(benches),
    Figure("radios", "3 radios x 7 devices at 50 Hz: e2e p99", "radios/steady/e2e_ms/p99", "ms",
           when=RADIOS),
    Figure("radios", "3 radios x 7 devices at 50 Hz: frames lost at phones",
           "radios/steady/lost_at_phones", "", when=RADIOS),
    Figure("radios", "3 radios x 7 devices at 50 Hz: gateway CPU", "radios/steady/hub_cpu_pct",
           "%", when=RADIOS),
    Figure("radios", "a radio dropped: its 7 sessions all running again on other radios",
           "radios/failover/all_running_s", "s", when=("radios/failover",)),
    Figure("radios", "a radio dropped: its first session running again",
           "radios/failover/first_running_s", "s", when=("radios/failover",)),
    *each(Figure("mqtt", "device state change -> MQTT message {q}",
                 "mqtt_bridge/latency/state_change_ms/{q}", "ms",
                 "mqtt_bridge/latency/bare_publish_ms/{q}", "bare publish {q}", MQTT), "q", Q),
    *(Figure("mqtt", f"gateway CPU, 7 devices in session, MQTT on ({hz} telemetry)",
             f"mqtt_bridge/cpu/mqtt_on_{key}_pct", "%", "mqtt_bridge/cpu/mqtt_off_pct",
             "MQTT off", MQTT_CPU)
      for key, hz in (("1hz", "1 Hz"), ("10hz", "10 Hz"))),
)
# fmt: on


def stall_figures(benches: dict[str, Any]) -> list[Figure]:
    """Output gaps through each radio stall of bench/gateway_core.py."""
    if not dig(benches, *CORE_STOP[0].split("/")):
        return []
    stalls = dig(benches, "gateway_core", "scheduler", "stalls") or {}
    return [
        Figure(
            CORE,
            f"output gaps through a {key.removeprefix('stall_')} radio stall "
            f"({stall['runs']} runs; lease expiries {stall['lease_expiries']})",
            f"gateway_core/scheduler/stalls/{key}/output_gaps",
            "",
        )
        for key, stall in stalls.items()
    ]


FANOUT = (
    ("gateway", "mcgw /api/v1/ws"),
    ("bare", "bare uvicorn broadcast"),
    ("mosquitto", "Mosquitto relay"),
)


def fanout_figures(benches: dict[str, Any]) -> list[Figure]:
    """Each fan-out system against the bare broadcast (which has no floor of its own)."""
    clients = dig(benches, "ws_fanout", "config", "clients")
    out = []
    for system, label in FANOUT:
        base = f"ws_fanout/systems/{system}"
        first = dig(benches, *base.split("/"), "steps", "0")
        if first is None:
            continue
        at = f"{first['offered_per_s']:,} frames/s"
        floor = "ws_fanout/systems/bare/{}" if system != "bare" else ""
        for name, path, unit in (
            (f"sustained frames/s to {clients} clients", "sustained_capacity_per_s", "/s"),
            ("most frames/s delivered (saturation)", "max_delivered_per_s", "/s"),
            (f"p99 at {at}", "steps/0/p99_ms", "ms"),
            (f"server CPU at {at}", "steps/0/server_cpu_pct", "%"),
            (f"load generators' busiest process at {at}", "steps/0/generator_cpu_pct_max", "%"),
        ):
            floor_path = floor.format(path) if floor and "generator" not in path else ""
            out.append(
                Figure("fan-out", f"{label}: {name}", f"{base}/{path}", unit, floor_path, "bare")
            )
    return out


def capacity_figures(benches: dict[str, Any]) -> list[Figure]:
    """e2e p99 and hub CPU of every capacity step that was measured."""
    out = []
    for setup, steps in (dig(benches, "capacity", "steps") or {}).items():
        for index, step in enumerate(steps):
            if "e2e_ms" not in step:
                continue
            path = f"capacity/steps/{setup}/{index}"
            name = f"{setup}, {step['devices']} devices"
            out += [
                Figure("capacity", f"{name}: e2e p99", f"{path}/e2e_ms/p99", "ms"),
                Figure("capacity", f"{name}: hub CPU", f"{path}/hub_cpu_pct", "%"),
            ]
    return out


def rows(results: dict[str, Any]) -> list[Row]:
    """Every row of "Every figure, next to its floor", in the table's order."""
    benches = results.get("benches", {})
    out = []
    for entry in TABLE:
        for figure in entry(benches) if callable(entry) else [entry]:
            row = figure.row(benches)
            if row is not None:
                out.append(row)
    return out
