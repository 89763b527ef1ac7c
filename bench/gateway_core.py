"""Gateway core: stop latency and scheduler behaviour, next to the write round-trip floor.

One process, one in-process virtual radio (``sim:N``), the real runtime (device manager,
sessions, scheduler, safety supervisor; no storage, no HTTP). Per repeat it measures:

* floor: the raw write-with-response round trip, ``BleakClient.write_gatt_char(...,
  response=True)`` of a KEEPALIVE to the control point of a simulated device the hub does not
  manage, through the same bumble backend (``runtime.devices.client_backend``): back to back
  (floors.py's figure), and isolated, each after the same idle pauses the stop cycles take (a
  loop that must wake up costs ~0.5 ms more; a STOP always comes to an idle loop);
* stop: ``SessionManager.stop`` on a running session -> the device's output off. The "off"
  instant is taken on ``time.perf_counter`` (uvloop's loop clock has 1 ms steps) where the
  simulated firmware decodes the STOP: its output stage drops at once (checked: the device
  reads 0 µA right after). Also request -> STOP confirmed (``stop()`` returned: the ACK is back);
* scheduler: sessions on every device at once, three of them through radio stalls of 100, 300
  and 500 ms (twice each); output gaps are counted from each device's output log (output at 0
  between the first onset and the end of the program), with lease expiries and NACKs; dispatch
  lateness is how late the streaming worker woke for its keepalive deadlines
  (``Streamer.lateness_ms``), p50/p99 over every session.

Prints one JSON object (medians over ``--repeats`` with min, max and spread, as floors.py does);
the spread goes to stderr. Read ratios against the floor of the same run, not absolute values.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any

from bleak import BleakClient
from harness.machine import machine
from harness.processes import add_loop_argument, loop_name, run_loop
from harness.radio import sim_address
from harness.report import print_result
from harness.stats import percentile, summarize

from ble import protocol as p
from ble.sim.peripheral import SimulatedDevice
from gateway.config import BleSettings, Settings
from gateway.programs import Program, ProgramStep
from gateway.runtime import Runtime
from gateway.session import Session

HANG_S = 30.0
STALLS_MS = (100, 300, 500)
PROGRAM_S = 6


def program(seconds: int) -> Program:
    step = ProgramStep(zone="cheeks", amplitude_ua=300, duration_s=seconds, move_cue_s=5)
    return Program(slug="bench-core", name="bench", steps=(step,))


class StopClock:
    """Loop time at which a simulated firmware decoded each STOP (wraps ``Firmware.handle``)."""

    def __init__(self, device: SimulatedDevice) -> None:
        self.stops: list[float] = []
        firmware = device.firmware
        original = firmware.handle

        def handle(data: bytes, *, encrypted: bool, now_ms: int) -> p.Response | None:
            if len(data) >= 2 and data[1] == p.Opcode.STOP:
                self.stops.append(time.perf_counter())
            return original(data, encrypted=encrypted, now_ms=now_ms)

        firmware.handle = handle  # type: ignore[method-assign]


async def wait_until(predicate: Any, timeout_s: float = HANG_S) -> None:
    """Poll the simulated device's state (it has no event to wait on); bounded."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling an observable, not waiting on a task
            await asyncio.sleep(0.002)


def pause_s(index: int) -> float:
    """The idle time before the index-th isolated write or stop: 5-45 ms, cycling."""
    return 0.005 + (index % 5) * 0.01


async def write_floor(
    runtime: Runtime, address: str, n: int, isolated_n: int
) -> dict[str, list[float]]:
    """Raw write-with-response round trips (ms) to an unmanaged device, same backend.

    ``back_to_back``: one after another, the loop kept busy (floors.py's figure).
    ``isolated``: each after an idle pause like the stop cycles' (the loop has to wake up for
    it, as it does for a STOP): the floor a single command is compared with.
    """
    await runtime.devices.forget(address)
    async with asyncio.timeout(HANG_S):  # forgotten until a new scan sees it
        while not any(d.address.upper() == address for d in await runtime.devices.scan(0.5)):
            pass
    device = runtime.devices.seen(address)
    client = BleakClient(device, backend=runtime.devices.client_backend)
    await client.connect()
    try:
        await client.pair()

        async def write(seq: int) -> float:
            data = bytes(p.Keepalive(seq=seq & 0xFFFF))
            start = time.perf_counter()
            await client.write_gatt_char(p.CONTROL_POINT_UUID, data, response=True)
            return (time.perf_counter() - start) * 1000

        for seq in range(20):  # warm-up
            await write(seq)
        back_to_back = [await write(seq) for seq in range(n)]
        isolated = []
        for seq in range(isolated_n):
            await asyncio.sleep(pause_s(seq))
            isolated.append(await write(seq))
        return {"back_to_back": back_to_back, "isolated": isolated}
    finally:
        await client.disconnect()


async def stop_latency(runtime: Runtime, index: int, cycles: int) -> dict[str, list[float]]:
    """Start a session, let output rise, stop it; ``cycles`` times on one device."""
    device = runtime.sim_devices[index]
    clock = StopClock(device)
    off: list[float] = []
    confirmed: list[float] = []
    for _ in range(cycles):
        session = await runtime.sessions.start(
            owner="bench",
            address=sim_address(index),
            program=program(5),
            level=5,
            consented=True,
        )
        await wait_until(lambda: device.sync().output_ua > 0)
        # Stop at varying phases of the streamer's rhythm, after an idle pause.
        await asyncio.sleep(pause_s(len(off)))
        before = len(clock.stops)
        start = time.perf_counter()
        await runtime.sessions.stop(session.id, actor="bench")
        done = time.perf_counter()
        if len(clock.stops) != before + 1 or device.sync().output_ua != 0:
            raise RuntimeError("STOP did not reach the device exactly once, or output is on")
        off.append((clock.stops[-1] - start) * 1000)
        confirmed.append((done - start) * 1000)
    return {"off": off, "confirmed": confirmed}


def output_gaps(log: list[tuple[int, int]]) -> int:
    """Times output fell to 0 between its first onset and its final fall."""
    levels = [ua for _, ua in log]
    on = [i for i, ua in enumerate(levels) if ua > 0]
    if not on:
        return 0
    window = levels[on[0] : on[-1] + 1]
    return sum(1 for a, b in itertools.pairwise(window) if a > 0 and b == 0)


async def scheduler_run(runtime: Runtime, devices: int) -> dict[str, Any]:
    """Every device streams a program; three ride out stalls. Gaps, lateness, lease, NACKs."""
    sims = runtime.sim_devices[:devices]
    marks = [len(sim.sync().output_log) for sim in sims]
    nacks = [sim.firmware.counters.nacks for sim in sims]
    leases = [sim.firmware.counters.lease_expiries for sim in sims]
    sessions: list[Session] = [
        await runtime.sessions.start(
            owner="bench",
            address=sim_address(i),
            program=program(PROGRAM_S),
            level=5,
            consented=True,
        )
        for i in range(devices)
    ]
    for at_s in (1.5, 3.5):
        await wait_until(lambda at_s=at_s: all(s.position_s >= at_s for s in sessions))
        for sim, stall_ms in zip(sims, STALLS_MS, strict=False):
            sim.stall(stall_ms)
    async with asyncio.timeout(HANG_S):
        await asyncio.gather(*(s.done.wait() for s in sessions))
    lateness = [ms for s in sessions if s.streamer for ms in s.streamer.lateness_ms]
    per_stall: dict[str, Any] = {}
    unstalled: list[dict[str, Any]] = []
    for index, sim in enumerate(sims):
        log = list(sim.sync().output_log)[max(0, marks[index] - 1) :]
        figures = {
            "output_gaps": output_gaps(log),
            "lease_expiries": sim.firmware.counters.lease_expiries - leases[index],
            "nacks": sim.firmware.counters.nacks - nacks[index],
            "completed": sessions[index].state.value == "completed",
        }
        if index < len(STALLS_MS):
            per_stall[f"stall_{STALLS_MS[index]}ms"] = figures
        else:
            unstalled.append(figures)
    return {"lateness_ms": lateness, "devices": per_stall | {"no_stall": unstalled}}


async def one_repeat(args: argparse.Namespace) -> dict[str, Any]:
    count = args.devices + 1  # one more, unmanaged, for the floor
    settings = Settings(ble=BleSettings(mode=f"sim:{count}", connection_slots=count), mdns=False)
    async with Runtime(settings, storage=False) as runtime:
        await runtime.wait_connected(HANG_S)
        floor = await write_floor(runtime, sim_address(args.devices), args.write_n, args.stop_n)
        stops = await stop_latency(runtime, 0, args.stop_n)
        scheduler = await scheduler_run(runtime, args.devices)
    return {"floor": floor, "stops": stops, "scheduler": scheduler}


def over(values: list[list[float]], q: float) -> dict[str, Any]:
    """The ``q``-th percentile of each repeat's samples, over repeats."""
    return summarize([percentile(v, q) for v in values])


def stall_figures(repeats: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stall length: output gaps, lease expiries, NACKs, completions over the repeats."""
    stalls: dict[str, dict[str, Any]] = {}
    for stall_ms in STALLS_MS:
        key = f"stall_{stall_ms}ms"
        runs = [r["scheduler"]["devices"][key] for r in repeats]
        stalls[key] = {
            "output_gaps": sum(run["output_gaps"] for run in runs),
            "lease_expiries": sum(run["lease_expiries"] for run in runs),
            "nacks": sum(run["nacks"] for run in runs),
            "completed": sum(run["completed"] for run in runs),
            "runs": len(runs),
        }
    return stalls


def measure(args: argparse.Namespace) -> dict[str, Any]:
    repeats = [run_loop(one_repeat(args), args.loop) for _ in range(args.repeats)]
    floors = [r["floor"]["back_to_back"] for r in repeats]
    isolated = [r["floor"]["isolated"] for r in repeats]
    offs = [r["stops"]["off"] for r in repeats]
    confirmed = [r["stops"]["confirmed"] for r in repeats]
    lateness = [r["scheduler"]["lateness_ms"] for r in repeats]
    stalls = stall_figures(repeats)
    others = [d for r in repeats for d in r["scheduler"]["devices"].get("no_stall", [])]
    gaps_total = sum(s["output_gaps"] for s in stalls.values()) + sum(
        d["output_gaps"] for d in others
    )
    off_p99 = over(offs, 99)
    isolated_p99 = over(isolated, 99)
    return {
        "scheduler": {
            "output_gaps": gaps_total,
            "dispatch_lateness_ms": {"p50": over(lateness, 50), "p99": over(lateness, 99)},
            "stalls": stalls,
            "unstalled_devices": {
                "sessions": len(others),
                "output_gaps": sum(d["output_gaps"] for d in others),
                "completed": sum(d["completed"] for d in others),
            },
        },
        "stop": {
            "request_to_output_off_ms": {"p99": off_p99, "p50": over(offs, 50)},
            "request_to_confirmed_ms": {"p99": over(confirmed, 99), "p50": over(confirmed, 50)},
            "output_off_p99_above_isolated_write_p99_ms": round(
                (off_p99["median"] or 0) - (isolated_p99["median"] or 0), 3
            ),
        },
        "floor": {
            "write_round_trip_ms": {"p50": over(floors, 50), "p99": over(floors, 99)},
            "isolated_write_round_trip_ms": {"p50": over(isolated, 50), "p99": isolated_p99},
        },
        "config": {
            "repeats": args.repeats,
            "devices": args.devices,
            "stop_cycles": args.stop_n,
            "writes": args.write_n,
            "stalls_ms": list(STALLS_MS),
            "program_s": PROGRAM_S,
            "loop": loop_name(args.loop),
            "machine": machine(),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", type=int, default=7, help="devices streaming at once")
    parser.add_argument("--stop-n", type=int, default=100, help="stop cycles per repeat")
    parser.add_argument("--write-n", type=int, default=1000, help="floor writes per repeat")
    add_loop_argument(parser)
    args = parser.parse_args(argv)
    if args.devices < len(STALLS_MS):
        parser.error(f"--devices must be at least {len(STALLS_MS)} (one per stall length)")
    started = time.monotonic()
    result = measure(args)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    floor, stop = result["floor"], result["stop"]
    late = result["scheduler"]["dispatch_lateness_ms"]
    figures = [
        ("floor write round trip p50", floor["write_round_trip_ms"]["p50"], "ms"),
        ("floor write round trip p99", floor["write_round_trip_ms"]["p99"], "ms"),
        ("floor isolated write p50", floor["isolated_write_round_trip_ms"]["p50"], "ms"),
        ("floor isolated write p99", floor["isolated_write_round_trip_ms"]["p99"], "ms"),
        ("stop -> output off p50", stop["request_to_output_off_ms"]["p50"], "ms"),
        ("stop -> output off p99", stop["request_to_output_off_ms"]["p99"], "ms"),
        ("stop -> confirmed p99", stop["request_to_confirmed_ms"]["p99"], "ms"),
        ("dispatch lateness p50", late["p50"], "ms"),
        ("dispatch lateness p99", late["p99"], "ms"),
    ]
    print_result(result, figures)


if __name__ == "__main__":
    main()
