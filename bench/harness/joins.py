"""Joining what devices sent with what phones read: latency and loss of a window.

The sends come from ``AirRecorder`` in the process that hosts the simulated devices (device ->
(frame counters, send times in ns)); the reads from the phones' ``Records``. Pure functions:
the smoke test feeds them by hand.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Any

from harness.stats import latency_stats

GRACE_S = 0.5
"""After a window, how long frames may still arrive and count as delivered."""


def send_index(sends: dict[str, tuple[array[int], array[int]]]) -> dict[str, dict[int, int]]:
    """device -> frame counter -> send time (ns); a later send of a counter wins (wraps)."""
    return {device: dict(zip(frames, ns, strict=True)) for device, (frames, ns) in sends.items()}


def window_figures(
    records: dict[str, Any],
    sends: dict[str, tuple[array[int], array[int]]],
    t0: float,
    t1: float,
    clients: int,
    subscribers_per_device: Callable[[str], int] | None = None,
) -> dict[str, Any]:
    """Latency and loss of the frames a device sent in [t0, t1) (monotonic seconds)."""
    index = send_index(sends)
    names = {i: name for name, i in records["devices"].items()}
    e2e: list[float] = []
    ble: list[float] = []
    gateway: list[float] = []
    deadline = t1 + GRACE_S
    for device, frame, sent_at, read in zip(
        records["device"], records["frame"], records["sent"], records["read"], strict=True
    ):
        sent_ns = index.get(names[device], {}).get(frame)
        if sent_ns is None:
            continue
        sent = sent_ns / 1e9
        if not t0 <= sent < t1 or read > deadline:
            continue
        e2e.append((read - sent) * 1000)
        ble.append((sent_at - sent) * 1000)
        gateway.append((read - sent_at) * 1000)
    expected = 0
    for device, (_frames, ns) in sends.items():
        sent_in_window = sum(1 for n in ns if t0 <= n / 1e9 < t1)
        fan = subscribers_per_device(device) if subscribers_per_device else clients
        expected += sent_in_window * fan
    return {
        "e2e_ms": latency_stats(e2e),
        "ble_leg_ms": latency_stats(ble),
        "gateway_leg_ms": latency_stats(gateway),
        "expected": expected,
        "delivered": len(e2e),
        "lost": expected - len(e2e),
        "delivered_per_s": round(len(e2e) / (t1 - t0)),
        "sent_per_s": round(
            sum(sum(1 for n in ns if t0 <= n / 1e9 < t1) for _f, ns in sends.values()) / (t1 - t0)
        ),
    }
