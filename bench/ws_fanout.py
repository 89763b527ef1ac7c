"""WebSocket fan-out: the gateway's live path against a bare uvicorn broadcast and Mosquitto.

One publisher emits telemetry frames (the gateway's own JSON, ``TelemetryFrame.json_bytes``,
~330 bytes, serialised once per frame) at a paced rate to ``--clients`` subscribers in another
process (so the server's CPU is its own), through three systems:

* ``gateway``: the mcgw API (``create_app``) under uvicorn with no radio; frames are published
  into its telemetry hub for one device, and every client subscribes to that device over
  /api/v1/ws as a phone would;
* ``bare``: the floor, a bare Starlette WebSocket endpoint under the same uvicorn settings whose
  broadcaster sends the same bytes to every client in a direct loop;
* ``mosquitto``: the local broker (127.0.0.1:1883) relaying the same bytes, published over a raw
  MQTT 3.1.1 socket (no client library: the Python publisher must not be the bottleneck) to
  subscribers at QoS 0.

For each system the offered rate climbs a ladder (frames/s per client, from ``--start-rate``,
times ``--factor`` per step) until a step fails: a frame lost, p99 past 50 ms, or the publisher
unable to hold the rate. That step is the saturation; the step below is the sustained capacity
(``--max-rate`` only bounds a ladder that never fails, and says so). Each step reports delivered
frames/s, latency from publish to the subscriber's read (p50/p99), frames lost, whether the
publisher held the rate, the server's CPU, and the CPU of the load generators.

The clients are spread over ``--phone-processes`` processes, and their CPU (and the MQTT
publisher's) is read every step: a step where a load generator used more than
``GENERATOR_BUSY_PCT`` of a core is marked ``generator_bound``, so a saturation the load
generators caused is reported as theirs, not the server's.

The raw clients, the phones, the servers and the publishers are the harness's
(bench/harness/wire.py, phones.py, servers.py, hub.py); this module runs the ladder and judges
each step. After its ladders, each server (not Mosquitto) runs one more step at the start rate
under cProfile: its busy time and top functions per delivered frame, for the report's per-frame
diagnosis. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.hub import start_hub
from harness.joins import GRACE_S
from harness.phones import save_phones, start_phones
from harness.processes import (
    Child,
    CpuMeter,
    CpuMeters,
    add_loop_argument,
    loop_name,
    run_timed,
    start_helper,
)
from harness.profiles import busy_s, top_functions
from harness.report import run_main
from harness.servers import FAKE_DEVICE, READY_TIMEOUT_S, frame_bytes
from harness.stats import latency_stats, summarize
from harness.wire import MQTT_HOST, MQTT_PORT

LATENCY_BUDGET_MS = 50.0
"""A step is sustained only with p99 under this: above it frames are queueing up (10x the
BRIEF's 5 ms telemetry budget, so only a growing backlog fails it)."""
WARMUP_S = 1.0
"""A discarded step at the first rate before each ladder (connections and caches warm up)."""
PROFILE_S = 2.0
"""The profiled step's length (bare broadcast and gateway, at the start rate)."""
PROFILE_TOP = 14
START_RATE = 100.0
"""The first step, frames/s per client: 100 clients x 100 = 10,000 frames/s, the comparison
point of the per-frame figures."""
FACTOR = 1.5
MAX_RATE = 20_000.0
GENERATOR_BUSY_PCT = 90.0
"""A load-generator process above this much of a core may be what limits a step."""


def mosquitto_pid() -> int | None:
    """The local broker's process, to read its CPU (None if it is not visible)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "mosquitto":
                    return int(entry.name)
    return None


def mosquitto_reachable() -> bool:
    try:
        with socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=0.5):
            return True
    except OSError:
        return False


# --- the orchestrator ---------------------------------------------------------------------------


def step_figures(
    records: dict[str, Any],
    step: dict[str, Any],
    clients: int,
    rate: float,
    cpu_pct: float,
    generators_pct: list[float],
) -> dict[str, Any]:
    """One step's delivered rate, latency and loss from the phones' records."""
    first, last = step["first_seq"], step["last_seq"]
    deadline = step["t1"] + GRACE_S
    latencies: list[float] = []
    last_read = step["t0"]
    for seq, sent, read in zip(records["seq"], records["sent"], records["read"], strict=True):
        if first <= seq <= last and read <= deadline:
            latencies.append((read - sent) * 1000)
            last_read = max(last_read, read)
    expected = (last - first + 1) * clients
    seconds = step["t1"] - step["t0"]
    offered = rate * seconds
    held = step["published"] >= 0.97 * offered
    lost = expected - len(latencies)
    stats = latency_stats(latencies)
    kept_up = stats["p99"] < LATENCY_BUDGET_MS
    return {
        "offered_per_client_hz": rate,
        "offered_per_s": round(rate * clients),
        "published_per_s": round(step["published"] / seconds),
        "delivered_per_s": round(len(latencies) / max(last_read - step["t0"], seconds)),
        "latency_ms": {k: round(v, 3) for k, v in stats.items() if k != "n"},
        "lost": lost,
        "held_rate": held,
        "sustained": held and lost == 0 and kept_up,
        "server_cpu_pct": round(cpu_pct, 1),
        "generator_cpu_pct": [round(c, 1) for c in generators_pct],
        "generator_bound": any(c > GENERATOR_BUSY_PCT for c in generators_pct),
    }


class PhoneGroup:
    """The clients, spread over several phone processes; their records merged."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children

    @classmethod
    async def start(cls, config: dict[str, Any], processes: int) -> PhoneGroup:
        subscriptions = config["subscriptions"]
        parts = [subscriptions[i::processes] for i in range(processes)]
        children = [await start_phones(config | {"subscriptions": p}) for p in parts if p]
        return cls(children)

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self.children]

    async def save(self) -> dict[str, Any]:
        merged: dict[str, Any] = {"seq": [], "sent": [], "read": []}
        for child in self.children:
            records = await save_phones(child)
            for key in merged:
                merged[key].extend(records[key])
        return merged

    async def close(self) -> None:
        for child in self.children:
            await child.close()


async def ladder(
    server: Child,
    phones: PhoneGroup,
    server_pid: int | None,
    generator_pids: list[int],
    clients: int,
    rates: Rates,
    seconds: float,
) -> list[dict[str, Any]]:
    """Steps up the rate until one fails (or ``rates.most`` is reached)."""
    steps: list[dict[str, Any]] = []
    meter = CpuMeter(server_pid) if server_pid else None
    generators = CpuMeters(*generator_pids)
    await server.command({"cmd": "step", "rate": rates.start, "seconds": WARMUP_S}, "step")
    await asyncio.sleep(GRACE_S)
    await phones.save()  # discards the warm-up's frames
    rate = rates.start
    while rate <= rates.most:
        if meter:
            meter.start()
        generators.start()
        reply = await server.command({"cmd": "step", "rate": rate, "seconds": seconds}, "step")
        cpu = meter.stop() if meter else math.nan
        busy = [c for c in generators.stop() if c is not None]
        assert reply is not None
        await asyncio.sleep(GRACE_S)
        figures = step_figures(await phones.save(), reply, clients, rate, cpu, busy)
        steps.append(figures)
        if not figures["sustained"]:
            break
        rate = round(rate * rates.factor)
    return steps


@dataclass(frozen=True)
class Rates:
    start: float = START_RATE
    factor: float = FACTOR
    most: float = MAX_RATE


async def run_system(
    system: str,
    clients: int,
    rates: Rates,
    seconds: float,
    repeats: int,
    loop: str,
    phone_processes: int,
) -> tuple[list[list[dict[str, Any]]], dict[str, Any] | None]:
    """Every repeat of the ladder on one system, [repeat][step], and (not for Mosquitto: its
    broker is not ours to profile) a profiled step at the start rate."""
    subscriptions = [[FAKE_DEVICE]] * clients
    server, phones_config, server_pid = await start_system(system, loop)
    runs = []
    async with server:
        phones = await PhoneGroup.start(
            phones_config | {"subscriptions": subscriptions}, phone_processes
        )
        try:
            generators = [*phones.pids, *([server.pid] if system == "mosquitto" else [])]
            for _ in range(repeats):
                runs.append(
                    await ladder(server, phones, server_pid, generators, clients, rates, seconds)
                )
            profile = (
                await profile_step(server, phones, clients, rates.start)
                if system != "mosquitto"
                else None
            )
        finally:
            await phones.close()
    return runs, profile


async def profile_step(
    server: Child, phones: PhoneGroup, clients: int, rate: float
) -> dict[str, Any]:
    """One more step at ``rate`` (the per-frame target's load) with the server under cProfile:
    its busy time and top functions per delivered frame. cProfile slows every call, so read
    the gateway's figures against the bare broadcast's, taken the same way."""
    with tempfile.NamedTemporaryFile(suffix=".prof", delete=False) as handle:
        path = handle.name
    try:
        command = {"cmd": "step", "rate": rate, "seconds": PROFILE_S, "profile": path}
        reply = await server.command(command, "step")
        await asyncio.sleep(GRACE_S)
        await phones.save()
        frames = max(1, reply["published"] * clients)
        return {
            "offered_per_s": round(rate * clients),
            "frames": frames,
            "busy_us_per_frame": round(busy_s(path) / frames * 1e6, 2),
            "top": top_functions(path, PROFILE_TOP, per=frames),
        }
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


async def start_system(system: str, loop: str) -> tuple[Child, dict[str, Any], int | None]:
    """The server (or publisher) of ``system``, how phones reach it, and whose CPU to read."""
    if system == "gateway":
        server = await start_hub(ble="none", loop=loop)
        ready = server.ready
        return server, {"kind": "ws", "url": ready["url"], "token": ready["token"]}, server.pid
    if system == "bare":
        server = await start_helper("bare", loop=loop, timeout_s=READY_TIMEOUT_S)
        return server, {"kind": "ws", "url": server.ready["url"]}, server.pid
    server = await start_helper("mqtt-pub", loop=loop, timeout_s=READY_TIMEOUT_S)
    return server, {"kind": "mqtt"}, mosquitto_pid()


def summarize_system(runs: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Per step (over the repeats that reached it), and the saturation of each repeat: the
    first failed step's delivered rate, the last sustained step's offered rate."""
    steps = []
    for i in range(max(len(run) for run in runs)):
        per = [run[i] for run in runs if len(run) > i]
        steps.append(
            {
                "offered_per_s": per[0]["offered_per_s"],
                "offered_per_client_hz": per[0]["offered_per_client_hz"],
                "delivered_per_s": summarize([s["delivered_per_s"] for s in per], 0),
                "p50_ms": summarize([s["latency_ms"]["p50"] for s in per]),
                "p99_ms": summarize([s["latency_ms"]["p99"] for s in per]),
                "lost": [s["lost"] for s in per],
                "sustained": [s["sustained"] for s in per],
                "server_cpu_pct": summarize([s["server_cpu_pct"] for s in per], 1),
                "generator_cpu_pct_max": summarize(
                    [max(s["generator_cpu_pct"], default=0.0) for s in per], 1
                ),
                "generator_bound": [s["generator_bound"] for s in per],
            }
        )
    capacities, saturated, why = [], [], []
    for run in runs:
        ok = [s["offered_per_s"] for s in run if s["sustained"]]
        capacities.append(max(ok) if ok else 0)
        last = run[-1]
        if last["sustained"]:
            why.append("the ladder's top was reached without a failure")
        elif last["generator_bound"]:
            why.append("a load generator was busy (its CPU above the threshold)")
        elif last["lost"]:
            why.append("frames lost")
        elif not last["held_rate"]:
            why.append("the publisher could not hold the rate")
        else:
            why.append("p99 past the latency budget")
        saturated.append(max(s["delivered_per_s"] for s in run))
    return {
        "steps": steps,
        "sustained_capacity_per_s": summarize(capacities, 0),
        "max_delivered_per_s": summarize(saturated, 0),
        "ended_by": why,
    }


async def measure_async(
    *,
    clients: int,
    rates: Rates,
    seconds: float,
    repeats: int,
    loop: str,
    systems: list[str],
    phone_processes: int,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "bench": "ws_fanout",
        "config": {
            "clients": clients,
            "start_rate_per_client_hz": rates.start,
            "factor": rates.factor,
            "max_rate_per_client_hz": rates.most,
            "phone_processes": phone_processes,
            "generator_busy_pct": GENERATOR_BUSY_PCT,
            "step_s": seconds,
            "repeats": repeats,
            "loop": loop,
            "frame_bytes": len(frame_bytes(0)),
        },
        "systems": {},
        "systems_not_measured": {},
    }
    for system in systems:
        if system == "mosquitto" and not mosquitto_reachable():
            result["systems_not_measured"][system] = f"no MQTT broker on {MQTT_HOST}:{MQTT_PORT}"
            continue
        runs, profile = await run_system(
            system, clients, rates, seconds, repeats, loop, phone_processes
        )
        result["systems"][system] = summarize_system(runs)
        if profile is not None:
            result["systems"][system]["profile"] = profile
        if system == "mosquitto" and mosquitto_pid() is None:
            result["systems"][system]["note"] = "broker CPU not visible (another namespace)"
    return result


def measure(
    *,
    clients: int = 100,
    start_rate: float = START_RATE,
    factor: float = FACTOR,
    max_rate: float = MAX_RATE,
    seconds: float = 2.0,
    repeats: int = 3,
    loop: str = "auto",
    systems: list[str] | None = None,
    phone_processes: int = 2,
) -> dict[str, Any]:
    chosen = loop_name(loop)
    return run_timed(
        measure_async(
            clients=clients,
            rates=Rates(start_rate, factor, max_rate),
            seconds=seconds,
            repeats=repeats,
            loop=chosen,
            systems=systems or ["bare", "gateway", "mosquitto"],
            phone_processes=phone_processes,
        )
    )


def spread_lines(result: dict[str, Any]) -> list[tuple[str, Any, str] | str]:
    lines: list[tuple[str, Any, str] | str] = []
    for system, figures in result["systems"].items():
        first = figures["steps"][0]
        lines += [
            (f"{system} sustained capacity", figures["sustained_capacity_per_s"], "frames/s"),
            (f"{system} max delivered", figures["max_delivered_per_s"], "frames/s"),
            (f"{system} p99 at {first['offered_per_s']}/s", first["p99_ms"], "ms"),
        ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--start-rate", type=float, default=START_RATE)
    parser.add_argument("--factor", type=float, default=FACTOR)
    parser.add_argument("--max-rate", type=float, default=MAX_RATE)
    parser.add_argument("--phone-processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--systems", nargs="+", default=["bare", "gateway", "mosquitto"])
    add_loop_argument(parser)
    run_main(parser, measure, spread_lines, argv)


if __name__ == "__main__":
    main()
