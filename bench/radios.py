"""Several radios: 3 radios x 7 devices at 50 Hz with a session each, then a radio dies.

One sim helper process (bench/harness/hub.py's sim: N simulated devices on one virtual air,
served over HCI over TCP with the simulator's control endpoint, as ``mcgw sim`` serves them)
holds 21 devices. The hub helper (the gateway under uvicorn, as ``mcgw serve`` runs it) opens
three HCI connections to it, ``--ble hci:tcp-client:P,hci:tcp-client:P,hci:tcp-client:P``:
three radios on one air that all hear every device. Before the hub looks after any device, the
bench sets what each radio hears (the control endpoint's ``set_signal``, ``signal_plan``):
devices 0-6 loud on radio0, 7-13 on radio1, 14-20 on radio2, each also heard less well by one
other radio (alternating) and barely by the third, so placement by signal puts 7 on each. Each
radio has ``--slots`` (14) connection slots, so that two radios can take a third one's devices.

* steady state (bench/capacity.py's load and figures): every device claimed, a session on each
  (quick-lift, level 1), a phone per device over the WebSocket; over ``--windows`` windows the
  frames the devices sent against those the phones read (lost), end-to-end p99 (device
  notification -> phone), the gateway's and the sim's CPU, the gateway's RSS;
* failover: the sim drops radio1 (``POST /radios/<address>/drop``: its TCP connection is cut as
  if the dongle was pulled). An admin WebSocket watches radio1's devices (events only) and
  the bench reads the hub's own event times (``ts``, the hub's wall clock, on this machine):
  per device, from the drop request to its link bonded again and to its session running again
  (``link restored; resumed``), and which radio it ended on (``GET /api/v1/radios``).

Prints one JSON object. Timing figures are as good as the machine is quiet: the bench runs
three processes on the same cores as the phones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

from capacity import load_and_measure, step_figures
from harness.hub import adopt, start_hub, start_sim
from harness.processes import Child, add_loop_argument, loop_name, run_timed
from harness.radio import control_request
from harness.report import run_main
from harness.sessions import http_client

RADIOS = 3
PER_RADIO = 7
SLOTS = 14
NEAR, ALT, FAR = -45, -70, -90
"""dBm a device is heard at by its own radio, by its one alternative, by the remaining one."""
VICTIM = "radio1"
FAILOVER_TIMEOUT_S = 60.0
"""A hang guard: twice the product's link resume window (30 s), after which sessions end."""
RESUMED = "link restored; resumed"


def signal_plan(
    devices: list[str], radios: list[str], per_radio: int
) -> dict[tuple[str, str], int]:
    """(device, radio address) -> dBm: device i is loud on radio i // per_radio, heard less
    well by one other radio (the next or the one after, alternating), barely by the rest."""
    plan = {}
    for index, device in enumerate(devices):
        home = (index // per_radio) % len(radios)
        alternative = (home + 1 + index % 2) % len(radios)
        for number, radio in enumerate(radios):
            if number == home:
                plan[device, radio] = NEAR
            elif number == alternative:
                plan[device, radio] = ALT
            else:
                plan[device, radio] = FAR
    return plan


def placement(view: dict[str, Any]) -> dict[str, int]:
    """Radio name -> devices whose link (or connect attempt) uses it, from GET /radios."""
    counts = {radio["name"]: 0 for radio in view["radios"]}
    for device in view["devices"]:
        if device["radio"] is not None:
            counts[device["radio"]] = counts.get(device["radio"], 0) + 1
    return counts


async def radios_view(http: Any) -> dict[str, Any]:
    response = await http.get("/api/v1/radios")
    response.raise_for_status()
    view: dict[str, Any] = response.json()
    return view


async def set_signals(control_port: int, plan: dict[tuple[str, str], int]) -> None:
    for (device, radio), rssi in plan.items():
        body = {"radio": radio, "rssi": rssi}
        await control_request(control_port, "POST", f"/devices/{device}/set_signal", body)


class EventWatch:
    """An admin WebSocket subscribed to devices for their events only (no telemetry); keeps
    every ``device_state`` and ``session_state`` event it reads."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.events: list[dict[str, Any]] = []
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, devices: list[str]) -> None:
        import websockets

        self._ws = await websockets.connect(
            self.url, subprotocols=["mcgw.v1", f"bearer.{self.token}"], compression=None
        )
        await self._ws.recv()  # hello
        for number, device in enumerate(devices):
            ask = {"type": "subscribe", "id": f"w{number}", "device": device, "telemetry": False}
            await self._ws.send(json.dumps(ask))
            while json.loads(await self._ws.recv()).get("id") != f"w{number}":
                pass
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            if message.get("type") in ("device_state", "session_state"):
                self.events.append(message)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()


def failover_figures(
    events: list[dict[str, Any]], devices: list[str], dropped_at: float
) -> dict[str, Any]:
    """Per device, seconds from the drop to its link bonded again and to its session running
    again (the first of each after the drop, by the hub's event times); None if never."""
    per_device = {}
    for device in devices:
        mine = [e for e in events if e.get("address") == device and e["ts"] >= dropped_at]
        lost = [e for e in mine if e["type"] == "device_state" and e["state"] == "lost"]
        first_lost = lost[0]["ts"] if lost else None
        bonded = [
            e["ts"]
            for e in mine
            if e["type"] == "device_state"
            and e["state"] == "bonded"
            and first_lost is not None
            and e["ts"] >= first_lost
        ]
        resumed = [
            e["ts"]
            for e in mine
            if e["type"] == "session_state" and e["state"] == "running" and e["reason"] == RESUMED
        ]
        ended = [
            e["state"]
            for e in mine
            if e["type"] == "session_state" and e["state"] not in ("running", "paused")
        ]
        per_device[device] = {
            "lost_s": _since(dropped_at, first_lost),
            "bonded_s": _since(dropped_at, bonded[0] if bonded else None),
            "running_s": _since(dropped_at, resumed[0] if resumed else None),
            "ended": ended[0] if ended else None,
        }
    running = [d["running_s"] for d in per_device.values() if d["running_s"] is not None]
    bonded = [d["bonded_s"] for d in per_device.values() if d["bonded_s"] is not None]
    return {
        "devices": len(devices),
        "sessions_running_again": len(running),
        "all_running_s": max(running) if len(running) == len(devices) else None,
        "first_running_s": min(running) if running else None,
        "all_bonded_s": max(bonded) if len(bonded) == len(devices) else None,
        "per_device": per_device,
    }


def _since(start: float, ts: float | None) -> float | None:
    return None if ts is None else round(ts - start, 3)


async def wait_resumed(watch: EventWatch, devices: list[str], dropped_at: float) -> None:
    """Until every device's session ran again or ended, bounded by the hang guard."""
    pending = set(devices)
    async with asyncio.timeout(FAILOVER_TIMEOUT_S):
        while pending:
            for event in watch.events:
                if event["type"] == "session_state" and event["ts"] >= dropped_at:
                    done = event["reason"] == RESUMED or event["state"] not in (
                        "running",
                        "paused",
                    )
                    if done:
                        pending.discard(event["address"])
            await asyncio.sleep(0.05)


async def fail_over(hub: Child, control_port: int) -> dict[str, Any]:
    """Drop ``VICTIM`` at the sim; when its devices' sessions ran again, and where."""
    ready = hub.ready
    async with http_client(ready["base_url"], ready["token"]) as http:
        before = await radios_view(http)
        radio = next(r for r in before["radios"] if r["name"] == VICTIM)
        devices = sorted(d["address"] for d in before["devices"] if d["radio"] == VICTIM)
        watch = EventWatch(ready["url"], ready["token"])
        await watch.start(devices)
        try:
            dropped_at = time.time()
            await control_request(control_port, "POST", f"/radios/{radio['address']}/drop", {})
            with contextlib.suppress(TimeoutError):  # the figures say which never ran again
                await wait_resumed(watch, devices, dropped_at)
        finally:
            await watch.close()
        after = await radios_view(http)
    ended_on = {d["address"]: d["radio"] for d in after["devices"] if d["address"] in devices}
    victim_after = next(r for r in after["radios"] if r["name"] == VICTIM)
    return failover_figures(watch.events, devices, dropped_at) | {
        "radio": VICTIM,
        "ended_on": dict(sorted(ended_on.items())),
        "moved": sum(1 for name in ended_on.values() if name not in (None, VICTIM)),
        "placement_after": placement(after),
        "victim_after": {k: victim_after[k] for k in ("state", "reopens", "last_error")},
    }


async def measure_async(
    *, windows: int, window_s: float, warmup_s: float, slots: int, loop: str
) -> dict[str, Any]:
    devices = RADIOS * PER_RADIO
    started = time.monotonic()
    sim = await start_sim(devices, loop=loop, control=True)
    try:
        moniker = f"hci:tcp-client:127.0.0.1:{sim.ready['port']}"
        hub = await start_hub(
            ble=",".join([moniker] * RADIOS),
            loop=loop,
            slots=slots,
            auto_connect=False,
        )
        try:
            ready = hub.ready
            async with http_client(ready["base_url"], ready["token"]) as http:
                radios = [r["address"] for r in (await radios_view(http))["radios"]]
                plan = signal_plan(sim.ready["devices"], radios, PER_RADIO)
                await set_signals(sim.ready["control_port"], plan)
                ready["devices"] = await adopt(hub, devices)
                placed = placement(await radios_view(http))
            setup_s = time.monotonic() - started
            seen = await load_and_measure(hub, sim, windows, window_s, warmup_s)
            steady = step_figures(seen, devices, setup_s)
            failover = await fail_over(hub, sim.ready["control_port"])
        finally:
            await hub.close()
    finally:
        await sim.close()
    return {
        "bench": "radios",
        "config": {
            "radios": RADIOS,
            "devices": devices,
            "slots_per_radio": slots,
            "signals_dbm": {"own": NEAR, "alternative": ALT, "other": FAR},
            "telemetry_hz": 50,
            "windows": windows,
            "window_s": window_s,
            "loop": loop_name(loop),
            "load": "a session per device, one phone per device",
        },
        "placement": placed,
        "steady": steady,
        "failover": failover,
    }


def lines(result: dict[str, Any]) -> list[tuple[str, Any, str] | str]:
    steady, failover = result["steady"], result["failover"]
    return [
        f"placement: {result['placement']}",
        f"lost: {steady['lost_at_phones']} at phones + {steady['device_frames_lost']} from "
        f"devices; sessions running {steady['sessions_running']}",
        ("e2e p99", steady["e2e_ms"]["p99"], "ms"),
        ("hub CPU", steady["hub_cpu_pct"], "%"),
        f"failover of {failover['radio']}: {failover['sessions_running_again']}/"
        f"{failover['devices']} sessions running again, all after {failover['all_running_s']} s "
        f"(first {failover['first_running_s']} s); moved {failover['moved']}; "
        f"placement after {failover['placement_after']}",
    ]


def measure(
    *,
    windows: int = 3,
    window_s: float = 2.0,
    warmup_s: float = 1.5,
    slots: int = SLOTS,
    loop: str = "auto",
) -> dict[str, Any]:
    return run_timed(
        measure_async(windows=windows, window_s=window_s, warmup_s=warmup_s, slots=slots, loop=loop)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=3, help="measured windows")
    parser.add_argument("--window-s", type=float, default=2.0)
    parser.add_argument("--slots", type=int, default=SLOTS, help="connection slots per radio")
    add_loop_argument(parser)
    run_main(parser, measure, lines, argv)


if __name__ == "__main__":
    main()
