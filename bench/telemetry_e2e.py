"""Live telemetry end to end, and API stop: the gateway under uvicorn against the radio's floors.

A hub helper process runs ``create_app(settings)`` under uvicorn with ``ble.mode="sim:7"`` (the
simulated devices live in the hub process, as with ``mcgw serve --ble sim:7``); the phones are
20 raw WebSocket clients in another process (bench/harness/phones.py), each subscribed to all 7
devices, so 7 x 50 Hz x 20 = 7,000 frames/s reach phones. In the hub process the bench wraps the
simulator's transmitter (never the gateway) to record ``time.monotonic_ns()`` right before each
telemetry notification goes on air, and the firmware to record when a STOP turns output off.

* telemetry latency: device notification -> phone reads the frame, joined per (device, frame)
  over ``--windows`` windows; split at the gateway's own receive stamp (``received_at``) into the
  BLE leg and the gateway leg (hub + WebSocket); frames lost; the hub's CPU and RSS;
* stop latency: with a session running on each device, ``POST /api/v1/sessions/{id}/stop`` from
  the orchestrator -> the device's firmware has turned output off (and the HTTP answer). The
  request goes out on a raw keep-alive HTTP/1.1 connection whose bytes are ready before the
  clock starts (``stop``), and again through httpx (``stop_httpx``: the Python client's own
  cost is then in the figure); the same stops as ``{"type": "stop"}`` on an authenticated
  WebSocket (``stop_ws``).

With ``--pinned`` the telemetry windows run once more on a second hub pinned to one core (the
Pi-class run, ``telemetry_pinned``).

Compare with bench/floors.py in process (the sim and the central share the hub's process): the
BRIEF asks for telemetry p99 under 5 ms above the raw notification p99, and stop p99 under 5 ms
above one write-with-response round trip.

The hub and sim helper processes (bench/harness/hub.py) are shared with bench/ws_fanout.py
(``ble="none"``: no radio, frames injected into the hub), bench/capacity.py (many devices, the sim
in its own process) and bench/footprint.py. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from typing import Any

from harness.hub import dump_hub, start_hub
from harness.joins import GRACE_S, window_figures
from harness.phones import save_phones, start_phones
from harness.processes import Child, CpuMeter, add_loop_argument, loop_name, memory_mib, run_timed
from harness.profiles import request_path, top_functions
from harness.report import run_main
from harness.sessions import RawHttp, WsStopper, claim_all, http_client, start_all
from harness.stats import latency_stats, summarize, summarize_quantiles

Stopper = WsStopper | RawHttp | None
"""How a stop is sent: an authenticated WebSocket, a raw HTTP client, or httpx (None)."""


async def stop_cycles(
    http: Any, devices: list[str], cycles: int, via: Stopper = None
) -> list[tuple[str, int, int]]:
    """Start a session on every device, then stop them one by one (over REST with httpx, or
    ``via``): (device, sent, answered)."""
    samples = []
    for _ in range(cycles):
        ids = await start_all(http, devices)
        await asyncio.sleep(0.3)  # output ramping
        samples.extend(await stop_each(http, devices, ids, via))
        await asyncio.sleep(0.2)
    return samples


async def stop_each(
    http: Any, devices: list[str], ids: list[str], via: Stopper = None
) -> list[tuple[str, int, int]]:
    samples = []
    for address, session_id in zip(devices, ids, strict=True):
        if isinstance(via, RawHttp):
            request = via.request(f"/api/v1/sessions/{session_id}/stop")
            await via.ready()
            sent = time.monotonic_ns()
            status = await via.send(request)
            answered = time.monotonic_ns()
            if status != 200:
                raise RuntimeError(f"REST stop answered {status}")
        elif via is None:
            sent = time.monotonic_ns()
            response = await http.post(f"/api/v1/sessions/{session_id}/stop")
            answered = time.monotonic_ns()
            response.raise_for_status()
        else:
            sent = time.monotonic_ns()
            await via.stop(session_id)
            answered = time.monotonic_ns()
        samples.append((address, sent, answered))
        await asyncio.sleep(0.05)
    return samples


def stop_figures(
    samples: list[tuple[str, int, int]], stops: list[tuple[str, int]]
) -> dict[str, Any]:
    off_ms, http_ms = [], []
    for address, sent, answered in samples:
        after = [ns for device, ns in stops if device == address.upper() and ns >= sent]
        if after:
            off_ms.append((min(after) - sent) / 1e6)
        http_ms.append((answered - sent) / 1e6)
    return {
        "output_off_ms": latency_stats(off_ms),
        "http_answer_ms": latency_stats(http_ms),
        "missing": len(samples) - len(off_ms),
    }


async def telemetry_windows(
    hub: Child, http: Any, clients: int, windows: int, window_s: float, warmup_s: float
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """``clients`` phones watching every device: per-window figures, the phones' records and the
    hub's dump."""
    ready = hub.ready
    addresses: list[str] = ready["devices"]
    phones = await start_phones(
        {
            "kind": "ws",
            "url": ready["url"],
            "token": ready["token"],
            "subscriptions": [addresses] * clients,
        }
    )
    spans = []
    async with phones:
        await asyncio.sleep(warmup_s)
        await hub.command({"cmd": "reset"}, "reset")
        meter = CpuMeter(hub.pid)
        for _ in range(windows):
            meter.start()
            t0 = time.monotonic()
            await asyncio.sleep(window_s)
            t1 = time.monotonic()
            spans.append((t0, t1, meter.stop(), memory_mib(hub.pid)))
        await asyncio.sleep(GRACE_S)
        records = await save_phones(phones)
    dump = await dump_hub(hub)
    telemetry = [
        window_figures(records, dump["sends"], t0, t1, clients)
        | {"hub_cpu_pct": round(cpu, 1), "hub_rss_mib": mem.get("rss")}
        for t0, t1, cpu, mem in spans
    ]
    return telemetry, records, dump


async def stop_repeats(
    hub: Child, http: Any, windows: int, cycles: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Stop figures over REST (a raw client, then httpx) and over the WebSocket, ``windows``
    repeats of ``cycles`` each, interleaved."""
    ready = hub.ready
    addresses: list[str] = ready["devices"]
    stop_runs, httpx_runs, ws_runs = [], [], []
    async with (
        WsStopper(ready["url"], ready["token"]) as ws,
        RawHttp(ready["base_url"], ready["token"]) as raw,
    ):
        for _ in range(windows):
            for runs, via in ((stop_runs, raw), (httpx_runs, None), (ws_runs, ws)):
                samples = await stop_cycles(http, addresses, cycles, via)
                runs.append(stop_figures(samples, (await dump_hub(hub))["stops"]))
    return stop_runs, httpx_runs, ws_runs


def stop_summary(runs: list[dict[str, Any]], answer: str) -> dict[str, Any]:
    """Stop figures over repeats; the answer (HTTP response or WebSocket ack) as ``answer``."""
    return {
        "output_off_ms": summarize_quantiles(runs, "output_off_ms", ("p50", "p99")),
        answer: summarize_quantiles(runs, "http_answer_ms", ("p50", "p99")),
    }


async def measure_async(
    *,
    devices: int,
    clients: int,
    windows: int,
    window_s: float,
    warmup_s: float,
    stop_cycles_per_repeat: int,
    loop: str,
    profile: bool,
    pinned: bool,
) -> dict[str, Any]:
    hub = await start_hub(ble=f"sim:{devices}", loop=loop, record=True)
    async with hub:
        ready = hub.ready
        async with http_client(ready["base_url"], ready["token"]) as http:
            await claim_all(http, ready["devices"])
            telemetry, records, dump = await telemetry_windows(
                hub, http, clients, windows, window_s, warmup_s
            )
            stop_runs, httpx_runs, ws_runs = await stop_repeats(
                hub, http, windows, stop_cycles_per_repeat
            )
            stop_profile = await profile_stops(hub, http, ready["devices"]) if profile else None
    hub_counters = dump["counters"]["hub"]
    result = {
        "bench": "telemetry_e2e",
        "config": {
            "devices": devices,
            "telemetry_hz": 50,
            "clients": clients,
            "subscriptions_per_client": devices,
            "windows": windows,
            "window_s": window_s,
            "stop_cycles_per_repeat": stop_cycles_per_repeat,
            "loop": loop_name(loop),
            "ble": f"sim:{devices} (devices in the hub process)",
        },
        "telemetry": summarize_windows(telemetry),
        "telemetry_windows": telemetry,
        "hub_gc_pauses": dump["gc"],
        "hub_loop_lag_ms": dump["loop_lag_ms"],
        "phones": {"dropped": records["dropped"], "gaps": records["gaps"]},
        "hub_counters": {
            k: hub_counters[k] for k in ("frames_in", "frames_dropped", "device_frames_lost")
        },
        "stop": stop_summary(stop_runs, "http_answer_ms")
        | {
            "n_per_repeat": stop_runs[0]["output_off_ms"]["n"] if stop_runs else 0,
            "missing": sum(r["missing"] for r in stop_runs),
        },
        "stop_httpx": stop_summary(httpx_runs, "http_answer_ms"),
        "stop_ws": stop_summary(ws_runs, "ack_ms")
        | {"missing": sum(r["missing"] for r in ws_runs)},
    }
    if stop_profile:
        result["stop_profile"] = stop_profile
    if profile:
        result["profile"] = await profile_hub(devices, clients, loop)
    if pinned:
        result["telemetry_pinned"] = await pinned_windows(
            devices, clients, windows, window_s, warmup_s, loop
        )
    return result


async def pinned_windows(
    devices: int, clients: int, windows: int, window_s: float, warmup_s: float, loop: str
) -> dict[str, Any]:
    """The telemetry windows again, with the hub (devices included) pinned to core 0."""
    hub = await start_hub(ble=f"sim:{devices}", loop=loop, record=True, cpus=[0])
    async with hub:
        ready = hub.ready
        async with http_client(ready["base_url"], ready["token"]) as http:
            await claim_all(http, ready["devices"])
            telemetry, _, _ = await telemetry_windows(
                hub, http, clients, windows, window_s, warmup_s
            )
    return summarize_windows(telemetry) | {"cpus": [0]}


def summarize_windows(windows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        leg: summarize_quantiles(windows, leg) for leg in ("e2e_ms", "ble_leg_ms", "gateway_leg_ms")
    }
    out["lost"] = sum(w["lost"] for w in windows)
    out["expected"] = sum(w["expected"] for w in windows)
    out["delivered_per_s"] = summarize([w["delivered_per_s"] for w in windows], 0)
    out["hub_cpu_pct"] = summarize([w["hub_cpu_pct"] for w in windows], 1)
    out["hub_rss_mib"] = summarize([w["hub_rss_mib"] for w in windows], 1)
    return out


async def profile_hub(devices: int, clients: int, loop: str, seconds: float = 4.0) -> list[str]:
    """Top functions of the hub process under the same load (cProfile, cumulative order)."""
    with tempfile.NamedTemporaryFile(suffix=".prof", delete=False) as handle:
        path = handle.name
    hub = await start_hub(ble=f"sim:{devices}", loop=loop)
    async with hub:
        phones = await start_phones(
            {
                "kind": "ws",
                "url": hub.ready["url"],
                "token": hub.ready["token"],
                "subscriptions": [hub.ready["devices"]] * clients,
            }
        )
        async with phones:
            await asyncio.sleep(1.0)
            await hub.command(
                {"cmd": "profile", "seconds": seconds, "path": path}, "profiled", seconds + 30
            )
    try:
        return top_functions(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


async def profile_stops(hub: Child, http: Any, devices: list[str]) -> dict[str, list[str]]:
    """Where a REST stop spends its time: cProfile of the hub while only stops run (its
    sessions stream meanwhile): the request's path per stop, and what else the event loop
    ran in that window (own time), which a stop that arrives meanwhile waits behind."""
    with tempfile.NamedTemporaryFile(suffix=".prof", delete=False) as handle:
        path = handle.name
    try:
        ids = await start_all(http, devices)
        await asyncio.sleep(0.3)
        seconds = len(devices) * 0.06 + 0.3
        await asyncio.gather(
            hub.command({"cmd": "profile", "seconds": seconds, "path": path}, "profiled", 60),
            stop_each(http, devices, ids),
        )
        return {
            "request_path": request_path(path, len(devices), STOP_PATH_KEEP, STOP_PATH_SKIP),
            "own_time": top_functions(path, 12),
        }
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


STOP_PATH_KEEP = (
    "/api/",
    "/gateway/sessions",
    "/gateway/safety",
    "/ble/link",
    "fastapi/",
    "pydantic/",
)
STOP_PATH_SKIP = ("/live.py", "websockets", "_handle_telemetry", "_on_telemetry", "_on_frame")


def measure(
    *,
    devices: int = 7,
    clients: int = 20,
    windows: int = 3,
    window_s: float = 5.0,
    warmup_s: float = 1.5,
    stop_cycles_per_repeat: int = 5,
    loop: str = "auto",
    profile: bool = False,
    pinned: bool = False,
) -> dict[str, Any]:
    return run_timed(
        measure_async(
            devices=devices,
            clients=clients,
            windows=windows,
            window_s=window_s,
            warmup_s=warmup_s,
            stop_cycles_per_repeat=stop_cycles_per_repeat,
            loop=loop,
            profile=profile,
            pinned=pinned,
        )
    )


def spread_lines(result: dict[str, Any]) -> list[tuple[str, Any, str] | str]:
    telemetry, stop, stop_ws = result["telemetry"], result["stop"], result["stop_ws"]
    return [
        ("telemetry e2e p50", telemetry["e2e_ms"]["p50"], "ms"),
        ("telemetry e2e p99", telemetry["e2e_ms"]["p99"], "ms"),
        ("telemetry gateway leg p99", telemetry["gateway_leg_ms"]["p99"], "ms"),
        ("hub CPU", telemetry["hub_cpu_pct"], "% of a core"),
        f"frames lost: {telemetry['lost']} of {telemetry['expected']}",
        ("API stop -> output off p50", stop["output_off_ms"]["p50"], "ms"),
        ("API stop -> output off p99", stop["output_off_ms"]["p99"], "ms"),
        ("WS stop -> output off p99", stop_ws["output_off_ms"]["p99"], "ms"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=7)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--windows", type=int, default=3, help="repeats")
    parser.add_argument("--window-s", type=float, default=5.0)
    parser.add_argument(
        "--stop-cycles", type=int, default=5, dest="stop_cycles_per_repeat", metavar="STOP_CYCLES"
    )
    parser.add_argument("--profile", action="store_true", help="also profile the hub (cProfile)")
    parser.add_argument("--pinned", action="store_true", help="also run pinned to one core")
    add_loop_argument(parser)
    run_main(parser, measure, spread_lines, argv)


if __name__ == "__main__":
    main()
