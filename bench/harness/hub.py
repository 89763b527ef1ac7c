"""The hub and sim helper processes: the gateway under uvicorn, simulated devices over HCI.

``start_hub(ble=...)`` starts the API app with its gateway runtime (``create_app``) under
uvicorn in a helper process and returns once it serves and every device is connected; its
``ready`` event carries the base URL, the WebSocket URL, an admin token and the devices.
``start_sim(n)`` starts N simulated devices on a virtual radio served over HCI over TCP. Both
answer ``dump`` (what ``AirRecorder`` saw, counters, GC pauses, loop lag), ``reset`` and, the
hub, ``counters`` and ``profile``. The bench only removes the radio or widens the connection
slots; everything else is the product as ``mcgw serve`` runs it. Nothing here judges a figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from typing import Any

from harness import radio
from harness.probes import AirRecorder, GcPauses, LoopLag
from harness.processes import Child, commands, emit, save_pickle, start_helper
from harness.servers import FAKE_DEVICE, Stepper, run_server_with_steps, sample, uvicorn_config

PEPPER = "bench-pepper"
START_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 90.0
PHONES_MAX = 1000
"""WebSocket connections the bench hub accepts, all on one token."""


# --- the parent side -----------------------------------------------------------------------------


async def start_hub(
    *,
    ble: str,
    loop: str = "auto",
    slots: int | None = None,
    record: bool = False,
    expect: int = 0,
    cpus: list[int] | None = None,
    auto_connect: bool = True,
) -> Child:
    """A hub helper process; returns once it serves and every device is connected.

    ``cpus``: pin the hub to these cores (``[0]``: the Pi-class run on one core).
    ``auto_connect=False``: no background scans take devices on by themselves (the product's
    ``ble.auto_connect``); with ``expect=0`` the hub then looks after nothing until ``adopt``.

    ``ble``: ``none`` (no radio: the fan-out bench injects frames), ``sim:N`` (devices in the hub
    process) or ``hci:tcp-client:HOST:PORT`` (devices in a sim helper process; the hub scans and
    manages the ``expect`` devices it finds).
    """
    config = {
        "ble": ble,
        "slots": slots,
        "record": record,
        "expect": expect,
        "cpus": cpus,
        "auto_connect": auto_connect,
    }
    return await start_helper("hub", config, loop=loop, timeout_s=START_TIMEOUT_S)


async def start_sim(
    devices: int, *, record: bool = True, loop: str = "auto", control: bool = False
) -> Child:
    """A sim helper process with ``devices`` simulated devices, served over HCI over TCP.

    ``control``: also serve the simulator's control endpoint (its ``ready`` names
    ``control_port``), as ``mcgw sim --control-port`` does: scenarios, and per radio (each HCI
    client) ``set_signal``, ``deaf`` and ``drop``."""
    config = {"devices": devices, "record": record, "control": control}
    return await start_helper("sim", config, loop=loop, timeout_s=START_TIMEOUT_S)


async def adopt(hub: Child, expect: int) -> list[str]:
    """Have a hub started with ``auto_connect=False`` scan for ``expect`` devices and look after
    them; returns their addresses once every one is connected."""
    reply = await hub.command({"cmd": "adopt", "expect": expect}, "adopted", 2 * CONNECT_TIMEOUT_S)
    devices: list[str] = (reply or {})["devices"]
    return devices


async def dump_hub(hub: Child) -> dict[str, Any]:
    """What a hub or sim helper recorded (sends, stops, counters, GC pauses, loop lag)."""
    data: dict[str, Any] = await hub.fetch("dump", "dumped", 60)
    return data


# --- the hub process -----------------------------------------------------------------------------


def hub_settings(ble: str, slots: int, tmp: str, auto_connect: bool = True) -> Any:
    """The settings of ``mcgw serve`` for the bench (SQLite in ``tmp``, no mDNS)."""
    from gateway.config import Settings

    return Settings(
        hub_id="bench-hub",
        ble={
            "mode": "sim:1" if ble == "none" else ble,
            "connection_slots": min(slots, 20),
            "auto_connect": auto_connect,
        },
        db={"url": f"sqlite:///{tmp}/mcgw.db"},
        # Every phone of a benchmark uses the one bench token: lift the per-token and total
        # WebSocket limits (8 and 256 by default) above the largest load (100 clients).
        api={"ws_max_per_token": PHONES_MAX, "ws_max_connections": PHONES_MAX},
        mdns=False,
        token_pepper=PEPPER,
        log_level="WARNING",
    )


def bench_runtime(ble: str, slots: int) -> type[Any]:
    """The product's runtime; the bench only removes the radio or widens the slots."""
    from gateway.runtime import Runtime

    class BenchRuntime(Runtime):
        def __init__(self, settings: Any) -> None:
            super().__init__(settings)
            if slots > 20:
                # BleSettings caps connection_slots at 20 (one radio's practical limit); the
                # capacity target is about the Python side beyond any single radio.
                for radio in self.devices.radios:
                    radio.slots = slots

        async def open_ble(self) -> None:
            if ble != "none":
                await super().open_ble()

    return BenchRuntime


async def adopt_all(rt: Any, expect: int) -> None:
    """hci mode: scan until ``expect`` devices are seen, then manage each (as a claim would)."""
    found: dict[str, Any] = {}
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        while len(found) < expect:
            for item in await rt.devices.scan(timeout_s=0.5):
                found[item.address] = item
    for address in sorted(found):
        rt.devices.manage(rt.devices.seen(address), name=found[address].name)


def managed_addresses(rt: Any) -> list[str]:
    """The addresses of the devices the hub manages, sorted."""
    return sorted(rt.devices.addresses())


def counters(rt: Any) -> dict[str, Any]:
    links = {}
    for managed in rt.devices.all():
        if managed.link is not None:
            links[managed.address] = asdict(managed.link.counters)
    return {"hub": asdict(rt.hub.counters), "links": links}


def admin_token(session: Any) -> str:
    """An admin who has consented, and a token of theirs (runs on the storage thread)."""
    from gateway.storage import repo

    user = repo.create_user(session=session, name="bench", is_admin=True)
    repo.accept_consent(session=session, user_id=user.id, version="bench")
    return repo.create_token(session=session, user_id=user.id, name="b", pepper=PEPPER)[1]


async def profile(seconds: float, path: str) -> None:
    """cProfile of this process's event-loop thread (everything of the app runs on it)."""
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    await asyncio.sleep(seconds)
    profiler.disable()
    profiler.dump_stats(path)


class Hub:
    """Child side: the app, what is recorded in its process, and its answers to commands."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.ble: str = config["ble"]
        self.app: Any = None
        self.recorder = AirRecorder() if config.get("record") else None
        if self.recorder is not None:
            self.recorder.install()
        self.gc_pauses = GcPauses()
        self.gc_pauses.install()
        self.lag = LoopLag()

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    async def before_ready(self, port: int) -> dict[str, Any]:
        rt = self.runtime
        self.lag.start()
        if self.ble != "none" and parse_mode(self.ble).kind == "hci":
            await adopt_all(rt, self.config.get("expect") or 0)
        await rt.wait_connected(CONNECT_TIMEOUT_S)
        token = await rt.db(lambda *, session: admin_token(session))
        await rt.access_changed()  # the hub knows the new token before a phone shows it
        if self.ble == "none":
            from gateway.devices import Discovered

            rt.devices.discovered[FAKE_DEVICE] = Discovered(FAKE_DEVICE, "fake", -50, 88, "idle")
        return {
            "token": token,
            "devices": managed_addresses(rt),
            "base_url": f"http://127.0.0.1:{port}",
        }

    def inject(self, n: int) -> None:
        self.runtime.hub.publish(
            FAKE_DEVICE, sample(n), session_id=None, zone=None, received_at=time.monotonic()
        )

    async def on_command(self, message: dict[str, Any]) -> dict[str, Any] | None:
        rt, cmd = self.runtime, message.get("cmd")
        if cmd == "dump":
            recorder = self.recorder
            data = recorder.dump(rt.sim_devices) if recorder else {"sends": {}, "stops": []}
            data["counters"] = counters(rt)
            data["gc"] = self.gc_pauses.snapshot()
            data["loop_lag_ms"] = self.lag.snapshot()
            save_pickle(message["path"], data)
            return {"event": "dumped"}
        if cmd == "counters":
            return {"event": "counters", **counters(rt)}
        if cmd == "adopt":
            await adopt_all(rt, message["expect"])
            await rt.wait_connected(CONNECT_TIMEOUT_S)
            return {"event": "adopted", "devices": managed_addresses(rt)}
        if cmd == "reset":
            self.gc_pauses.reset()
            self.lag.lateness_ms.clear()
            return {"event": "reset"}
        if cmd == "profile":
            await profile(message["seconds"], message["path"])
            return {"event": "profiled"}
        return None


async def hub_main(config: dict[str, Any]) -> None:
    """Child side: the API app with its gateway runtime, served by uvicorn on a free port."""
    import uvicorn

    from api.app import create_app

    logging.basicConfig(level=logging.WARNING, format="hub %(levelname)s %(name)s: %(message)s")
    ble: str = config["ble"]
    hub = Hub(config)  # installs the recorders before the app builds anything
    if os.environ.get("MCGW_BENCH_GC") == "off":
        # A diagnostic knob (bench/README.md): does a stall go away without the cyclic GC?
        import gc

        gc.disable()
    count = 0 if ble == "none" else parse_mode(ble).sim_devices
    slots = config.get("slots") or max(count, config.get("expect") or 0, 7)
    tmp = tempfile.mkdtemp(prefix="mcgw-bench-")
    settings = hub_settings(ble, slots, tmp, auto_connect=config.get("auto_connect", True))
    hub.app = create_app(settings, runtime_factory=bench_runtime(ble, slots))
    server = uvicorn.Server(uvicorn_config(hub.app))
    try:
        await run_server_with_steps(
            server,
            Stepper(hub.inject) if ble == "none" else None,
            "/api/v1/ws",
            on_command=hub.on_command,
            before_ready=hub.before_ready,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- the sim process -----------------------------------------------------------------------------


async def sim_main(config: dict[str, Any]) -> None:
    """Child side: N simulated devices on a virtual radio, served over HCI over TCP."""
    logging.basicConfig(level=logging.WARNING, format="sim %(levelname)s %(name)s: %(message)s")
    recorder = AirRecorder() if config.get("record") else None
    if recorder is not None:
        recorder.install()
    air = radio.virtual_radio()
    sims: list[Any] = []
    lag = LoopLag()
    lag.start()
    try:
        sims = await radio.start_simulated_devices(air, config["devices"])
        async with contextlib.AsyncExitStack() as stack:
            server = await stack.enter_async_context(radio.hci_tcp_server(air, port=0))
            extra = {}
            if config.get("control"):
                control = await stack.enter_async_context(radio.control_server(sims, server))
                extra["control_port"] = control.port
            devices = [s.address for s in sims]
            emit("ready", port=server.port, pid=os.getpid(), devices=devices, **extra)
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
        for sim in reversed(sims):
            await sim.stop()
        await air.close()


def parse_mode(ble: str) -> Any:
    """The product's own reading of a ``--ble`` value, its first radio when it lists several
    (``none`` is the bench's: no radio)."""
    from ble.mode import BleModes

    return BleModes.parse(ble).first
