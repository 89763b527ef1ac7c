"""Prometheus metrics at /metrics, from a registry that belongs to one app (no global registry).

Most figures are read from the gateway when Prometheus scrapes (a custom collector), so the hot
paths count nothing extra: devices by connection state, sessions by state, the telemetry hub's
frames in/out/dropped/lost, BLE link counters and reconnects, storage writer counters, each
radio's state, slots and counters (``Runtime.bluetooth_report``). The API
itself observes what only it sees: the stop latency (request to confirmed stop) and WebSocket
connections.

/metrics needs no token: it carries counts only, no addresses, names or ids (docs/api.md).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.health import LAG_BUCKETS_S, checks
from gateway.states import DeviceState, SessionState

if TYPE_CHECKING:
    from gateway.radio_report import BluetoothReport
    from gateway.runtime import Runtime

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STOP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DEVICE_STATES = (
    DeviceState.DISCOVERED,
    DeviceState.CONNECTING,
    DeviceState.CONNECTED,
    DeviceState.BONDED,
    DeviceState.LOST,
)
"""Device states shown (a forgotten device is no longer counted: the manager dropped it)."""


class _GatewayCollector(Collector):
    """Reads the runtime at scrape time."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        runtime = self._metrics.runtime
        if runtime is None:
            return
        yield from _states(runtime)
        yield from _telemetry(runtime)
        yield from _links(runtime)
        yield from _storage(runtime)
        yield from _health(runtime)
        yield from radio_metrics(runtime.bluetooth_report())
        yield from _mqtt(runtime)


def _states(runtime: Runtime) -> Iterator[Metric]:
    """Devices by connection state, sessions held in memory by state."""
    devices = GaugeMetricFamily("mcgw_devices", "Managed devices by state", labels=["state"])
    states = Counter(d.state for d in runtime.devices.all())
    for state in DEVICE_STATES:
        devices.add_metric([state], states.get(state, 0))
    yield devices

    sessions = GaugeMetricFamily(
        "mcgw_sessions", "Sessions held in memory by state", labels=["state"]
    )
    by_state = Counter(s.state for s in runtime.sessions.all())
    for session_state in SessionState:
        sessions.add_metric([session_state], by_state.get(session_state, 0))
    yield sessions


def _telemetry(runtime: Runtime) -> Iterator[Metric]:
    """The telemetry hub's counters."""
    hub = runtime.hub.counters
    for name, value, doc in (
        ("frames_in", hub.frames_in, "Telemetry frames published by devices"),
        ("frames_out", hub.frames_out, "Telemetry frames handed to subscribers"),
        ("frames_dropped", hub.frames_dropped, "Frames dropped for slow subscribers"),
        ("device_frames_lost", hub.device_frames_lost, "Frames missing from devices"),
        ("listener_errors", hub.listener_errors, "Telemetry listener failures"),
    ):
        yield CounterMetricFamily(f"mcgw_telemetry_{name}", doc, value=value)


def _links(runtime: Runtime) -> Iterator[Metric]:
    """BLE link counters over every device's links, reconnects, commands the guard refused."""
    devices = runtime.devices.all()
    links = [d.link_totals() for d in devices]
    for name, doc in (
        ("nacks", "Commands the devices refused"),
        ("ack_timeouts", "Commands with no ACK in time"),
        ("malformed_frames", "Malformed frames from devices"),
        ("commands_sent", "Commands sent to devices"),
    ):
        total = sum(getattr(c, name) for c in links)
        yield CounterMetricFamily(f"mcgw_ble_{name}", doc, value=total)
    reconnects = sum(d.reconnects for d in devices)
    yield CounterMetricFamily(
        "mcgw_ble_reconnects", "Links lost and re-established", value=reconnects
    )
    blocked = sum(d.supervisor.blocked for d in devices)
    yield CounterMetricFamily(
        "mcgw_safety_commands_blocked",
        "Commands refused by the safety supervisor",
        value=blocked,
    )


def _storage(runtime: Runtime) -> Iterator[Metric]:
    """The storage writer's figures, when storage is open."""
    writer = getattr(runtime, "writer", None)
    stats = getattr(writer, "stats", None)
    if stats is None:
        return
    yield GaugeMetricFamily(
        "mcgw_storage_buffered_samples",
        "Telemetry samples waiting",
        value=stats.buffered_samples,
    )
    yield CounterMetricFamily(
        "mcgw_storage_dropped_samples",
        "Telemetry samples not stored",
        value=stats.dropped_samples,
    )
    yield CounterMetricFamily(
        "mcgw_storage_failed_jobs", "Storage jobs that failed", value=stats.jobs_failed
    )
    yield GaugeMetricFamily(
        "mcgw_storage_records_pending",
        "Session records waiting for the database (kept in the journal)",
        value=stats.records_pending,
    )
    yield GaugeMetricFamily(
        "mcgw_storage_failing_seconds",
        "How long the database has refused writes (0 while it takes them)",
        value=0.0 if stats.failing_since is None else time.monotonic() - stats.failing_since,
    )


def _health(runtime: Runtime) -> Iterator[Metric]:
    """Readiness per part and event-loop stalls (gateway.health)."""
    ready = GaugeMetricFamily("mcgw_ready", "Readiness checks: 1 passes, 0 fails", labels=["check"])
    for check in checks(runtime):
        ready.add_metric([check.name], 1.0 if check.ok else 0.0)
    yield ready
    monitor = runtime.loop_monitor
    lag = HistogramMetricFamily(
        "mcgw_event_loop_lag_seconds",
        f"How late the event loop ran a {monitor.probe_s:g} s timer (stalls)",
        buckets=[
            (str(bound), float(total))
            for bound, total in zip(
                [*(f"{b:g}" for b in LAG_BUCKETS_S), "+Inf"],
                itertools.accumulate(monitor.buckets),
                strict=True,
            )
        ],
        sum_value=monitor.total_s,
    )
    yield lag
    yield GaugeMetricFamily(
        "mcgw_event_loop_lag_max_seconds",
        "The longest event-loop stall seen",
        value=monitor.max_lag_s,
    )


SIGNAL_BANDS = ((-60, "strong"), (-75, "fair"))
"""A signal above -60 dBm is strong, above -75 dBm fair, else weak (as the web page says)."""


def signal_band(dbm: int | None) -> str:
    """``strong``, ``fair``, ``weak``, or ``unknown`` when nothing was heard yet."""
    if dbm is None:
        return "unknown"
    for floor, band in SIGNAL_BANDS:
        if dbm > floor:
            return band
    return "weak"


def radio_metrics(report: BluetoothReport) -> Iterator[Metric]:
    """Per radio, labelled by its name (radio0, ...): state, slots, adverts, connect attempts
    and failures, reopens; its devices by signal band and its weakest signal. No device is
    named: per-device figures (addresses included) are GET /api/v1/radios, for admins."""
    up = GaugeMetricFamily(
        "mcgw_radio_up", "1 while the radio is up, 0 while down or reopening", labels=["radio"]
    )
    slots = GaugeMetricFamily("mcgw_radio_slots", "Connection slots configured", labels=["radio"])
    used = GaugeMetricFamily(
        "mcgw_radio_slots_used", "Slots held (connect attempt to disconnect)", labels=["radio"]
    )
    adverts = GaugeMetricFamily(
        "mcgw_radio_adverts_per_second", "Advertisements heard per second", labels=["radio"]
    )
    attempts = CounterMetricFamily(
        "mcgw_radio_connect_attempts", "Connect attempts through the radio", labels=["radio"]
    )
    failures = CounterMetricFamily(
        "mcgw_radio_connect_failures", "Connect attempts that failed", labels=["radio"]
    )
    reopens = CounterMetricFamily(
        "mcgw_radio_reopens", "Radio transports reopened after a loss", labels=["radio"]
    )
    for radio in report.radios:
        label = [radio.name]
        if radio.state != "unknown":  # BlueZ owns the adapter: its state is not known here
            up.add_metric(label, 1.0 if radio.state == "up" else 0.0)
        slots.add_metric(label, radio.slots)
        used.add_metric(label, radio.slots_used)
        adverts.add_metric(label, radio.adverts_per_s)
        attempts.add_metric(label, radio.connect_attempts)
        failures.add_metric(label, radio.connect_failures)
        reopens.add_metric(label, radio.reopens)
    yield from (up, slots, used, adverts, attempts, failures, reopens)
    yield from _radio_devices(report)


def _radio_devices(report: BluetoothReport) -> Iterator[Metric]:
    devices = GaugeMetricFamily(
        "mcgw_radio_devices",
        "Devices whose link or connect attempt uses the radio, by signal band",
        labels=["radio", "signal"],
    )
    weakest = GaugeMetricFamily(
        "mcgw_radio_weakest_signal_dbm",
        "The weakest signal among the radio's devices (dBm)",
        labels=["radio"],
    )
    for radio in report.radios:
        on_it = [d for d in report.devices if d.radio == radio.name]
        bands = Counter(signal_band(d.signal_dbm) for d in on_it)
        for band in ("strong", "fair", "weak", "unknown"):
            devices.add_metric([radio.name, band], bands.get(band, 0))
        heard = [d.signal_dbm for d in on_it if d.signal_dbm is not None]
        if heard:
            weakest.add_metric([radio.name], min(heard))
    yield devices
    yield weakest


def _mqtt(runtime: Runtime) -> Iterator[Metric]:
    """The MQTT bridge's connection and counters, when it is on."""
    bridge = getattr(runtime, "mqtt", None)
    if bridge is None:
        return
    status = bridge.status
    yield GaugeMetricFamily("mcgw_mqtt_up", "1 while connected to the broker", value=status.up)
    for name, value, doc in (
        ("connects", status.reconnects, "Broker connections made (the first one included)"),
        ("published", status.published, "Messages handed to the broker"),
        ("dropped", status.dropped, "Telemetry, events and acks dropped (broker slow or away)"),
        ("commands_accepted", bridge.commands.accepted, "MQTT commands carried out"),
        ("commands_refused", bridge.commands.refused, "MQTT commands refused (error ack)"),
    ):
        yield CounterMetricFamily(f"mcgw_mqtt_{name}", doc, value=value)


class ApiMetrics:
    """The app's registry and the metrics the API observes itself."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.runtime: Runtime | None = None
        self.stop_latency = Histogram(
            "mcgw_stop_latency_seconds",
            "From a stop request to the device's confirmed stop",
            buckets=STOP_BUCKETS_S,
            registry=self.registry,
        )
        self.ws_connections = Gauge(
            "mcgw_ws_connections", "Open WebSocket connections", registry=self.registry
        )
        self.registry.register(_GatewayCollector(self))

    def render(self) -> bytes:
        return generate_latest(self.registry)
