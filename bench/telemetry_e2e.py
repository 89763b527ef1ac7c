"""Live telemetry end to end, and API stop: the gateway under uvicorn against the radio's floors.

A hub helper process runs ``create_app(settings)`` under uvicorn with ``ble.mode="sim:7"`` (the
simulated devices live in the hub process, as with ``mcgw serve --ble sim:7``); the phones are
20 raw WebSocket clients in another process (bench/ws_fanout.py), each subscribed to all 7
devices, so 7 x 50 Hz x 20 = 7,000 frames/s reach phones. In the hub process the bench wraps the
simulator's transmitter (never the gateway) to record ``time.monotonic_ns()`` right before each
telemetry notification goes on air, and the firmware to record when a STOP turns output off.

* telemetry latency: device notification -> phone reads the frame, joined per (device, frame)
  over ``--windows`` windows; split at the gateway's own receive stamp (``received_at``) into the
  BLE leg and the gateway leg (hub + WebSocket); frames lost; the hub's CPU and RSS;
* stop latency: with a session running on each device, ``POST /api/v1/sessions/{id}/stop`` from
  the orchestrator -> the device's firmware has turned output off (and the HTTP answer).

Compare with bench/floors.py in process (the sim and the central share the hub's process): the
BRIEF asks for telemetry p99 under 5 ms above the raw notification p99, and stop p99 under 5 ms
above one write-with-response round trip.

The hub and sim helper processes here are reused by bench/ws_fanout.py (``ble="none"``: no radio,
frames injected into the hub), bench/capacity.py (many devices, the sim in its own process) and
bench/footprint.py. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from floors import (
    Child,
    CpuMeter,
    bench_script,
    commands,
    emit,
    latency_stats,
    load_pickle,
    loop_name,
    memory_mib,
    run_loop,
    save_pickle,
    spread_line,
    summarize,
)

PEPPER = "bench-pepper"
START_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 90.0
SESSION_BODY = {"program": "quick-lift", "level": 1}
RUNNING_TIMEOUT_S = 10.0
GRACE_S = 0.5


# --- what the bench records inside a process that hosts simulated devices -----------------------


class AirRecorder:
    """Send time of every telemetry notification and time of every STOP, per simulated device.

    Wraps ``Transmitter._transmit`` and ``Firmware.handle`` of ble.sim (class-level, in this
    process only). Keys are the simulator's objects; ``by_address`` maps them at dump time.
    """

    def __init__(self) -> None:
        self.sends: dict[object, tuple[array[int], array[int]]] = {}
        self.stops: list[tuple[object, int]] = []

    def install(self) -> None:
        from ble import protocol as p
        from ble.sim.firmware import Firmware
        from ble.sim.transmitter import Outbound, Transmitter

        recorder = self
        transmit = Transmitter._transmit
        handle = Firmware.handle
        header, size = p.TELEMETRY_HEADER_SIZE, p.TELEMETRY_SAMPLE_SIZE

        async def _transmit(self: Transmitter, connection: Any, frame: Any) -> None:
            if frame.kind is Outbound.TELEMETRY:
                now = time.monotonic_ns()
                entry = recorder.sends.get(self)
                if entry is None:
                    entry = recorder.sends[self] = (array("i"), array("q"))
                payload = frame.payload
                for i in range(payload[2]):
                    offset = header + i * size
                    entry[0].append(int.from_bytes(payload[offset : offset + 2], "little"))
                    entry[1].append(now)
            await transmit(self, connection, frame)

        def _handle(self: Firmware, data: bytes, *, encrypted: bool, now_ms: int) -> Any:
            response = handle(self, data, encrypted=encrypted, now_ms=now_ms)
            if len(data) > 1 and data[1] == p.Opcode.STOP:
                recorder.stops.append((self, time.monotonic_ns()))
            return response

        Transmitter._transmit = _transmit  # type: ignore[method-assign]
        Firmware.handle = _handle  # type: ignore[method-assign]

    def dump(self, sims: list[Any]) -> dict[str, Any]:
        by_transmitter = {id(s.transmitter): s.address.upper() for s in sims}
        by_firmware = {id(s.firmware): s.address.upper() for s in sims}
        return {
            "sends": {
                by_transmitter[id(t)]: (frames, ns)
                for t, (frames, ns) in self.sends.items()
                if id(t) in by_transmitter
            },
            "stops": [(by_firmware.get(id(f), "?"), ns) for f, ns in self.stops],
        }


class GcPauses:
    """Garbage-collector pauses of this process, per generation (count, total and max ms)."""

    def __init__(self) -> None:
        self._started = 0
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}

    def install(self) -> None:
        import gc

        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
        else:
            self.pauses[info["generation"]].append((time.perf_counter_ns() - self._started) / 1e6)

    def snapshot(self) -> dict[str, Any]:
        return {
            f"gen{g}": {
                "count": len(p),
                "total_ms": round(sum(p), 1),
                "max_ms": round(max(p), 2) if p else 0,
            }
            for g, p in self.pauses.items()
        }

    def reset(self) -> None:
        for pauses in self.pauses.values():
            pauses.clear()


class LoopLag:
    """How late the event loop runs a timer due every 10 ms: a blocked loop shows up here."""

    PERIOD_S = 0.01

    def __init__(self) -> None:
        self.lateness_ms: list[float] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        deadline = time.monotonic()
        while True:
            deadline += self.PERIOD_S
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            late = time.monotonic() - deadline
            self.lateness_ms.append(late * 1000)
            if late > 1.0:
                deadline = time.monotonic()

    def snapshot(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in latency_stats(self.lateness_ms).items()}


# --- the hub helper process ----------------------------------------------------------------------


class HubChild(Child):
    ready: dict[str, Any]


async def start_hub(
    *,
    ble: str,
    loop: str = "auto",
    slots: int | None = None,
    record: bool = False,
    expect: int = 0,
) -> HubChild:
    """A hub helper process; returns once it serves and every device is connected.

    ``ble``: ``none`` (no radio: the fan-out bench injects frames), ``sim:N`` (devices in the hub
    process) or ``hci:tcp-client:HOST:PORT`` (devices in a sim helper process; the hub scans and
    manages the ``expect`` devices it finds).
    """
    config = {"ble": ble, "slots": slots, "record": record, "expect": expect}
    child = await Child.start(
        sys.executable,
        bench_script("telemetry_e2e.py"),
        "--hub",
        json.dumps(config),
        "--loop",
        loop_name(loop),
    )
    hub = HubChild(child.process, "hub")
    try:
        hub.ready = await hub.event("ready", START_TIMEOUT_S)
    except BaseException:
        await hub.close()
        raise
    return hub


async def hub_main(config: dict[str, Any]) -> None:
    """Child side: the API app with its gateway runtime, served by uvicorn on a free port."""
    import logging

    import uvicorn
    from ws_fanout import FAKE_DEVICE, Stepper, run_server_with_steps, sample, uvicorn_config

    from api.app import create_app
    from ble.mode import BleMode
    from gateway.config import Settings
    from gateway.runtime import Runtime
    from gateway.storage import repo

    logging.basicConfig(level=logging.WARNING, format="hub %(levelname)s %(name)s: %(message)s")
    ble: str = config["ble"]
    recorder = AirRecorder() if config.get("record") else None
    if recorder is not None:
        recorder.install()
    gc_pauses = GcPauses()
    gc_pauses.install()
    if os.environ.get("MCGW_BENCH_GC") == "off":
        # A diagnostic knob (bench/README.md): does a stall go away without the cyclic GC?
        import gc

        gc.disable()
    count = 0 if ble == "none" else BleMode.parse(ble).sim_devices
    slots = config.get("slots") or max(count, config.get("expect") or 0, 7)
    tmp = tempfile.mkdtemp(prefix="mcgw-bench-")
    settings = Settings(
        hub_id="bench-hub",
        ble={"mode": "sim:1" if ble == "none" else ble, "connection_slots": min(slots, 20)},
        db={"url": f"sqlite:///{tmp}/mcgw.db"},
        mdns=False,
        token_pepper=PEPPER,
        log_level="WARNING",
    )

    class BenchRuntime(Runtime):
        """The product's runtime; the bench only removes the radio or widens the slots."""

        def __init__(self, settings: Settings) -> None:
            super().__init__(settings)
            if slots > 20:
                # BleSettings caps connection_slots at 20 (one radio's practical limit); the
                # capacity target is about the Python side beyond any single radio.
                self.devices._slots = asyncio.Semaphore(slots)

        async def open_ble(self) -> None:
            if ble != "none":
                await super().open_ble()

    app = create_app(settings, runtime_factory=BenchRuntime)
    server = uvicorn.Server(uvicorn_config(app))

    def runtime() -> Runtime:
        current: Runtime = app.state.runtime
        return current

    lag = LoopLag()

    async def before_ready(_port: int) -> dict[str, Any]:
        rt = runtime()
        lag.start()
        if ble.startswith("hci:"):
            await adopt_all(rt, config.get("expect") or 0)
        await rt.wait_connected(CONNECT_TIMEOUT_S)

        def make(*, session: Any) -> str:
            user = repo.create_user(session=session, name="bench", is_admin=True)
            repo.accept_consent(session=session, user_id=user.id, version="bench")
            return repo.create_token(session=session, user_id=user.id, name="b", pepper=PEPPER)[1]

        token = await rt.db(make)
        if ble == "none":
            from gateway.devices import Discovered

            rt.devices.discovered[FAKE_DEVICE] = Discovered(FAKE_DEVICE, "fake", -50, 88, "idle")
        return {
            "token": token,
            "devices": rt.devices.addresses(),
            "base_url": f"http://127.0.0.1:{_port}",
        }

    def inject(n: int) -> None:
        runtime().hub.publish(
            FAKE_DEVICE, sample(n), session_id=None, zone=None, received_at=time.monotonic()
        )

    async def on_command(message: dict[str, Any]) -> dict[str, Any] | None:
        rt = runtime()
        if message.get("cmd") == "dump":
            data = recorder.dump(rt.sim_devices) if recorder else {"sends": {}, "stops": []}
            data["counters"] = counters(rt)
            data["gc"] = gc_pauses.snapshot()
            data["loop_lag_ms"] = lag.snapshot()
            save_pickle(message["path"], data)
            return {"event": "dumped"}
        if message.get("cmd") == "counters":
            return {"event": "counters", **counters(rt)}
        if message.get("cmd") == "reset":
            gc_pauses.reset()
            lag.lateness_ms.clear()
            return {"event": "reset"}
        if message.get("cmd") == "profile":
            import cProfile

            # Everything of the app runs on the event loop's thread, so this sees all of it.
            profiler = cProfile.Profile()
            profiler.enable()
            await asyncio.sleep(message["seconds"])
            profiler.disable()
            profiler.dump_stats(message["path"])
            return {"event": "profiled"}
        return None

    try:
        await run_server_with_steps(
            server,
            Stepper(inject) if ble == "none" else None,
            "/api/v1/ws",
            on_command=on_command,
            before_ready=before_ready,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def adopt_all(rt: Any, expect: int) -> None:
    """hci mode: scan until ``expect`` devices are seen, then manage each (as a claim would)."""
    found: dict[str, Any] = {}
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        while len(found) < expect:
            for item in await rt.devices.scan(timeout_s=0.5):
                found[item.address] = item
    for address in sorted(found):
        rt.devices.manage(rt.devices.seen(address), name=found[address].name)


def counters(rt: Any) -> dict[str, Any]:
    from dataclasses import asdict

    links = {}
    for managed in rt.devices.all():
        if managed.link is not None:
            links[managed.address] = asdict(managed.link.counters)
    return {"hub": asdict(rt.hub.counters), "links": links}


async def dump_hub(hub: Child) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as handle:
        path = handle.name
    try:
        await hub.command({"cmd": "dump", "path": path}, "dumped", 60)
        data: dict[str, Any] = load_pickle(path)
        return data
    finally:
        os.unlink(path)


# --- the sim helper process (devices in their own process, over HCI over TCP) -------------------


async def start_sim(devices: int, *, record: bool = True, loop: str = "auto") -> HubChild:
    child = await Child.start(
        sys.executable,
        bench_script("telemetry_e2e.py"),
        "--sim",
        json.dumps({"devices": devices, "record": record}),
        "--loop",
        loop_name(loop),
    )
    sim = HubChild(child.process, "sim")
    try:
        sim.ready = await sim.event("ready", START_TIMEOUT_S)
    except BaseException:
        await sim.close()
        raise
    return sim


async def sim_main(config: dict[str, Any]) -> None:
    """Child side: N simulated devices on a virtual radio, served over HCI over TCP."""
    import logging

    from ble.bumble.hci_server import HciTcpServer
    from ble.bumble.radio import VirtualRadio
    from ble.sim.fleet import start_sim_devices, stop_sim_devices

    logging.basicConfig(level=logging.WARNING, format="sim %(levelname)s %(name)s: %(message)s")
    recorder = AirRecorder() if config.get("record") else None
    if recorder is not None:
        recorder.install()
    radio = VirtualRadio()
    sims = []
    lag = LoopLag()
    lag.start()
    try:
        sims = await start_sim_devices(radio, config["devices"])
        async with HciTcpServer(radio, port=0) as server:
            emit("ready", port=server.port, pid=os.getpid(), devices=[s.address for s in sims])
            async for message in commands():
                if message.get("cmd") == "dump":
                    data = recorder.dump(sims) if recorder else {"sends": {}, "stops": []}
                    data["loop_lag_ms"] = lag.snapshot()
                    save_pickle(message["path"], data)
                    emit("dumped")
                elif message.get("cmd") == "reset":
                    lag.lateness_ms.clear()
                    emit("reset")
    finally:
        await stop_sim_devices(sims)
        await radio.close()


# --- joining what was sent with what phones read --------------------------------------------------


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


# --- the orchestrator ---------------------------------------------------------------------------


def http_client(base_url: str, token: str) -> Any:
    import httpx

    return httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
    )


async def claim_all(http: Any, devices: list[str]) -> None:
    for address in devices:
        response = await http.post(f"/api/v1/devices/{address}/claim")
        response.raise_for_status()


async def wait_running(http: Any, session_id: str) -> None:
    async with asyncio.timeout(RUNNING_TIMEOUT_S):
        while True:
            response = await http.get(f"/api/v1/sessions/{session_id}")
            response.raise_for_status()
            state = response.json()["state"]
            if state == "running":
                return
            if state not in ("pending", "starting"):
                raise RuntimeError(f"session {session_id} is {state}, expected running")
            await asyncio.sleep(0.02)


async def start_all(http: Any, devices: list[str]) -> list[str]:
    """A running session on every device (quick-lift, level 1)."""
    started = await asyncio.gather(
        *(http.post("/api/v1/sessions", json={"device": a, **SESSION_BODY}) for a in devices)
    )
    ids = []
    for response in started:
        if response.status_code != 201:
            raise RuntimeError(f"session start failed: {response.status_code} {response.text}")
        ids.append(response.json()["id"])
    await asyncio.gather(*(wait_running(http, i) for i in ids))
    return ids


class WsStopper:
    """Stops sessions over one authenticated WebSocket (no per-request token check)."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.ws: Any = None
        self._ids = 0

    async def __aenter__(self) -> WsStopper:
        import websockets

        self.ws = await websockets.connect(
            self.url, subprotocols=["mcgw.v1", f"bearer.{self.token}"], compression=None
        )
        await self.ws.recv()  # hello
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.ws.close()

    async def stop(self, session_id: str) -> None:
        self._ids += 1
        request = f"stop-{self._ids}"
        await self.ws.send(json.dumps({"type": "stop", "id": request, "session_id": session_id}))
        async with asyncio.timeout(10):
            while True:
                reply = json.loads(await self.ws.recv())
                if reply.get("id") == request:
                    if reply["type"] != "ack":
                        raise RuntimeError(f"WebSocket stop refused: {reply}")
                    return


async def stop_cycles(
    http: Any, devices: list[str], cycles: int, ws: WsStopper | None = None
) -> list[tuple[str, int, int]]:
    """Start a session on every device, then stop them one by one (over REST, or ``ws``):
    (device, sent, answered)."""
    samples = []
    for _ in range(cycles):
        ids = await start_all(http, devices)
        await asyncio.sleep(0.3)  # output ramping
        samples.extend(await stop_each(http, devices, ids, ws))
        await asyncio.sleep(0.2)
    return samples


async def stop_each(
    http: Any, devices: list[str], ids: list[str], ws: WsStopper | None = None
) -> list[tuple[str, int, int]]:
    samples = []
    for address, session_id in zip(devices, ids, strict=True):
        sent = time.monotonic_ns()
        if ws is None:
            response = await http.post(f"/api/v1/sessions/{session_id}/stop")
            answered = time.monotonic_ns()
            response.raise_for_status()
        else:
            await ws.stop(session_id)
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
) -> dict[str, Any]:
    from ws_fanout import save_phones, start_phones

    hub = await start_hub(ble=f"sim:{devices}", loop=loop, record=True)
    async with hub:
        ready = hub.ready
        addresses: list[str] = ready["devices"]
        async with http_client(ready["base_url"], ready["token"]) as http:
            await claim_all(http, addresses)
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
            stop_runs, ws_runs = [], []
            async with WsStopper(ready["url"], ready["token"]) as ws:
                for _ in range(windows):
                    samples = await stop_cycles(http, addresses, stop_cycles_per_repeat)
                    stop_runs.append(stop_figures(samples, (await dump_hub(hub))["stops"]))
                    samples = await stop_cycles(http, addresses, stop_cycles_per_repeat, ws)
                    ws_runs.append(stop_figures(samples, (await dump_hub(hub))["stops"]))
            stop_profile = await profile_stops(hub, http, addresses) if profile else None
            hub_counters = dump["counters"]["hub"]
            hub_gc, hub_lag = dump["gc"], dump["loop_lag_ms"]
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
        "hub_gc_pauses": hub_gc,
        "hub_loop_lag_ms": hub_lag,
        "phones": {"dropped": records["dropped"], "gaps": records["gaps"]},
        "hub_counters": {
            k: hub_counters[k] for k in ("frames_in", "frames_dropped", "device_frames_lost")
        },
        "stop": {
            "output_off_ms": {
                q: summarize([r["output_off_ms"][q] for r in stop_runs]) for q in ("p50", "p99")
            },
            "http_answer_ms": {
                q: summarize([r["http_answer_ms"][q] for r in stop_runs]) for q in ("p50", "p99")
            },
            "n_per_repeat": stop_runs[0]["output_off_ms"]["n"] if stop_runs else 0,
            "missing": sum(r["missing"] for r in stop_runs),
        },
        "stop_ws": {
            "output_off_ms": {
                q: summarize([r["output_off_ms"][q] for r in ws_runs]) for q in ("p50", "p99")
            },
            "ack_ms": {
                q: summarize([r["http_answer_ms"][q] for r in ws_runs]) for q in ("p50", "p99")
            },
            "missing": sum(r["missing"] for r in ws_runs),
        },
    }
    if stop_profile:
        result["stop_profile"] = stop_profile
    if profile:
        result["profile"] = await profile_hub(devices, clients, loop)
    return result


def summarize_windows(windows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for leg in ("e2e_ms", "ble_leg_ms", "gateway_leg_ms"):
        out[leg] = {q: summarize([w[leg][q] for w in windows]) for q in ("p50", "p99", "max")}
    out["lost"] = sum(w["lost"] for w in windows)
    out["expected"] = sum(w["expected"] for w in windows)
    out["delivered_per_s"] = summarize([w["delivered_per_s"] for w in windows], 0)
    out["hub_cpu_pct"] = summarize([w["hub_cpu_pct"] for w in windows], 1)
    out["hub_rss_mib"] = summarize([w["hub_rss_mib"] for w in windows], 1)
    return out


async def profile_hub(devices: int, clients: int, loop: str, seconds: float = 4.0) -> list[str]:
    """Top functions of the hub process under the same load (cProfile, cumulative order)."""
    from ws_fanout import start_phones

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


async def profile_stops(hub: Child, http: Any, devices: list[str]) -> list[str]:
    """Where a REST stop spends its time: cProfile of the hub while only stops run."""
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
        return project_calls(path, len(devices))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def project_calls(path: str, per: int, limit: int = 16) -> list[str]:
    """The request path's functions by cumulative time per stop (event-loop thread only; time
    waiting for the storage thread is not in it; "calls" counts coroutine resumptions)."""
    import pstats

    stats = pstats.Stats(path)
    keep = ("/api/", "/gateway/sessions", "/gateway/safety", "/ble/link", "fastapi/", "pydantic/")
    skip = ("/live.py", "websockets", "_handle_telemetry", "_on_telemetry")
    rows = []
    for (filename, line, name), (_cc, calls, _own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{filename}:{name}"
        if not any(part in where for part in keep) or any(part in where for part in skip):
            continue
        short = "/".join(Path(filename).parts[-2:])
        rows.append((cumulative, calls, f"{short}:{line}({name})"))
    rows.sort(reverse=True)
    return [
        f"{cumulative / per * 1000:7.2f} ms per stop, {calls:6d} calls  {where}"
        for cumulative, calls, where in rows[:limit]
    ]


def top_functions(path: str, limit: int = 12) -> list[str]:
    """The ``limit`` functions with the most own time in a cProfile file, one line each."""
    import pstats

    stats = pstats.Stats(path)
    rows = []
    for (filename, line, name), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = "/".join(Path(filename).parts[-2:]) if filename != "~" else "builtin"
        rows.append((own, cumulative, calls, f"{short}:{line}({name})"))
    total = sum(r[0] for r in rows) or 1
    rows.sort(reverse=True)
    return [
        f"{own / total * 100:5.1f} % own, {cumulative:6.3f} s cum, {calls:8d} calls  {where}"
        for own, cumulative, calls, where in rows[:limit]
    ]


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
) -> dict[str, Any]:
    started = time.perf_counter()
    result = asyncio.run(
        measure_async(
            devices=devices,
            clients=clients,
            windows=windows,
            window_s=window_s,
            warmup_s=warmup_s,
            stop_cycles_per_repeat=stop_cycles_per_repeat,
            loop=loop,
            profile=profile,
        )
    )
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def report_spread(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    telemetry = result["telemetry"]
    echo(spread_line("telemetry e2e p50", telemetry["e2e_ms"]["p50"], "ms"))
    echo(spread_line("telemetry e2e p99", telemetry["e2e_ms"]["p99"], "ms"))
    echo(spread_line("telemetry gateway leg p99", telemetry["gateway_leg_ms"]["p99"], "ms"))
    echo(spread_line("hub CPU", telemetry["hub_cpu_pct"], "% of a core"))
    echo(f"frames lost: {telemetry['lost']} of {telemetry['expected']}")
    echo(spread_line("API stop -> output off p50", result["stop"]["output_off_ms"]["p50"], "ms"))
    echo(spread_line("API stop -> output off p99", result["stop"]["output_off_ms"]["p99"], "ms"))
    echo(spread_line("WS stop -> output off p99", result["stop_ws"]["output_off_ms"]["p99"], "ms"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=7)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--windows", type=int, default=3, help="repeats")
    parser.add_argument("--window-s", type=float, default=5.0)
    parser.add_argument("--stop-cycles", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="also profile the hub (cProfile)")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--hub", help=argparse.SUPPRESS)
    parser.add_argument("--sim", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hub:
        run_loop(hub_main(json.loads(args.hub)), args.loop)
        return
    if args.sim:
        run_loop(sim_main(json.loads(args.sim)), args.loop)
        return
    result = measure(
        devices=args.devices,
        clients=args.clients,
        windows=args.windows,
        window_s=args.window_s,
        stop_cycles_per_repeat=args.stop_cycles,
        loop=args.loop,
        profile=args.profile,
    )
    report_spread(result, lambda line: print(line, file=sys.stderr))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
