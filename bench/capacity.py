"""Capacity: the most devices at 50 Hz one gateway process carries with no lost frame.

Steps N up (``--steps``, default 7, 14, 28, 50 simulated devices) in two set-ups:

* ``in-process``: ``ble.mode="sim:N"``, the simulated devices run inside the gateway process
  (what ``mcgw serve --ble sim:N`` does), so the gateway's CPU also pays for N simulators and
  both ends of every software link;
* ``sim-process``: the devices run in their own helper process (bench/harness/hub.py's sim,
  served over HCI over TCP) and the gateway connects with ``hci:tcp-client:``, so the gateway
  process carries only the gateway.

At each step every device is claimed, runs a session (quick-lift, level 1: the scheduler streams
segments and keepalives, storage records telemetry) and is watched by its own phone over the
WebSocket (one raw client per device, in another process). Over ``--windows`` windows the step
measures the frames the devices sent against those the phones read (join per device and frame
counter), frames missing from the devices' counters at the hub, end-to-end p99, the gateway's
CPU and RSS, and its event-loop lag. A step is carried when no frame is lost anywhere, every
session is still running, and p99 stays under 50 ms (no growing backlog). Each set-up stops at
its first step that is not carried. Prints one JSON object.

BleSettings caps ``connection_slots`` at 20 (a radio's practical limit); the bench widens the
device manager's slots to N because the target is about the Python side, beyond any one radio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from harness.hub import dump_hub, start_hub, start_sim
from harness.joins import GRACE_S, window_figures
from harness.phones import save_phones, start_phones
from harness.processes import Child, CpuMeters, add_loop_argument, loop_name, memory_mib, run_timed
from harness.report import run_main
from harness.sessions import SESSION_BODY, claim_all, http_client, wait_running
from harness.stats import spread_line, summarize, summarize_quantiles

DEFAULT_STEPS = [7, 14, 28, 50]
LATENCY_BUDGET_MS = 50.0
SETUPS = ("in-process", "sim-process")
START_BATCH = 7


async def start_sessions(http: Any, devices: list[str]) -> list[str]:
    """A session on every device, START_BATCH at a time (people do not all press at once)."""
    ids = []
    for first in range(0, len(devices), START_BATCH):
        batch = devices[first : first + START_BATCH]
        responses = await asyncio.gather(
            *(http.post("/api/v1/sessions", json={"device": a, **SESSION_BODY}) for a in batch)
        )
        for response in responses:
            if response.status_code != 201:
                detail = response.json().get("detail", response.text)
                raise SetupFailed(f"a session did not start ({response.status_code}): {detail}")
            ids.append(response.json()["id"])
    await asyncio.gather(*(wait_running(http, i) for i in ids))
    return ids


class SetupFailed(RuntimeError):
    """The step could not be loaded (devices not connected, sessions not started)."""


async def sessions_running(http: Any, ids: list[str]) -> int:
    states = await asyncio.gather(*(http.get(f"/api/v1/sessions/{i}") for i in ids))
    return sum(1 for s in states if s.status_code == 200 and s.json()["state"] == "running")


async def start_setup(setup: str, devices: int, loop: str) -> tuple[Child, Child | None]:
    """The hub (and, ``sim-process``, the sim helper) with ``devices`` devices connected."""
    if setup != "sim-process":
        hub = await start_hub(ble=f"sim:{devices}", loop=loop, slots=devices, record=True)
        return hub, None
    sim = await start_sim(devices, loop=loop)
    try:
        hub = await start_hub(
            ble=f"hci:tcp-client:127.0.0.1:{sim.ready['port']}",
            loop=loop,
            slots=devices,
            expect=devices,
        )
    except BaseException:
        await sim.close()
        raise
    return hub, sim


async def load_and_measure(
    hub: Child, sim: Child | None, windows: int, window_s: float, warmup_s: float
) -> dict[str, Any]:
    """A session and a phone per device; ``windows`` measured windows; what every side saw."""
    ready = hub.ready
    addresses: list[str] = ready["devices"]
    async with http_client(ready["base_url"], ready["token"]) as http:
        await claim_all(http, addresses)
        ids = await start_sessions(http, addresses)
        phones = await start_phones(
            {
                "kind": "ws",
                "url": ready["url"],
                "token": ready["token"],
                "subscriptions": [[a] for a in addresses],
            }
        )
        async with phones:
            await asyncio.sleep(warmup_s)
            await hub.command({"cmd": "reset"}, "reset")
            if sim is not None:
                await sim.command({"cmd": "reset"}, "reset")
            before = (await hub.command({"cmd": "counters"}, "counters") or {})["hub"]
            meters = CpuMeters(hub.pid, sim.pid if sim else None)
            spans = []
            for _ in range(windows):
                meters.start()
                t0 = time.monotonic()
                await asyncio.sleep(window_s)
                t1 = time.monotonic()
                spans.append((t0, t1, *meters.stop(), memory_mib(hub.pid)))
            await asyncio.sleep(GRACE_S)
            records = await save_phones(phones)
            running = await sessions_running(http, ids)
        hub_dump = await dump_hub(hub)
        sim_dump = await dump_hub(sim) if sim else hub_dump
    return {
        "spans": spans,
        "records": records,
        "running": running,
        "before": before,
        "hub": hub_dump,
        "sim": sim_dump if sim else None,
    }


async def one_step(
    setup: str, devices: int, windows: int, window_s: float, warmup_s: float, loop: str
) -> dict[str, Any]:
    """Start the set-up with ``devices`` devices, load it, measure, tear it down."""
    started = time.monotonic()
    hub, sim = await start_setup(setup, devices, loop)
    setup_s = time.monotonic() - started
    try:
        seen = await load_and_measure(hub, sim, windows, window_s, warmup_s)
    finally:
        await hub.close()
        if sim is not None:
            await sim.close()
    return {"setup": setup, "devices": devices} | step_figures(seen, devices, setup_s)


def step_figures(seen: dict[str, Any], devices: int, setup_s: float) -> dict[str, Any]:
    """Whether the step was carried, and its figures over the windows."""
    hub_dump, sim_dump = seen["hub"], seen["sim"]
    sends = (sim_dump or hub_dump)["sends"]
    per_window = [
        window_figures(seen["records"], sends, t0, t1, 1)
        | {
            "hub_cpu_pct": round(cpu, 1),
            "sim_cpu_pct": None if sim_cpu is None else round(sim_cpu, 1),
            "hub_rss_mib": mem.get("rss"),
        }
        for t0, t1, cpu, sim_cpu, mem in seen["spans"]
    ]
    before, after = seen["before"], hub_dump["counters"]["hub"]
    device_lost = after["device_frames_lost"] - before["device_frames_lost"]
    dropped = after["frames_dropped"] - before["frames_dropped"]
    lost = sum(w["lost"] for w in per_window)
    running = seen["running"]
    worst_p99 = max(w["e2e_ms"]["p99"] for w in per_window)
    carried = (
        lost == 0
        and device_lost == 0
        and dropped == 0
        and running == devices
        and worst_p99 < LATENCY_BUDGET_MS
    )
    return {
        "carried": carried,
        "setup_s": round(setup_s, 1),
        "sessions_running": running,
        "sent_per_s": summarize([w["sent_per_s"] for w in per_window], 0),
        "delivered_per_s": summarize([w["delivered_per_s"] for w in per_window], 0),
        "lost_at_phones": lost,
        "device_frames_lost": device_lost,
        "hub_queue_drops": dropped,
        "e2e_ms": summarize_quantiles(per_window, "e2e_ms"),
        "hub_cpu_pct": summarize([w["hub_cpu_pct"] for w in per_window], 1),
        "sim_cpu_pct": (summarize([w["sim_cpu_pct"] for w in per_window], 1) if sim_dump else None),
        "hub_rss_mib": summarize([w["hub_rss_mib"] for w in per_window], 1),
        "hub_loop_lag_ms": hub_dump["loop_lag_ms"],
        "sim_loop_lag_ms": sim_dump["loop_lag_ms"] if sim_dump else None,
        "hub_gc_pauses": hub_dump["gc"],
    }


async def measure_async(
    *,
    steps: list[int],
    setups: list[str],
    windows: int,
    window_s: float,
    warmup_s: float,
    loop: str,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {}
    capacity: dict[str, int] = {}
    for setup in setups:
        results[setup] = []
        capacity[setup] = 0
        for devices in steps:
            try:
                step = await one_step(setup, devices, windows, window_s, warmup_s, loop)
            except Exception as exc:  # a set-up that cannot even start is not carried
                step = {"setup": setup, "devices": devices, "carried": False, "error": str(exc)}
            results[setup].append(step)
            echo(step_line(step))
            if not step["carried"]:
                break
            capacity[setup] = devices
    return {
        "bench": "capacity",
        "config": {
            "steps": steps,
            "telemetry_hz": 50,
            "windows": windows,
            "window_s": window_s,
            "latency_budget_ms": LATENCY_BUDGET_MS,
            "loop": loop_name(loop),
            "load": "a session per device, one phone per device",
        },
        "capacity": capacity,
        "steps": results,
    }


def step_line(step: dict[str, Any]) -> str:
    if "error" in step:
        return f"{step['setup']} N={step['devices']}: failed to run: {step['error']}"
    return (
        f"{step['setup']} N={step['devices']}: carried={step['carried']} "
        f"lost={step['lost_at_phones']}+{step['device_frames_lost']} "
        + spread_line("e2e p99", step["e2e_ms"]["p99"], "ms")
        + "; "
        + spread_line("hub CPU", step["hub_cpu_pct"], "%")
    )


def measure(
    *,
    steps: list[int] | None = None,
    setups: list[str] | None = None,
    windows: int = 3,
    window_s: float = 2.0,
    warmup_s: float = 1.5,
    loop: str = "auto",
    echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> dict[str, Any]:
    return run_timed(
        measure_async(
            steps=steps or DEFAULT_STEPS,
            setups=setups or list(SETUPS),
            windows=windows,
            window_s=window_s,
            warmup_s=warmup_s,
            loop=loop,
            echo=echo,
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=DEFAULT_STEPS)
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    parser.add_argument("--windows", type=int, default=3, help="repeats per step")
    parser.add_argument("--window-s", type=float, default=2.0)
    add_loop_argument(parser)
    run_main(parser, measure, lambda _result: [], argv)


if __name__ == "__main__":
    main()
