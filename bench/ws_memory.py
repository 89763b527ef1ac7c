"""Memory per WebSocket connection, before and after close, on a real `mcgw serve`.

Runs ``mcgw serve --ble sim:2`` with the connection limits raised, opens ``--connections``
authenticated WebSockets (spread over tokens, ``--per-token`` each), each subscribed to both
devices' telemetry at 10 Hz, lets them stream, then closes them all. It reports the server's
RSS at rest, with every connection open (and the difference per connection) and after close,
over several open/close cycles (memory a closed connection freed is reused: RSS stops growing
after the first cycle; CPython does not hand it back to the OS), plus what the default limits
let one token do: how many of ``--flood`` connections from one
token are accepted and what the rest are told.

    python bench/ws_memory.py --connections 240 --flood 2000
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

import httpx
import orjson
import websockets
from harness.processes import memory_mib
from harness.sessions import watch

SETTLE_S = 3.0


def serve(workdir: Path, port: int, **settings: str) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCGW_")}
    env.update(
        MCGW_DB__URL=f"sqlite:///{workdir / 'hub.db'}",
        MCGW_MDNS="false",
        MCGW_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        **settings,
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from mcgw.cli import main; main()",
            "serve",
            "--ble",
            "sim:2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--bootstrap",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("admin token:"):
            return process, line.split()[-1]
    raise RuntimeError("mcgw serve did not start")


async def ready(base: str, token: str) -> list[str]:
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        for _ in range(300):
            try:
                listed = (
                    await client.get(
                        "/api/v1/devices", headers={"Authorization": f"Bearer {token}"}
                    )
                ).json()
                if len([d for d in listed if d["state"] == "bonded"]) == 2:
                    return [d["address"] for d in listed]
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the devices never bonded")


async def tokens(base: str, admin: str, count: int) -> list[str]:
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=10
    ) as client:
        made = []
        for n in range(count):
            body = {"name": "phone", "new_user_name": f"user{n}", "is_admin": True}
            made.append((await client.post("/api/v1/tokens", json=body)).json()["token"])
        return made


async def connect(url: str, token: str, devices: list[str]) -> Any:
    return await watch(url, token, devices, max_queue=4)


async def drain(ws: Any) -> None:
    try:
        async for _ in ws:
            pass
    except websockets.WebSocketException:
        pass


async def open_close_cycles(
    url: str, users: list[str], devices: list[str], pid: int, args: argparse.Namespace
) -> list[dict[str, float]]:
    """Open every connection, read, close them all; RSS open and closed, per cycle."""
    cycles = []
    for _ in range(args.cycles):
        sockets = [
            await connect(url, users[n // args.per_token], devices) for n in range(args.connections)
        ]
        readers = [asyncio.create_task(drain(ws)) for ws in sockets]
        await asyncio.sleep(SETTLE_S * 2)
        loaded = memory_mib(pid)["rss"]
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers)
        await asyncio.sleep(SETTLE_S * 2)
        cycles.append({"open_mib": loaded, "closed_mib": memory_mib(pid)["rss"]})
    return cycles


async def limits_raised(workdir: Path, port: int, args: argparse.Namespace) -> dict[str, Any]:
    """``--connections`` connections (limits raised to allow them), ``--cycles`` times."""
    base, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/api/v1/ws"
    process, admin = serve(
        workdir,
        port,
        MCGW_API__WS_MAX_CONNECTIONS=str(args.connections + 16),
        MCGW_API__WS_MAX_PER_TOKEN=str(args.per_token),
    )
    try:
        devices = await ready(base, admin)
        users = await tokens(base, admin, -(-args.connections // args.per_token))
        await asyncio.sleep(SETTLE_S)
        rest = memory_mib(process.pid)["rss"]
        cycles = await open_close_cycles(url, users, devices, process.pid, args)
        async with httpx.AsyncClient(base_url=base) as client:
            metrics = (await client.get("/metrics")).text
    finally:
        process.terminate()
        process.wait(timeout=30)
    first = cycles[0]["open_mib"]
    return {
        "connections": args.connections,
        "rss_rest_mib": rest,
        "per_connection_kib": round((first - rest) * 1024 / args.connections, 1),
        "cycles": cycles,
        "growth_after_first_cycle_mib": round(cycles[-1]["closed_mib"] - first, 1),
        "connections_after_close": 0 if "mcgw_ws_connections 0.0" in metrics else None,
    }


async def one_token_flood(workdir: Path, port: int, flood: int) -> dict[str, Any]:
    """``flood`` connection attempts with one token, default limits: accepted and refused."""
    process, admin = serve(workdir, port)
    url = f"ws://127.0.0.1:{port}/api/v1/ws"
    try:
        devices = await ready(f"http://127.0.0.1:{port}", admin)
        (token,) = await tokens(f"http://127.0.0.1:{port}", admin, 1)
        before = memory_mib(process.pid)["rss"]
        accepted, refused, codes = [], 0, set()
        started = time.monotonic()
        for _ in range(flood):
            ws = await connect(url, token, devices[:1])
            try:
                message = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            except websockets.ConnectionClosed:
                message = {}
            if message.get("type") == "hello":
                accepted.append(ws)
            else:
                await ws.wait_closed()
                refused += 1
                codes.add(ws.close_code)
        after = memory_mib(process.pid)["rss"]
        for ws in accepted:
            await ws.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "attempted": flood,
        "accepted": len(accepted),
        "refused": refused,
        "close_codes": sorted(c for c in codes if c is not None),
        "rss_before_mib": before,
        "rss_after_mib": after,
        "seconds": round(time.monotonic() - started, 1),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    port = 18000 + os.getpid() % 1000
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        result["limits_raised"] = await limits_raised(Path(tmp), port, args)
    with tempfile.TemporaryDirectory() as tmp:
        result["one_token_flood"] = await one_token_flood(Path(tmp), port + 1, args.flood)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=240)
    parser.add_argument("--per-token", type=int, default=8)
    parser.add_argument("--flood", type=int, default=2000)
    parser.add_argument("--cycles", type=int, default=3, help="open-all/close-all rounds")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args)), indent=2))


if __name__ == "__main__":
    main()
