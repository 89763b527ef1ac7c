"""Footprint: time to ready, resident memory and idle CPU of a gateway process.

Two set-ups, each a real server process started the way a user starts it:

* ``sim:7``: ``mcgw serve --ble sim:7`` (or, while the CLI has no ``serve`` yet, the same app
  under ``uvicorn.run`` from ``python -c``). ``--launches`` times: process start -> the first
  ``GET /api/v1/health`` answering 200 (time to ready, on a new database: its migrations run
  in a child process), -> /metrics showing 7 devices bonded, then RSS, and the CPU the process
  uses over ``--idle-s`` seconds with no client and no session; then a restart on that same
  database (time to ready again, the usual start).
  The 7 simulated devices live in this process, so their cost is in these figures.
* ``hci``: the gateway alone, its 7 devices in a sim helper process (HCI over TCP). Idle RSS and
  CPU with no device, then again once the 7 are claimed (over REST, as a phone does) and
  connected, then while a session runs on each of the 7 and 20 phones (another process) watch
  all 7 at the full rate. This is the honest figure for the BRIEF's footprint target. It runs
  twice: as started, and pinned to one core (``taskset -c 0``, ``hci_pinned``), the Pi-class
  run.
* ``import_profile``: the same gateway alone with its 7 devices, started with every import's
  resident memory booked to its package (bench/harness/imports.py): the RSS per package.

* ``ring``: what a full telemetry replay ring costs (tracemalloc, in this process): bytes per
  frame and for 7 devices, since the streaming figure is read before the rings are full.

Both pass ``MCGW_MDNS=false`` and a throw-away SQLite database. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import ROOT
from harness.hub import start_sim
from harness.imports import package_table, profiled_command
from harness.phones import start_phones
from harness.processes import CpuMeter, free_port, helper_log, memory_mib, run_timed, stop_process
from harness.report import run_main
from harness.sessions import claim_all, http_client, start_all
from harness.stats import summarize

PEPPER = "bench-pepper"
READY_TIMEOUT_S = 60.0
POLL_S = 0.01
SETTLE_S = 1.0
DEVICES = 7
PHONES = 20
STREAM_WARMUP_S = 2.0
PIN = ("taskset", "-c", "0")

SERVE_SNIPPET = """\
import uvicorn
from api.app import create_app
from gateway.config import Settings

settings = Settings()
uvicorn.run(
    create_app(settings), host=settings.api.host, port=settings.api.port,
    log_level="warning", ws_per_message_deflate=False,
)
"""


IMPORT_STEPS = (
    ("python", ""),
    ("+ fastapi, uvicorn", "import fastapi, uvicorn"),
    ("+ sqlmodel, sqlalchemy", "import sqlmodel, sqlalchemy"),
    ("+ bleak", "import bleak, bleak_retry_connector"),
    ("+ bumble", "import bumble.device, bumble.transport"),
    ("+ api.app (everything)", "import api.app, gateway.runtime, ble.sim.peripheral"),
)

IMPORT_SNIPPET = """\
import json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
steps = json.loads(sys.argv[1])
out = {}
for name, statement in steps:
    exec(statement)
    out[name] = round(rss(), 1)
print(json.dumps(out))
"""


def import_rss() -> dict[str, float]:
    """Resident memory of a fresh interpreter after each import, cumulatively (MiB)."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_SNIPPET, json.dumps(IMPORT_STEPS)],
        capture_output=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def serve_command() -> tuple[list[str], str]:
    """How to start a server: ``mcgw serve`` when the CLI has it, else ``python -c``."""
    mcgw = Path(sys.executable).with_name("mcgw")
    if mcgw.exists():
        probe = subprocess.run(
            [str(mcgw), "serve", "--help"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [str(mcgw), "serve"], "mcgw serve"
    return [sys.executable, "-c", SERVE_SNIPPET], "python -c uvicorn.run(create_app(settings))"


def server_env(db_path: Path, port: int, ble: str) -> dict[str, str]:
    root = str(ROOT)
    return dict(
        os.environ,
        MCGW_BLE__MODE=ble,
        MCGW_DB__URL=f"sqlite:///{db_path}",
        MCGW_MDNS="false",
        # Devices are claimed over REST, as a phone does: no background auto-connect, so
        # "no device" really has none.
        MCGW_BLE__AUTO_CONNECT="false",
        MCGW_API__HOST="127.0.0.1",
        MCGW_API__PORT=str(port),
        MCGW_HUB_ID="bench-footprint",
        MCGW_TOKEN_PEPPER=PEPPER,
        MCGW_LOG_LEVEL="WARNING",
        # The phones share one token; a hub allows 8 sockets per token by default.
        MCGW_API__WS_MAX_PER_TOKEN=str(PHONES + 4),
        PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )


def start_server(
    ble: str, db_path: Path, *, import_profile: Path | None = None, pinned: bool = False
) -> tuple[subprocess.Popen[bytes], int, float, str]:
    """Start a server; return it, its port, the start time and how it was started.

    With ``import_profile``, the server books every import's resident memory to its package and
    writes the table there when it exits (bench/harness/imports.py).
    """
    command, how = serve_command()
    port = free_port()
    if how == "mcgw serve":
        args = ["--ble", ble, "--host", "127.0.0.1", "--port", str(port)]
        command = [*command, *args]
        if import_profile is not None:
            command = profiled_command(import_profile, ["serve", *args])
    if pinned:
        command = [*PIN, *command]  # taskset execs the server: same pid, every thread pinned
    started = time.monotonic()
    process = subprocess.Popen(
        command, env=server_env(db_path, port, ble), stdout=helper_log(), stderr=helper_log()
    )
    return process, port, started, how


async def wait_ready(port: int, process: subprocess.Popen[bytes]) -> float:
    """Poll /api/v1/health until it answers 200; the monotonic time it did."""
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as http:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited ({process.returncode}) while starting")
                try:
                    if (await http.get("/api/v1/health")).status_code == 200:
                        return time.monotonic()
                except httpx.TransportError:
                    pass
                await asyncio.sleep(POLL_S)


async def wait_bonded(port: int, count: int) -> float:
    """Poll /metrics until ``count`` devices are bonded; the monotonic time they were."""
    import httpx

    wanted = f'mcgw_devices{{state="bonded"}} {float(count)}'
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as http:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                if wanted in (await http.get("/metrics")).text:
                    break
                await asyncio.sleep(0.05)
    return time.monotonic()


async def idle(pid: int, seconds: float, parts: int = 1) -> list[float]:
    """CPU % of a core over ``seconds``, in ``parts`` consecutive windows."""
    meter = CpuMeter(pid)
    out = []
    for _ in range(parts):
        meter.start()
        await asyncio.sleep(seconds / parts)
        out.append(round(meter.stop(), 2))
    return out


async def sim7_launch(idle_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        process, port, started, how = start_server(f"sim:{DEVICES}", Path(tmp) / "mcgw.db")
        try:
            ready = await wait_ready(port, process)
            bonded = await wait_bonded(port, DEVICES)
            await asyncio.sleep(SETTLE_S)
            cpu = (await idle(process.pid, idle_s))[0]
            memory = memory_mib(process.pid)
        finally:
            stop_process(process)
        # A restart on the database the first start created and migrated (the usual start).
        process, port, restarted, _ = start_server(f"sim:{DEVICES}", Path(tmp) / "mcgw.db")
        try:
            ready_again = await wait_ready(port, process)
        finally:
            stop_process(process)
    return {
        "ready_s": ready - started,
        "ready_restart_s": ready_again - restarted,
        "devices_bonded_s": bonded - started,
        "rss_mib": memory["rss"],
        "idle_cpu_pct": cpu,
        "how": how,
    }


def make_token(db_path: Path) -> str:
    """An admin token written straight into the server's database (as `mcgw token create`);
    the admin has accepted the contraindication notice, so sessions may start."""
    from sqlmodel import Session

    from gateway.config import DatabaseSettings
    from gateway.storage import repo
    from gateway.storage.engine import create_engine_from_settings

    engine = create_engine_from_settings(DatabaseSettings(url=f"sqlite:///{db_path}"))
    try:
        with Session(engine) as session:
            user = repo.create_user(session=session, name="bench", is_admin=True)
            assert user.id is not None
            repo.accept_consent(session=session, user_id=user.id, version="bench")
            _, token = repo.create_token(session=session, user_id=user.id, name="b", pepper=PEPPER)
            session.commit()
    finally:
        engine.dispose()
    return token


async def hci_launch(idle_s: float, *, pinned: bool = False) -> dict[str, Any]:
    sim = await start_sim(DEVICES, record=False)
    async with sim:
        with tempfile.TemporaryDirectory() as tmp:
            db_path = Path(tmp) / "mcgw.db"
            moniker = f"hci:tcp-client:127.0.0.1:{sim.ready['port']}"
            process, port, started, how = start_server(moniker, db_path, pinned=pinned)
            try:
                ready = await wait_ready(port, process)
                await asyncio.sleep(SETTLE_S)
                empty_cpu = await idle(process.pid, idle_s, parts=3)
                empty_memory = memory_mib(process.pid)
                token = make_token(db_path)
                base_url = f"http://127.0.0.1:{port}"
                async with http_client(base_url, token) as http:
                    scan = await http.post("/api/v1/devices/scan", json={"timeout_s": 1.0})
                    scan.raise_for_status()
                    addresses = [d["address"] for d in scan.json()]
                    await claim_all(http, addresses)
                    await wait_bonded(port, DEVICES)
                    await asyncio.sleep(SETTLE_S)
                    loaded_cpu = await idle(process.pid, idle_s, parts=3)
                    loaded_memory = memory_mib(process.pid)
                    streaming = await stream(http, process.pid, port, token, addresses, idle_s)
            finally:
                stop_process(process)
    return {
        "ready_s": round(ready - started, 3),
        "how": how,
        "pinned": " ".join(PIN) if pinned else None,
        "no_devices": {
            "rss_mib": empty_memory["rss"],
            "idle_cpu_pct": summarize(empty_cpu, 2),
        },
        "seven_devices": {
            "rss_mib": loaded_memory["rss"],
            "idle_cpu_pct": summarize(loaded_cpu, 2),
        },
        "streaming": streaming,
    }


async def stream(
    http: Any, pid: int, port: int, token: str, addresses: list[str], seconds: float
) -> dict[str, Any]:
    """A session on every device and PHONES phones watching all of them (every frame): the
    gateway's RSS (and its peak) and CPU while they stream."""
    ids = await start_all(http, addresses)
    phones = await start_phones(
        {
            "kind": "ws",
            "url": f"ws://127.0.0.1:{port}/api/v1/ws",
            "token": token,
            "subscriptions": [addresses] * PHONES,
        }
    )
    async with phones:
        await asyncio.sleep(STREAM_WARMUP_S)
        cpu = await idle(pid, seconds, parts=3)
        memory = memory_mib(pid)
    for session_id in ids:
        await http.post(f"/api/v1/sessions/{session_id}/stop")
    return {
        "sessions": len(ids),
        "phones": PHONES,
        "rss_mib": memory["rss"],
        "peak_rss_mib": memory["hwm"],
        "cpu_pct": summarize(cpu, 2),
    }


async def import_profile() -> dict[str, Any]:
    """The gateway alone with 7 claimed devices, started with every import's RSS booked to its
    package (bench/harness/imports.py); the table is written when it exits."""
    sim = await start_sim(DEVICES, record=False)
    async with sim:
        with tempfile.TemporaryDirectory() as tmp:
            db_path, out = Path(tmp) / "mcgw.db", Path(tmp) / "imports.json"
            moniker = f"hci:tcp-client:127.0.0.1:{sim.ready['port']}"
            process, port, _, _ = start_server(moniker, db_path, import_profile=out)
            try:
                await wait_ready(port, process)
                token = make_token(db_path)
                async with http_client(f"http://127.0.0.1:{port}", token) as http:
                    scan = await http.post("/api/v1/devices/scan", json={"timeout_s": 1.0})
                    scan.raise_for_status()
                    await claim_all(http, [d["address"] for d in scan.json()])
                await wait_bonded(port, DEVICES)
                await asyncio.sleep(SETTLE_S)
                rss = memory_mib(process.pid)["rss"]
            finally:
                stop_process(process)
            profile: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    profile["rss_mib"] = rss
    profile["table"] = package_table(profile)
    return profile


def ring_memory(frames: int = 3000) -> dict[str, Any]:
    """What a full replay ring costs: bytes per frame (the decoded sample, the frame, its JSON
    text once a phone was sent it), by tracemalloc in this process, and for 7 devices."""
    import tracemalloc

    from harness.servers import sample

    from gateway.telemetry import DEFAULT_RING_SIZE, TelemetryHub

    hub = TelemetryHub()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for n in range(frames):
            hub.publish("D", sample(n), session_id="s", zone=None, received_at=time.monotonic())
        framed = tracemalloc.get_traced_memory()[0]
        replay = hub.subscribe(device="D", from_seq=0)
        while (item := replay.get_nowait()) is not None:
            getattr(item, "json_text", None)  # as a phone's first send builds and keeps it
        texts = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    per_frame = (texts - start) / frames
    return {
        "bytes_per_frame": round(per_frame),
        "json_bytes_per_frame": round((texts - framed) / frames),
        "ring_frames": DEFAULT_RING_SIZE,
        "full_rings_mib": round(per_frame * DEFAULT_RING_SIZE * DEVICES / 2**20, 1),
    }


async def measure_async(launches: int, idle_s: float) -> dict[str, Any]:
    runs = [await sim7_launch(idle_s) for _ in range(launches)]
    idle_cpu = [r["idle_cpu_pct"] for r in runs]
    return {
        "bench": "footprint",
        "config": {
            "launches": launches,
            "idle_s": idle_s,
            "devices": DEVICES,
            "started_with": runs[0]["how"],
        },
        "sim7": {
            "ready_s": summarize([r["ready_s"] for r in runs]),
            "ready_restart_s": summarize([r["ready_restart_s"] for r in runs]),
            "devices_bonded_s": summarize([r["devices_bonded_s"] for r in runs]),
            "rss_mib": summarize([r["rss_mib"] for r in runs], 1),
            "idle_cpu_pct": summarize(idle_cpu, 2),
            # An upper bound of one simulated device's idle cost: the gateway is in it too.
            "idle_cpu_pct_per_device": summarize([c / DEVICES for c in idle_cpu], 2),
        },
        "hci": await hci_launch(idle_s),
        "hci_pinned": await hci_launch(idle_s, pinned=True),
        "import_rss_mib": import_rss(),
        "import_profile": await import_profile(),
        "ring": ring_memory(),
    }


def measure(*, launches: int = 3, idle_s: float = 10.0) -> dict[str, Any]:
    return run_timed(measure_async(launches, idle_s))


def spread_lines(result: dict[str, Any]) -> list[tuple[str, Any, str] | str]:
    sim7, hci, pinned = result["sim7"], result["hci"], result["hci_pinned"]
    return [
        ("sim:7 time to ready", sim7["ready_s"], "s"),
        ("sim:7 RSS", sim7["rss_mib"], "MiB"),
        ("sim:7 idle CPU", sim7["idle_cpu_pct"], "% of a core"),
        ("gateway alone, no device, idle CPU", hci["no_devices"]["idle_cpu_pct"], "%"),
        ("gateway alone, 7 devices, idle CPU", hci["seven_devices"]["idle_cpu_pct"], "%"),
        ("gateway alone, 7 sessions to 20 phones, CPU", hci["streaming"]["cpu_pct"], "%"),
        ("pinned, 7 devices, idle CPU", pinned["seven_devices"]["idle_cpu_pct"], "%"),
        ("pinned, 7 sessions to 20 phones, CPU", pinned["streaming"]["cpu_pct"], "%"),
        f"RSS: 7 idle devices {hci['seven_devices']['rss_mib']} MiB, streaming "
        f"{hci['streaming']['rss_mib']} MiB (peak {hci['streaming']['peak_rss_mib']}); pinned "
        f"{pinned['seven_devices']['rss_mib']} / {pinned['streaming']['rss_mib']} MiB",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=10.0)
    run_main(parser, measure, spread_lines, argv)


if __name__ == "__main__":
    main()
