"""Prometheus metrics at /metrics, from a registry that belongs to one app (no global registry).

Most figures are read from the gateway when Prometheus scrapes (a custom collector), so the hot
paths count nothing extra: devices by connection state, sessions by state, the telemetry hub's
frames in/out/dropped/lost, BLE link counters and reconnects, storage writer counters. The API
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
    """Readiness per part, the radio and event-loop stalls (gateway.health)."""
    ready = GaugeMetricFamily("mcgw_ready", "Readiness checks: 1 passes, 0 fails", labels=["check"])
    for check in checks(runtime):
        ready.add_metric([check.name], 1.0 if check.ok else 0.0)
    yield ready
    radio = runtime.radio_state
    if radio is not None:
        yield CounterMetricFamily(
            "mcgw_radio_reopens", "Radio transports reopened after a loss", value=radio.reopens
        )
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
