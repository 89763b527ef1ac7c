"""REST stop with storage healthy, locked and out of space: the stop's bound must not move (S3).

Runs `mcgw sim` and `mcgw serve --ble hci:tcp-client:...` as real processes on SQLite (on a small
tmpfs of its own when it can be mounted, for the disk-full case) and, for each storage state,
``--rounds`` times: starts a session over REST, waits for output (read through the sim's control
endpoint), then times ``POST /sessions/{id}/stop`` from request to answer (given once the device
has ACKed STOP, output off) and reads the device's output right after the answer. The database
is locked by another process holding its write lock, or its filesystem filled, before each
stop. Prints p50/p99/max per state as JSON.

    python bench/stop_faults.py --rounds 15
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from harness.disk import fill, release_small_disk, small_disk
from harness.services import start_gateway, start_sim


@contextlib.contextmanager
def storage(state: str, db_path: Path) -> Iterator[None]:
    if state == "healthy":
        yield
    elif state == "locked":
        holder = sqlite3.connect(db_path, timeout=10, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    else:
        filler = db_path.with_name("filler")
        try:
            fill(filler)
            yield
        finally:
            filler.unlink(missing_ok=True)


async def control_output(port: int, device: str) -> int:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        return int((await client.get(f"/devices/{device}")).json()["output_ua"])


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mcgw-stop-", ignore_cleanup_errors=True) as tmp:
        workdir = Path(tmp)
        small = small_disk(workdir / "dbfs")
        db_path = workdir / "dbfs" / "hub.db" if small else workdir / "hub.db"
        sim, hci, control, addresses = start_sim(workdir, 1)
        gateway, port, token, _log = start_gateway(workdir, hci, db_path)
        device = addresses[0]
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ) as admin:
                for _ in range(300):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await admin.get(f"/api/v1/devices/{device}")).json().get(
                            "state"
                        ) == "bonded":
                            break
                    await asyncio.sleep(0.1)
                await admin.post("/api/v1/me/consent", json={"version": "2026-11", "accept": True})
                await admin.post(f"/api/v1/devices/{device}/claim")
                states = ["healthy", "locked", *(["disk_full"] if small else [])]
                for state in states:
                    answered: list[float] = []
                    still_on = 0
                    for _ in range(args.rounds):
                        started = await admin.post(
                            "/api/v1/sessions", json={"device": device, "program": "quick-lift"}
                        )
                        started.raise_for_status()
                        session = started.json()["id"]
                        while await control_output(control, device) == 0:  # noqa: ASYNC110 - another process
                            await asyncio.sleep(0.02)
                        with storage(state, db_path):
                            await asyncio.sleep(0.3)
                            began = time.perf_counter()
                            stopped = await admin.post(f"/api/v1/sessions/{session}/stop")
                            answered.append(time.perf_counter() - began)
                            assert stopped.status_code == 200, stopped.text
                            # The answer comes once the device ACKed STOP (output off):
                            # the first reading after it must say so.
                            still_on += await control_output(control, device) != 0
                        await asyncio.sleep(0.5)
                    results[state] = {
                        "rounds": args.rounds,
                        "stop_answered": percentiles(answered),
                        "output_still_on_after_the_answer": still_on,
                    }
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
            sim.terminate()
            sim.wait(timeout=10)
            if small:
                release_small_disk(workdir / "dbfs")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
