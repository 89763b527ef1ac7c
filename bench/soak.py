"""The soak: a hub under back-to-back sessions, watchers and random faults, for a long time.

``make soak`` (``python bench/soak.py --minutes 30``) runs `mcgw sim --devices N` and
`mcgw serve --ble hci:tcp-client:...` as real processes on a SQLite file and then, until time
is up:

* per device, a user's phone runs back-to-back sessions over REST (built-in programs at level
  1-3, stopped after a random time or left to complete), with an Idempotency-Key each;
* WebSocket watchers subscribe to every device and count frames, gaps and drops;
* a fault injector, from ``--seed``, every 20-60 s: the database locked (another process holds
  its write lock), read-only (an immutable file), the sim frozen (SIGSTOP), the gateway frozen
  for half a second (an event-loop stall as a loaded Pi shows), skin contact lost, the sim's
  radio stalled, a device's link dropped;
* a safety watch polls every device's actual output through the sim's control endpoint.

Every ``--sample-s`` it records the gateway's RSS and CPU, sessions, errors, records waiting for
the database and the longest event-loop stall (from /metrics). At the end it checks the records:
every session the API started must be stored with an end state and a reason (a *lost record*
otherwise), none left running. It writes ``bench/results/soak/<stamp>/`` (``report.md`` with the
table, ``soak.png`` with RSS and CPU over time and the faults marked, ``soak.json``) and exits
non-zero on any lost record, any unsafe output (output on a device with no session for longer
than the lease allows, or above the hub cap), a device that never comes back (every start
refused for ``STUCK_S`` after the last fault), or RSS growing past ``--max-growth-mib`` from
the first sample after warm-up to the last.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets
from harness import BENCH
from harness.disk import fill, release_small_disk, small_disk
from harness.processes import cpu_seconds, memory_mib
from harness.services import start_gateway, start_sim
from harness.sessions import watch
from soak_record import STUCK_S, Sample, Soak, plot, report

RESULTS = BENCH / "results" / "soak"
HUB_CAP_UA = 400
LEASE_GRACE_S = 2.0
"""Output seen this long on a device the hub runs no session on is unsafe (lease is 1 s)."""
WARMUP_S = 60.0
GATEWAY_STALL_S = 0.7
"""The event-loop freeze that expired a lease at a keepalive of 0.3 x lease (issue 11)."""
PROGRAMS = ("quick-lift", "forehead-smooth", "neck-tone", "jawline-contour", "eye-refresh")


# --- processes ------------------------------------------------------------------------------------


@dataclass
class Processes:
    workdir: Path
    sim: subprocess.Popen[str]
    hci_port: int
    control_port: int
    addresses: list[str]
    gateway: subprocess.Popen[str]
    port: int
    admin_token: str
    db_path: Path
    gateway_log: Path
    small_disk: bool
    """The database has a small filesystem of its own (the disk-full fault is possible)."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# --- the workload -------------------------------------------------------------------------------


async def control(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        answer = await client.request(method, path, json=body)
        answer.raise_for_status()
        return answer.json()


async def make_phone(admin: httpx.AsyncClient, name: str) -> httpx.AsyncClient:
    made = (
        await admin.post("/api/v1/tokens", json={"name": "phone", "new_user_name": name})
    ).json()
    phone = httpx.AsyncClient(
        base_url=admin.base_url, headers={"Authorization": f"Bearer {made['token']}"}, timeout=30
    )
    await phone.post("/api/v1/me/consent", json={"version": "2026-11", "accept": True})
    return phone


async def sessions_loop(
    soak: Soak, phone: httpx.AsyncClient, device: str, rng: random.Random
) -> None:
    refused_since: float | None = None
    while not soak.ending:
        body = {"device": device, "program": rng.choice(PROGRAMS), "level": rng.randint(1, 3)}
        try:
            started = await phone.post(
                "/api/v1/sessions", json=body, headers={"Idempotency-Key": os.urandom(8).hex()}
            )
        except httpx.HTTPError as exc:
            soak.errors.append(f"{soak.t()} start {device}: {exc!r}")
            await asyncio.sleep(1)
            continue
        if started.status_code != 201:
            problem = started.json()
            kind = problem.get("type", str(started.status_code)).rsplit(":", 1)[-1]
            soak.start_refusals[kind] = soak.start_refusals.get(kind, 0) + 1
            soak.refusal_details.setdefault(kind, str(problem.get("detail")))
            now = time.monotonic()
            refused_since = refused_since or now
            if now - max(refused_since, soak.last_fault) > STUCK_S:
                soak.stuck.append(f"{soak.t()} {device}: {problem.get('detail')}")
                refused_since = now  # report again only after another STUCK_S
            await asyncio.sleep(1 + rng.random())
            continue
        refused_since = None
        session = started.json()
        soak.session_ids.append(session["id"])
        run_for = rng.uniform(5, 40) if rng.random() < 0.8 else 400  # sometimes to the end
        deadline = time.monotonic() + run_for
        while time.monotonic() < deadline and not soak.ending:
            await asyncio.sleep(1)
            try:
                live = (await phone.get(f"/api/v1/sessions/{session['id']}")).json()
            except httpx.HTTPError:
                continue
            if not live.get("live", True):
                break
        try:
            await phone.post(f"/api/v1/sessions/{session['id']}/stop")
        except httpx.HTTPError as exc:
            soak.errors.append(f"{soak.t()} stop {session['id']}: {exc!r}")
        await asyncio.sleep(rng.uniform(0.5, 3))


async def watcher(soak: Soak, url: str, token: str, devices: list[str]) -> None:
    while not soak.ending:
        try:
            async with await watch(url, token, devices) as ws:
                while not soak.ending:
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 5)
                    except TimeoutError:
                        continue
                    message = orjson.loads(raw)
                    kind = message.get("type")
                    if kind == "telemetry":
                        soak.frames += 1
                    elif kind == "gap":
                        soak.gaps += 1
                    elif kind == "dropped":
                        soak.dropped += message.get("count", 0)
                    elif kind == "ping":
                        await ws.send('{"type":"pong"}')
        except (OSError, websockets.WebSocketException):
            await asyncio.sleep(1)


async def safety_watch(soak: Soak, procs: Processes, admin: httpx.AsyncClient) -> None:
    """Output with no session on the hub for longer than the lease allows, or above the cap."""
    since: dict[str, float] = {}
    while not soak.ending:
        await asyncio.sleep(0.5)
        try:
            snapshot = await control(procs.control_port, "GET", "/devices")
            listed = (await admin.get("/api/v1/devices")).json()
        except (httpx.HTTPError, OSError, ValueError):
            continue  # the sim or the gateway is frozen right now (a fault)
        live = {d["address"] for d in listed if d.get("active_session_id")}
        for device in snapshot["devices"]:
            address, output = device["address"].upper(), device["output_ua"]
            if output > HUB_CAP_UA:
                soak.unsafe.append(f"{soak.t()} {address}: {output} µA above the hub cap")
            if output > 0 and address not in live:
                first = since.setdefault(address, time.monotonic())
                if time.monotonic() - first > LEASE_GRACE_S:
                    soak.unsafe.append(
                        f"{soak.t()} {address}: {output} µA with no session for "
                        f"{time.monotonic() - first:.1f} s"
                    )
                    since[address] = time.monotonic()
            else:
                since.pop(address, None)


# --- faults -------------------------------------------------------------------------------------


async def lock_database(procs: Processes, device: str, hold: float, rng: random.Random) -> None:
    """Another process holds the database's write lock."""
    holder = sqlite3.connect(procs.db_path, timeout=10, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    await asyncio.sleep(hold)
    holder.execute("ROLLBACK")
    holder.close()


async def fill_disk(procs: Processes, device: str, hold: float, rng: random.Random) -> None:
    filler = procs.db_path.with_name("filler")
    try:
        await asyncio.to_thread(fill, filler)
        await asyncio.sleep(hold)
    finally:
        filler.unlink(missing_ok=True)


async def freeze_sim(procs: Processes, device: str, hold: float, rng: random.Random) -> None:
    procs.sim.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(rng.uniform(0.5, 2))
    finally:
        procs.sim.send_signal(signal.SIGCONT)


async def stall_gateway(procs: Processes, device: str, hold: float, rng: random.Random) -> None:
    os.killpg(procs.gateway.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(GATEWAY_STALL_S)
    finally:
        os.killpg(procs.gateway.pid, signal.SIGCONT)


async def lose_contact(procs: Processes, device: str, hold: float, rng: random.Random) -> None:
    path = f"/devices/{device}/set_on_skin"
    await control(procs.control_port, "POST", path, {"on_skin": False})
    await asyncio.sleep(rng.uniform(1, 14))
    await control(procs.control_port, "POST", path, {"on_skin": True})


async def stall_radio(procs: Processes, device: str, hold: float, rng: random.Random) -> None:
    stall = {"ms": round(rng.uniform(100, 1500))}
    await control(procs.control_port, "POST", f"/devices/{device}/stall", stall)


async def drop_link(procs: Processes, device: str, hold: float, rng: random.Random) -> None:
    await control(procs.control_port, "POST", f"/devices/{device}/drop_link", {})


Fault = Callable[[Processes, str, float, random.Random], Awaitable[None]]
FAULTS: dict[str, Fault] = {
    "db_locked": lock_database,
    "db_disk_full": fill_disk,
    "sim_frozen": freeze_sim,
    "gateway_stall": stall_gateway,
    "contact": lose_contact,
    "radio_stall": stall_radio,
    "drop_link": drop_link,
}
"""Every fault the injector picks from, in the order it picks (the seed decides)."""


async def faults(soak: Soak, procs: Processes, rng: random.Random) -> None:
    kinds = [k for k in FAULTS if k != "db_disk_full" or procs.small_disk]
    await soak.nap(WARMUP_S / 2)
    while not soak.ending:
        kind = rng.choice(kinds)
        device = rng.choice(procs.addresses)
        hold = rng.uniform(2, 8)
        soak.faults.append((soak.t(), kind))
        try:
            await FAULTS[kind](procs, device, hold, rng)
        except (OSError, httpx.HTTPError, sqlite3.Error) as exc:
            soak.errors.append(f"{soak.t()} injecting {kind}: {exc!r}")
        soak.last_fault = time.monotonic()
        await soak.nap(rng.uniform(*soak.fault_gap_s))


# --- sampling and the report ----------------------------------------------------------------------


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


async def sampler(soak: Soak, procs: Processes, every_s: float) -> None:
    async with httpx.AsyncClient(base_url=procs.base_url, timeout=10) as client:
        cpu = cpu_seconds(procs.gateway.pid)
        wall = time.monotonic()
        while not soak.ending:
            await asyncio.sleep(every_s)
            try:
                text = (await client.get("/metrics")).text
            except httpx.HTTPError:
                continue
            now_cpu, now = cpu_seconds(procs.gateway.pid), time.monotonic()
            soak.samples.append(
                Sample(
                    t_s=soak.t(),
                    rss_mib=memory_mib(procs.gateway.pid)["rss"],
                    cpu_pct=round((now_cpu - cpu) / (now - wall) * 100, 1),
                    sessions=len(soak.session_ids),
                    errors=len(soak.errors),
                    records_pending=metric(text, "mcgw_storage_records_pending"),
                    loop_lag_max_s=metric(text, "mcgw_event_loop_lag_max_seconds"),
                    frames=soak.frames,
                )
            )
            cpu, wall = now_cpu, now


async def check_records(soak: Soak, admin: httpx.AsyncClient) -> dict[str, Any]:
    lost, open_ = [], []
    states: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for session_id in soak.session_ids:
        got = await admin.get(f"/api/v1/sessions/{session_id}")
        if got.status_code != 200:
            lost.append(session_id)
            continue
        body = got.json()
        states[body["state"]] = states.get(body["state"], 0) + 1
        reason = re.sub(r"\d+", "N", f"{body['state']}: {body['reason']}")[:90]
        reasons[reason] = reasons.get(reason, 0) + 1
        if body["state"] in ("pending", "running", "paused") or not body["reason"]:
            open_.append(session_id)
    return {"lost": lost, "open": open_, "states": states, "reasons": reasons}


# --- main ---------------------------------------------------------------------------------------


def start_processes(workdir: Path, devices: int) -> Processes:
    """``mcgw sim`` and ``mcgw serve`` on a database of their own (a small disk if possible)."""
    small = small_disk(workdir / "dbfs")
    db_path = workdir / "dbfs" / "hub.db" if small else workdir / "hub.db"
    sim, hci, control_port, addresses = start_sim(workdir, devices)
    gateway, port, token, log = start_gateway(workdir, hci, db_path)
    return Processes(
        workdir,
        sim,
        hci,
        control_port,
        sorted(addresses),
        gateway,
        port,
        token,
        db_path,
        log,
        small,
    )


def stop_processes(procs: Processes, out: Path) -> None:
    """Stop both, keep their logs in ``out``, release the small disk."""
    procs.gateway.send_signal(signal.SIGINT)
    try:
        procs.gateway.wait(timeout=30)
    except subprocess.TimeoutExpired:
        procs.gateway.kill()
    procs.sim.terminate()
    procs.sim.wait(timeout=10)
    for name in ("gateway.log", "sim.log"):
        if (procs.workdir / name).exists():
            (out / name).write_text((procs.workdir / name).read_text())
    if procs.small_disk:
        release_small_disk(procs.workdir / "dbfs")


async def wait_bonded(admin: httpx.AsyncClient, devices: int) -> None:
    async with asyncio.timeout(60):
        while True:
            with contextlib.suppress(httpx.HTTPError):
                listed = (await admin.get("/api/v1/devices")).json()
                if sum(d["state"] == "bonded" for d in listed) == devices:
                    return
            await asyncio.sleep(0.2)


async def workload(
    soak: Soak, procs: Processes, args: argparse.Namespace, rng: random.Random
) -> dict[str, Any]:
    """Phones, watchers, the safety watch, faults and sampling until time is up; the records."""
    token = procs.admin_token
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=procs.base_url, headers=headers, timeout=30) as admin:
        await wait_bonded(admin, args.devices)
        phones = []
        for n, device in enumerate(procs.addresses):
            phone = await make_phone(admin, f"soak{n}")
            await phone.post(f"/api/v1/devices/{device}/claim")
            phones.append(phone)
        ws_url = procs.base_url.replace("http", "ws") + "/api/v1/ws"
        print(f"soak: {args.minutes:g} min, output in {args.out}", flush=True)
        tasks = [
            *(
                sessions_loop(soak, ph, d, random.Random(rng.random()))
                for ph, d in zip(phones, procs.addresses, strict=True)
            ),
            *(watcher(soak, ws_url, token, procs.addresses) for _ in range(args.watchers)),
            safety_watch(soak, procs, admin),
            faults(soak, procs, random.Random(rng.random())),
            sampler(soak, procs, args.sample_s),
            progress(soak),
        ]
        await asyncio.gather(*tasks)
        await asyncio.sleep(5)  # the last stops' records reach the database
        records = await check_records(soak, admin)
        for phone in phones:
            await phone.aclose()
    return records


def write_outputs(
    soak: Soak, records: dict[str, Any], args: argparse.Namespace, growth: float
) -> str:
    """report.md, soak.json and soak.png in ``args.out``; the report's text."""
    out: Path = args.out
    text = report(soak, records, growth, args.max_growth_mib)
    (out / "report.md").write_text(text)
    (out / "soak.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "samples": [asdict(s) for s in soak.samples],
                "faults": soak.faults,
                "records": records,
                "unsafe": soak.unsafe,
                "stuck": soak.stuck,
                "errors": soak.errors,
                "frames": soak.frames,
                "gaps": soak.gaps,
                "dropped": soak.dropped,
            },
            indent=1,
        )
    )
    plot(soak, out / "soak.png")
    return text


async def soak_async(args: argparse.Namespace) -> int:
    soak = Soak(args.minutes, args.devices, args.watchers, args.seed, tuple(args.fault_gap_s))
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="mcgw-soak-", ignore_cleanup_errors=True) as tmp:
        procs = start_processes(Path(tmp), args.devices)
        try:
            records = await workload(soak, procs, args, rng)
        finally:
            stop_processes(procs, args.out)
    after_warmup = [s for s in soak.samples if s.t_s >= WARMUP_S]
    growth = after_warmup[-1].rss_mib - after_warmup[0].rss_mib if len(after_warmup) > 1 else 0.0
    print(write_outputs(soak, records, args, growth))
    failed = (
        records["lost"]
        or records["open"]
        or soak.unsafe
        or soak.stuck
        or growth > args.max_growth_mib
    )
    return 1 if failed else 0


async def progress(soak: Soak) -> None:
    while not soak.ending:
        await soak.nap(60)
        last = soak.samples[-1] if soak.samples else None
        print(
            f"  {soak.t() / 60:.0f} min: {len(soak.session_ids)} sessions, "
            f"{len(soak.faults)} faults, RSS {last.rss_mib if last else '?'} MiB, "
            f"unsafe {len(soak.unsafe)}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--watchers", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--max-growth-mib", type=float, default=20.0)
    parser.add_argument(
        "--fault-gap-s", type=float, nargs=2, default=(20.0, 60.0), metavar=("MIN", "MAX")
    )
    parser.add_argument(
        "--out", type=Path, help="directory for the report (default bench/results/soak/<stamp>)"
    )
    args = parser.parse_args(argv)
    args.out = args.out or RESULTS / time.strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(soak_async(args)))


if __name__ == "__main__":
    main()
