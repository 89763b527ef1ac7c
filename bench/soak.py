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
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from floors import cpu_seconds, memory_mib

from ble.sim.process import read_banner

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "soak"
HUB_CAP_UA = 400
LEASE_GRACE_S = 2.0
"""Output seen this long on a device the hub runs no session on is unsafe (lease is 1 s)."""
WARMUP_S = 60.0
STUCK_S = 90.0
"""A device refusing every start this long after its last fault has not come back: a failure."""
GATEWAY_STALL_S = 0.7
"""The event-loop freeze that expired a lease at a keepalive of 0.3 x lease (issue 11)."""
PROGRAMS = ("quick-lift", "forehead-smooth", "neck-tone", "jawline-contour", "eye-refresh")


@dataclass
class Sample:
    t_s: float
    rss_mib: float
    cpu_pct: float
    sessions: int
    errors: int
    records_pending: float
    loop_lag_max_s: float
    frames: int


@dataclass
class Soak:
    minutes: float
    devices: int
    watchers: int
    seed: int
    fault_gap_s: tuple[float, float] = (20.0, 60.0)
    started: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    start_refusals: dict[str, int] = field(default_factory=dict)
    refusal_details: dict[str, str] = field(default_factory=dict)
    stuck: list[str] = field(default_factory=list)
    """Devices that refused every start for longer than STUCK_S (they never came back)."""
    errors: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    frames: int = 0
    gaps: int = 0
    dropped: int = 0
    last_fault: float = 0.0
    """Monotonic time the last fault ended."""

    def t(self) -> float:
        return round(time.monotonic() - self.started, 1)

    @property
    def ending(self) -> bool:
        return time.monotonic() - self.started >= self.minutes * 60

    async def nap(self, seconds: float) -> None:
        """Sleep, but not past the end of the soak."""
        left = self.minutes * 60 - (time.monotonic() - self.started)
        await asyncio.sleep(max(0.0, min(seconds, left)))


# --- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mcgw(*args: str) -> list[str]:
    return [sys.executable, "-c", "from mcgw.cli import main; main()", *args]


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


def start_sim(workdir: Path, devices: int) -> tuple[subprocess.Popen[str], int, int, list[str]]:
    log = (workdir / "sim.log").open("a")
    sim = subprocess.Popen(
        mcgw("sim", "--devices", str(devices), "--hci-port", "0", "--control-port", "0"),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    assert sim.stdout is not None
    banner = read_banner(sim.stdout)
    return sim, banner.hci_port, banner.control_port, list(banner.addresses)


def start_gateway(
    workdir: Path, hci_port: int, db_path: Path
) -> tuple[subprocess.Popen[str], int, str, Path]:
    port = free_port()
    log_path = workdir / "gateway.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCGW_")}
    env.update(
        MCGW_DB__URL=f"sqlite:///{db_path}",
        MCGW_DB__JOURNAL_PATH=str(workdir / "hub.journal"),
        MCGW_DB__LOCK_TIMEOUT_S="1",
        MCGW_MDNS="false",
        MCGW_HUB_ID="soak",
        MCGW_TOKEN_PEPPER="soak-pepper",
        PYTHONUNBUFFERED="1",
    )
    gateway = subprocess.Popen(
        mcgw(
            "serve",
            *("--ble", f"hci:tcp-client:127.0.0.1:{hci_port}"),
            *("--host", "127.0.0.1", "--port", str(port), "--bootstrap"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert gateway.stdout is not None
    token = ""
    log = log_path.open("a")
    for line in gateway.stdout:
        log.write(line)
        if line.startswith("admin token:"):
            token = line.split()[-1]
            break
    if not token:
        raise RuntimeError("mcgw serve did not start; see gateway.log")

    def drain() -> None:
        assert gateway.stdout is not None
        for line in gateway.stdout:
            log.write(line)
            log.flush()

    import threading

    threading.Thread(target=drain, daemon=True).start()
    return gateway, port, token, log_path


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


async def watch(url: str, token: str, devices: list[str], **options: Any) -> Any:
    """A WebSocket authenticated with ``token``, subscribed to ``devices`` at 10 Hz."""
    ws = await websockets.connect(url, compression=None, **options)
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    for n, device in enumerate(devices):
        subscribe = {"type": "subscribe", "id": str(n), "device": device, "rate_hz": 10}
        await ws.send(orjson.dumps(subscribe).decode())
    return ws


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


async def faults(soak: Soak, procs: Processes, rng: random.Random) -> None:
    kinds = [
        "db_locked",
        *(["db_disk_full"] if procs.small_disk else []),
        "sim_frozen",
        "gateway_stall",
        "contact",
        "radio_stall",
        "drop_link",
    ]
    await soak.nap(WARMUP_S / 2)
    while not soak.ending:
        kind = rng.choice(kinds)
        device = rng.choice(procs.addresses)
        hold = rng.uniform(2, 8)
        soak.faults.append((soak.t(), kind))
        try:
            if kind == "db_locked":
                holder = sqlite3.connect(procs.db_path, timeout=10, isolation_level=None)
                holder.execute("BEGIN EXCLUSIVE")
                await asyncio.sleep(hold)
                holder.execute("ROLLBACK")
                holder.close()
            elif kind == "db_disk_full":
                filler = procs.db_path.with_name("filler")
                try:
                    await asyncio.to_thread(_fill, filler)
                    await asyncio.sleep(hold)
                finally:
                    filler.unlink(missing_ok=True)
            elif kind == "sim_frozen":
                procs.sim.send_signal(signal.SIGSTOP)
                try:
                    await asyncio.sleep(rng.uniform(0.5, 2))
                finally:
                    procs.sim.send_signal(signal.SIGCONT)
            elif kind == "gateway_stall":
                os.killpg(procs.gateway.pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(GATEWAY_STALL_S)
                finally:
                    os.killpg(procs.gateway.pid, signal.SIGCONT)
            elif kind == "contact":
                await control(
                    procs.control_port, "POST", f"/devices/{device}/set_on_skin", {"on_skin": False}
                )
                await asyncio.sleep(rng.uniform(1, 14))
                await control(
                    procs.control_port, "POST", f"/devices/{device}/set_on_skin", {"on_skin": True}
                )
            elif kind == "radio_stall":
                await control(
                    procs.control_port,
                    "POST",
                    f"/devices/{device}/stall",
                    {"ms": round(rng.uniform(100, 1500))},
                )
            elif kind == "drop_link":
                await control(procs.control_port, "POST", f"/devices/{device}/drop_link", {})
        except (OSError, httpx.HTTPError, sqlite3.Error) as exc:
            soak.errors.append(f"{soak.t()} injecting {kind}: {exc!r}")
        soak.last_fault = time.monotonic()
        await soak.nap(rng.uniform(*soak.fault_gap_s))


def _small_disk(mount: Path) -> bool:
    """A 64 MiB tmpfs for the database (needs root); False if it cannot be mounted."""
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def release_small_disk(mount: Path) -> None:
    """Unmount the database's tmpfs (the processes using it have ended)."""
    for _ in range(20):
        if subprocess.run(["umount", str(mount)], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.25)
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until its filesystem is full (unbuffered: nothing is left to
    flush, and fail, at close)."""
    chunk = b"\0" * (1 << 20)
    with path.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(chunk)


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


def plot(soak: Soak, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s / 60 for s in soak.samples]
    figure, (memory, cpu) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    memory.plot(t, [s.rss_mib for s in soak.samples], color="tab:blue")
    memory.set_ylabel("gateway RSS (MiB)")
    cpu.plot(t, [s.cpu_pct for s in soak.samples], color="tab:orange")
    cpu.set_ylabel("gateway CPU (% of a core)")
    cpu.set_xlabel("minutes")
    for at, _kind in soak.faults:
        for axis in (memory, cpu):
            axis.axvline(at / 60, color="grey", alpha=0.25, linewidth=0.8)
    memory.set_title(
        f"soak: {soak.devices} devices, {soak.watchers} watchers, {len(soak.session_ids)} "
        f"sessions, {len(soak.faults)} faults (grey lines), seed {soak.seed}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def report(soak: Soak, records: dict[str, Any], growth: float, max_growth: float) -> str:
    lines = [
        f"# Soak, {soak.minutes:g} min, seed {soak.seed}",
        "",
        f"- devices {soak.devices}, watchers {soak.watchers}; sessions started "
        f"{len(soak.session_ids)}; end states {records['states']}",
        f"- start refusals by kind: {soak.start_refusals or 'none'} "
        f"(first of each: {soak.refusal_details or '-'})",
        f"- devices that never came back (refused every start {STUCK_S:g} s after the last "
        f"fault): {len(soak.stuck)}",
        f"- faults injected: {len(soak.faults)} "
        f"({', '.join(f'{k} {n}' for k, n in sorted(_count(k for _, k in soak.faults).items()))})",
        f"- lost records: {len(records['lost'])}; sessions left open: {len(records['open'])}",
        "- end reasons: "
        + "; ".join(f"{why} ×{n}" for why, n in sorted(records["reasons"].items())),
        f"- unsafe output: {len(soak.unsafe)}",
        f"- client-side errors: {len(soak.errors)}",
        f"- frames received by watchers: {soak.frames}; gaps {soak.gaps}; dropped {soak.dropped}",
        f"- RSS growth after warm-up: {growth:+.1f} MiB (bound {max_growth:g})",
        "- longest event-loop stall: "
        f"{max((s.loop_lag_max_s for s in soak.samples), default=0):.3f} s",
        "",
        "| min | RSS MiB | CPU % | sessions | records waiting | loop lag max s | frames |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    step = max(1, len(soak.samples) // 30)
    for sample in soak.samples[::step]:
        lines.append(
            f"| {sample.t_s / 60:.1f} | {sample.rss_mib:.1f} | {sample.cpu_pct:.1f} | "
            f"{sample.sessions} | {sample.records_pending:g} | {sample.loop_lag_max_s:.3f} | "
            f"{sample.frames} |"
        )
    for title, items in (
        ("Unsafe output", soak.unsafe),
        ("Devices that never came back", soak.stuck),
        ("Errors", soak.errors),
    ):
        if items:
            lines += ["", f"## {title}", "", *(f"- {item}" for item in items[:50])]
    return "\n".join(lines) + "\n"


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


# --- main ---------------------------------------------------------------------------------------


async def soak_async(args: argparse.Namespace) -> int:
    soak = Soak(args.minutes, args.devices, args.watchers, args.seed, tuple(args.fault_gap_s))
    rng = random.Random(args.seed)
    out: Path = args.out
    with tempfile.TemporaryDirectory(prefix="mcgw-soak-", ignore_cleanup_errors=True) as tmp:
        workdir = Path(tmp)
        small_disk = _small_disk(workdir / "dbfs")
        db_path = workdir / "dbfs" / "hub.db" if small_disk else workdir / "hub.db"
        sim, hci, control_port, addresses = start_sim(workdir, args.devices)
        gateway, port, token, log = start_gateway(workdir, hci, db_path)
        procs = Processes(
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
            small_disk,
        )
        try:
            async with httpx.AsyncClient(
                base_url=procs.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as admin:
                async with asyncio.timeout(60):
                    while True:
                        with contextlib.suppress(httpx.HTTPError):
                            listed = (await admin.get("/api/v1/devices")).json()
                            if sum(d["state"] == "bonded" for d in listed) == args.devices:
                                break
                        await asyncio.sleep(0.2)
                phones = []
                for n, device in enumerate(procs.addresses):
                    phone = await make_phone(admin, f"soak{n}")
                    await phone.post(f"/api/v1/devices/{device}/claim")
                    phones.append(phone)
                ws_url = procs.base_url.replace("http", "ws") + "/api/v1/ws"
                print(f"soak: {args.minutes:g} min, output in {out}", flush=True)
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
        finally:
            gateway.send_signal(signal.SIGINT)
            try:
                gateway.wait(timeout=30)
            except subprocess.TimeoutExpired:
                gateway.kill()
            sim.terminate()
            sim.wait(timeout=10)
            for name in ("gateway.log", "sim.log"):
                if (workdir / name).exists():
                    (out / name).write_text((workdir / name).read_text())
            if small_disk:
                release_small_disk(workdir / "dbfs")
    after_warmup = [s for s in soak.samples if s.t_s >= WARMUP_S]
    growth = after_warmup[-1].rss_mib - after_warmup[0].rss_mib if len(after_warmup) > 1 else 0.0
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
    print(text)
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
