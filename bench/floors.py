"""Floors: the raw cost of the radio path that every gateway figure is compared against.

Measured through the project's bleak backend on bumble (``BleakClient(..., backend=BumbleClient)``)
against a small bumble GATT peripheral, with no gateway code in between:

* notification latency: the peripheral notifies ``--notify-n`` payloads at ``--rate`` per second,
  each carrying ``time.monotonic_ns()`` taken right before ``notify_subscribers``; the bleak
  callback computes receive - send (CLOCK_MONOTONIC is shared by every process on Linux);
* write round trip: ``await client.write_gatt_char(..., response=True)``, one after another;
* burst throughput: the peripheral notifies ``--burst-n`` payloads as fast as it can; the figure
  is notifications received per second from the first send to the last receive, with losses.

Each is taken in process (peripheral and central on one ``VirtualRadio``) and across processes
(the peripheral in a child process, ``floors.py --serve``, reached with ``tcp-client:`` through
``HciTcpServer``), ``--repeats`` times; every figure is reported as the median over repeats with
its min, max and spread. The streams are started in-band by a write to the peripheral, so both
cases run the same code. Prints one JSON object.

The helpers here are shared by the other benchmarks: statistics (``percentile``, ``summarize``),
the machine's description, the event loop choice (``run_loop``), and helper processes that speak
JSON lines (``Child`` in the parent, ``emit``/``commands`` in the child) with their CPU and RSS
read from /proc. This module deliberately does not measure anything of the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import pickle
import platform
import statistics
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_T = TypeVar("_T")

SERVICE = "7d2a1001-6b1c-4f6e-9a0a-3c5e2f1b0001"
WRITE_CHAR = "7d2a1002-6b1c-4f6e-9a0a-3c5e2f1b0001"
NOTIFY_CHAR = "7d2a1003-6b1c-4f6e-9a0a-3c5e2f1b0001"
PERIPHERAL_ADDRESS = "C0:BE:00:00:00:01"
PERIPHERAL_NAME = "bench-floor"
ADV_INTERVAL_MS = 20
PAYLOAD_BYTES = 25
"""A one-sample telemetry notification of protocol v1 is 25 bytes; so are these."""
WRITE_BYTES = 20
"""About the size of a QUEUE_SEGMENT command."""

OP_PLAIN = 0
OP_STREAM = 1
OP_BURST = 2
_HEADER = struct.Struct("<QI")  # send time (ns), sequence number
_COMMAND = struct.Struct("<BII")  # op, count, rate per second

FIND_TIMEOUT_S = 5.0
SERVE_START_TIMEOUT_S = 20.0
STREAM_SLACK_S = 3.0
"""Beyond the stream's nominal length, how long to wait for its last notifications."""


# --- statistics shared by every benchmark -----------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_stats(values_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of one run's samples, in the samples' unit."""
    return {
        "n": len(values_ms),
        "p50": percentile(values_ms, 50),
        "p90": percentile(values_ms, 90),
        "p99": percentile(values_ms, 99),
        "max": max(values_ms) if values_ms else math.nan,
    }


def summarize(runs: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """One figure over repeats: median, min, max, spread (max - min, % of the median), runs."""
    clean = [float(v) for v in runs if not math.isnan(float(v))]
    if not clean:
        return {"median": None, "min": None, "max": None, "spread_pct": None, "runs": []}
    median = statistics.median(clean)
    spread = (max(clean) - min(clean)) / abs(median) * 100 if median else 0.0
    return {
        "median": round(median, digits),
        "min": round(min(clean), digits),
        "max": round(max(clean), digits),
        "spread_pct": round(spread, 1),
        "runs": [round(v, digits) for v in clean],
    }


def spread_line(name: str, figure: dict[str, Any], unit: str) -> str:
    """``name: median unit (min-max, spread N %)``, printed by every benchmark to stderr."""
    if figure.get("median") is None:
        return f"{name}: no data"
    return (
        f"{name}: {figure['median']:g} {unit} (runs {figure['min']:g}-{figure['max']:g}, "
        f"spread {figure['spread_pct']:g} %)"
    )


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {
            name: package_version(name)
            for name in ("bleak", "bumble", "uvicorn", "fastapi", "starlette", "websockets")
        }
        | {"uvloop": package_version("uvloop"), "mcgw": package_version("mcgw")},
    }


def loop_name(choice: str = "auto") -> str:
    """The event loop: uvloop for ``auto`` when installed (as uvicorn picks), else asyncio."""
    if choice == "auto":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
        return "uvloop"
    return choice


def run_loop(coro: Coroutine[Any, Any, _T], loop: str = "auto") -> _T:
    """``asyncio.run`` on the chosen loop."""
    if loop_name(loop) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


# --- helper processes ---------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def memory_mib(pid: int) -> dict[str, float]:
    """Resident set size now (``rss``) and its peak (``hwm``), MiB, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key = "rss" if line.startswith("VmRSS") else "hwm"
            out[key] = round(int(line.split()[1]) / 1024, 1)
    return out


class CpuMeter:
    """CPU use of one process between ``start()`` and ``stop()``, in % of one core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu = 0.0
        self._wall = 0.0

    def start(self) -> None:
        self._cpu = cpu_seconds(self.pid)
        self._wall = time.monotonic()

    def stop(self) -> float:
        wall = time.monotonic() - self._wall
        return (cpu_seconds(self.pid) - self._cpu) / wall * 100 if wall > 0 else math.nan


HELPER_LOG_ENV = "MCGW_BENCH_HELPER_LOG"
"""Where helper processes' stderr goes: a file path, or ``-`` for our own stderr."""
DEFAULT_HELPER_LOG = Path(__file__).resolve().parent / "results" / "helpers.log"
_helper_log: Any = None


def helper_log() -> Any:
    """The file helpers write their logs to (the warnings of a loaded hub are many)."""
    global _helper_log
    target = os.environ.get(HELPER_LOG_ENV, str(DEFAULT_HELPER_LOG))
    if target == "-":
        return None
    if _helper_log is None:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        _helper_log = open(target, "ab")  # noqa: SIM115 - kept open for every helper
    return _helper_log


def close_helper_log() -> None:
    global _helper_log
    if _helper_log is not None:
        _helper_log.close()
        _helper_log = None


def _log_line(line: bytes) -> None:
    sink = helper_log()
    if sink is None:
        sys.stderr.write(line.decode(errors="replace"))
    else:
        sink.write(line)
        sink.flush()


class ChildError(RuntimeError):
    """A helper process died or said something unexpected."""


class Child:
    """A helper process: JSON-line events on its stdout, JSON-line commands on its stdin.

    Lines that are not JSON objects go to our stderr (logs, tracebacks). The child exits when
    its stdin closes (``close()``); it is killed if it does not within the timeout.
    """

    def __init__(self, process: asyncio.subprocess.Process, what: str) -> None:
        self.process = process
        self.what = what

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> Child:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=helper_log(),
            env=env,
            limit=2**24,
        )
        return cls(process, " ".join(Path(a).name for a in args[1:3]))

    @property
    def pid(self) -> int:
        return self.process.pid

    async def event(self, name: str, timeout_s: float) -> dict[str, Any]:
        """Read lines until the event ``name``; raise if the child says ``error`` or dies."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    code = await self.process.wait()
                    raise ChildError(f"{self.what} exited ({code}) before {name!r}")
                try:
                    message = json.loads(line)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    _log_line(line)
                    continue
                if message.get("event") == "error":
                    raise ChildError(f"{self.what}: {message.get('message')}")
                if message.get("event") == name:
                    return message

    async def command(
        self, message: dict[str, Any], reply: str | None = None, timeout_s: float = 60.0
    ) -> dict[str, Any] | None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()
        return await self.event(reply, timeout_s) if reply else None

    async def close(self, timeout_s: float = 15.0) -> int:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._drain_and_wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode or 0

    async def _drain_and_wait(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                json.loads(line)
            except ValueError:
                _log_line(line)
        await self.process.wait()

    async def __aenter__(self) -> Child:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


def emit(event: str, **data: Any) -> None:
    """Child side: tell the parent about ``event`` (one JSON line on stdout)."""
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


async def commands() -> AsyncIterator[dict[str, Any]]:
    """Child side: the parent's commands, until it closes our stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict):
                yield message


def save_pickle(path: str, data: Any) -> None:
    """Bulk results between helper processes (local temporary files, trusted)."""
    with open(path, "wb") as out:
        pickle.dump(data, out)


def load_pickle(path: str) -> Any:
    with open(path, "rb") as handle:
        return pickle.load(handle)


def bench_script(name: str) -> str:
    """Path of a sibling benchmark script, for ``Child.start(sys.executable, ...)``."""
    return str(Path(__file__).resolve().with_name(name))


# --- the bench peripheral -----------------------------------------------------------------------


@dataclass
class BenchPeripheral:
    """A bumble GATT server with one write and one notify characteristic.

    A write starting with OP_STREAM or OP_BURST starts a notification stream (owned task);
    any other write is only acknowledged (the round-trip floor).
    """

    device: Any
    notify_char: Any
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    writes: int = 0

    def on_write(self, _connection: Any, value: bytes) -> None:
        self.writes += 1
        if len(value) < _COMMAND.size or value[0] not in (OP_STREAM, OP_BURST):
            return
        op, count, rate = _COMMAND.unpack_from(value)
        coro = self._stream(count, rate) if op == OP_STREAM else self._burst(count)
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, seq: int) -> None:
        payload = _HEADER.pack(time.monotonic_ns(), seq).ljust(PAYLOAD_BYTES, b"\0")
        await self.device.notify_subscribers(self.notify_char, payload)

    async def _stream(self, count: int, rate: int) -> None:
        loop = asyncio.get_running_loop()
        period = 1 / rate
        deadline = loop.time()
        for seq in range(count):
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._send(seq)
            deadline += period

    async def _burst(self, count: int) -> None:
        for seq in range(count):
            await self._send(seq)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def start_bench_peripheral(radio: Any) -> BenchPeripheral:
    """Attach, serve and advertise (every 20 ms) the bench peripheral on ``radio``."""
    from bumble.core import UUID, AdvertisingData
    from bumble.gatt import Characteristic, CharacteristicValue, Service

    device = radio.attach(PERIPHERAL_NAME, PERIPHERAL_ADDRESS)
    props, perms = Characteristic.Properties, Characteristic.Permissions
    notify_char = Characteristic(NOTIFY_CHAR, props.NOTIFY, perms.READABLE, b"")
    peripheral = BenchPeripheral(device=device, notify_char=notify_char)
    device.add_service(
        Service(
            SERVICE,
            [
                Characteristic(
                    WRITE_CHAR,
                    props.WRITE,
                    perms.WRITEABLE,
                    CharacteristicValue(write=peripheral.on_write),
                ),
                notify_char,
            ],
        )
    )
    device.advertising_data = bytes(
        AdvertisingData(
            [
                (AdvertisingData.FLAGS, bytes([0x06])),
                (AdvertisingData.COMPLETE_LOCAL_NAME, PERIPHERAL_NAME.encode()),
                (
                    AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                    UUID(SERVICE).to_bytes(),
                ),
            ]
        )
    )
    await device.power_on()
    await device.start_advertising(
        auto_restart=True,
        advertising_interval_min=ADV_INTERVAL_MS,
        advertising_interval_max=ADV_INTERVAL_MS,
    )
    return peripheral


# --- the central side ---------------------------------------------------------------------------


@dataclass
class _Receiver:
    expected: int
    latencies_ms: list[float] = field(default_factory=list)
    first_sent_ns: int | None = None
    last_received_ns: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, _char: object, data: bytearray) -> None:
        now = time.monotonic_ns()
        sent, _seq = _HEADER.unpack_from(data)
        if self.first_sent_ns is None:
            self.first_sent_ns = sent
        self.last_received_ns = now
        self.latencies_ms.append((now - sent) / 1e6)
        if len(self.latencies_ms) >= self.expected:
            self.done.set()


async def _notifications(client: Any, op: int, count: int, rate: int) -> _Receiver:
    receiver = _Receiver(expected=count)
    await client.start_notify(NOTIFY_CHAR, receiver)
    try:
        await client.write_gatt_char(WRITE_CHAR, _COMMAND.pack(op, count, rate), response=True)
        nominal_s = count / rate if op == OP_STREAM else count / 1000
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(nominal_s + STREAM_SLACK_S):
                await receiver.done.wait()
    finally:
        await client.stop_notify(NOTIFY_CHAR)
    return receiver


async def measure_client(
    client: Any, *, notify_n: int, rate: int, write_n: int, burst_n: int
) -> dict[str, Any]:
    """One repeat of every floor on a connected bleak client."""
    stream = await _notifications(client, OP_STREAM, notify_n, rate)
    rtts_ms: list[float] = []
    payload = bytes([OP_PLAIN]) * WRITE_BYTES
    for _ in range(write_n):
        started = time.perf_counter_ns()
        await client.write_gatt_char(WRITE_CHAR, payload, response=True)
        rtts_ms.append((time.perf_counter_ns() - started) / 1e6)
    burst = await _notifications(client, OP_BURST, burst_n, 0)
    burst_s = (
        (burst.last_received_ns - burst.first_sent_ns) / 1e9
        if burst.first_sent_ns is not None
        else math.nan
    )
    return {
        "notify_ms": latency_stats(stream.latencies_ms),
        "notify_lost": notify_n - len(stream.latencies_ms),
        "write_rtt_ms": latency_stats(rtts_ms),
        "burst_per_s": len(burst.latencies_ms) / burst_s if burst_s > 0 else math.nan,
        "burst_lost": burst_n - len(burst.latencies_ms),
    }


@asynccontextmanager
async def connected(adapter: Any) -> AsyncIterator[Any]:
    """A bleak client (bumble backend) connected to the bench peripheral through ``adapter``."""
    from bleak import BleakClient, BleakScanner

    from ble.bumble.client import BumbleClient
    from ble.bumble.scanner import BumbleScanner

    device = await BleakScanner.find_device_by_address(
        PERIPHERAL_ADDRESS, timeout=FIND_TIMEOUT_S, backend=BumbleScanner.bound_to(adapter)
    )
    if device is None:
        raise RuntimeError(f"the bench peripheral {PERIPHERAL_ADDRESS} was not found")
    async with BleakClient(device, backend=BumbleClient) as client:
        yield client


async def _repeat(client: Any, repeats: int, sizes: dict[str, int]) -> list[dict[str, Any]]:
    return [await measure_client(client, **sizes) for _ in range(repeats)]


async def in_process(repeats: int, **sizes: int) -> list[dict[str, Any]]:
    """Every floor with the peripheral and the central on one VirtualRadio in this process."""
    from ble.bumble.adapter import BumbleAdapter
    from ble.bumble.radio import VirtualRadio

    radio = VirtualRadio()
    try:
        peripheral = await start_bench_peripheral(radio)
        async with (
            await BumbleAdapter.open("virtual", radio=radio) as adapter,
            connected(adapter) as client,
        ):
            runs = await _repeat(client, repeats, sizes)
        await peripheral.close()
        await peripheral.device.power_off()
    finally:
        await radio.close()
    return runs


async def cross_process(repeats: int, loop: str = "auto", **sizes: int) -> list[dict[str, Any]]:
    """Every floor with the peripheral in a child process, over HCI over TCP."""
    from ble.bumble.adapter import BumbleAdapter

    chosen = loop_name(loop)
    child = await Child.start(sys.executable, __file__, "--serve", "--loop", chosen)
    async with child:
        port = (await child.event("ready", SERVE_START_TIMEOUT_S))["port"]
        async with (
            await BumbleAdapter.open(f"tcp-client:127.0.0.1:{port}") as adapter,
            connected(adapter) as client,
        ):
            return await _repeat(client, repeats, sizes)


async def serve() -> None:
    """Child side: the bench peripheral on a radio served over TCP until stdin closes."""
    from ble.bumble.hci_server import HciTcpServer
    from ble.bumble.radio import VirtualRadio

    radio = VirtualRadio()
    peripheral = await start_bench_peripheral(radio)
    async with HciTcpServer(radio, port=0) as server:
        emit("ready", port=server.port)
        async for _ in commands():
            pass
    await peripheral.close()
    await radio.close()


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-repeat results -> one figure per metric with its spread across repeats."""
    return {
        "notify_latency_ms": {
            q: summarize([r["notify_ms"][q] for r in runs]) for q in ("p50", "p99", "max")
        },
        "notify_lost": sum(r["notify_lost"] for r in runs),
        "write_rtt_ms": {
            q: summarize([r["write_rtt_ms"][q] for r in runs]) for q in ("p50", "p99", "max")
        },
        "burst_per_s": summarize([r["burst_per_s"] for r in runs], digits=0),
        "burst_lost": sum(r["burst_lost"] for r in runs),
    }


def measure(
    *,
    repeats: int = 3,
    notify_n: int = 2000,
    rate: int = 500,
    write_n: int = 1000,
    burst_n: int = 2000,
    loop: str = "auto",
    cross: bool = True,
) -> dict[str, Any]:
    """Every floor, in process and (``cross``) across processes; the dict that is printed."""
    sizes = {"notify_n": notify_n, "rate": rate, "write_n": write_n, "burst_n": burst_n}
    started = time.perf_counter()
    chosen = loop_name(loop)
    result: dict[str, Any] = {
        "bench": "floors",
        "config": {"loop": chosen, "repeats": repeats, "payload_bytes": PAYLOAD_BYTES} | sizes,
        "in_process": aggregate(run_loop(in_process(repeats, **sizes), chosen)),
    }
    if cross:
        result["cross_process"] = aggregate(
            run_loop(cross_process(repeats, chosen, **sizes), chosen)
        )
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def report_spread(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    for where in ("in_process", "cross_process"):
        part = result.get(where)
        if part is None:
            continue
        echo(spread_line(f"{where} notify p50", part["notify_latency_ms"]["p50"], "ms"))
        echo(spread_line(f"{where} notify p99", part["notify_latency_ms"]["p99"], "ms"))
        echo(spread_line(f"{where} write rtt p50", part["write_rtt_ms"]["p50"], "ms"))
        echo(spread_line(f"{where} write rtt p99", part["write_rtt_ms"]["p99"], "ms"))
        echo(spread_line(f"{where} burst", part["burst_per_s"], "notifications/s"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--notify-n", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=500, help="notifications per second")
    parser.add_argument("--write-n", type=int, default=1000)
    parser.add_argument("--burst-n", type=int, default=2000)
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--in-process-only", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        run_loop(serve(), args.loop)
        return
    result = measure(
        repeats=args.repeats,
        notify_n=args.notify_n,
        rate=args.rate,
        write_n=args.write_n,
        burst_n=args.burst_n,
        loop=args.loop,
        cross=not args.in_process_only,
    )
    report_spread(result, lambda line: print(line, file=sys.stderr))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
