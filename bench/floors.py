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

The statistics, helper processes and machine description it used to hold for every benchmark
are in bench/harness/. This module deliberately does not measure anything of the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import struct
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from harness import radio
from harness.processes import Child, add_loop_argument, commands, emit, loop_name, run_loop
from harness.report import print_result
from harness.stats import latency_stats, summarize, summarize_quantiles

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


async def start_bench_peripheral(air: Any) -> BenchPeripheral:
    """Attach, serve and advertise (every 20 ms) the bench peripheral on the radio ``air``."""
    from bumble.core import UUID, AdvertisingData
    from bumble.gatt import Characteristic, CharacteristicValue, Service

    device = air.attach(PERIPHERAL_NAME, PERIPHERAL_ADDRESS)
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

    scanner, client_backend = radio.bleak_backends(adapter)
    device = await BleakScanner.find_device_by_address(
        PERIPHERAL_ADDRESS, timeout=FIND_TIMEOUT_S, backend=scanner
    )
    if device is None:
        raise RuntimeError(f"the bench peripheral {PERIPHERAL_ADDRESS} was not found")
    async with BleakClient(device, backend=client_backend) as client:
        yield client


async def _repeat(client: Any, repeats: int, sizes: dict[str, int]) -> list[dict[str, Any]]:
    return [await measure_client(client, **sizes) for _ in range(repeats)]


async def in_process(repeats: int, **sizes: int) -> list[dict[str, Any]]:
    """Every floor with the peripheral and the central on one VirtualRadio in this process."""
    air = radio.virtual_radio()
    try:
        peripheral = await start_bench_peripheral(air)
        async with (
            await radio.open_adapter("virtual", air) as adapter,
            connected(adapter) as client,
        ):
            runs = await _repeat(client, repeats, sizes)
        await peripheral.close()
        await peripheral.device.power_off()
    finally:
        await air.close()
    return runs


async def cross_process(repeats: int, loop: str = "auto", **sizes: int) -> list[dict[str, Any]]:
    """Every floor with the peripheral in a child process, over HCI over TCP."""
    chosen = loop_name(loop)
    child = await Child.start(sys.executable, __file__, "--serve", "--loop", chosen)
    async with child:
        port = (await child.event("ready", SERVE_START_TIMEOUT_S))["port"]
        async with (
            await radio.open_adapter(f"tcp-client:127.0.0.1:{port}") as adapter,
            connected(adapter) as client,
        ):
            return await _repeat(client, repeats, sizes)


async def serve() -> None:
    """Child side: the bench peripheral on a radio served over TCP until stdin closes."""
    air = radio.virtual_radio()
    peripheral = await start_bench_peripheral(air)
    async with radio.hci_tcp_server(air, port=0) as server:
        emit("ready", port=server.port)
        async for _ in commands():
            pass
    await peripheral.close()
    await air.close()


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-repeat results -> one figure per metric with its spread across repeats."""
    return {
        "notify_latency_ms": summarize_quantiles(runs, "notify_ms"),
        "notify_lost": sum(r["notify_lost"] for r in runs),
        "write_rtt_ms": summarize_quantiles(runs, "write_rtt_ms"),
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


def spread_lines(result: dict[str, Any]) -> list[tuple[str, Any, str] | str]:
    lines: list[tuple[str, Any, str] | str] = []
    for where in ("in_process", "cross_process"):
        part = result.get(where)
        if part is None:
            continue
        lines += [
            (f"{where} notify p50", part["notify_latency_ms"]["p50"], "ms"),
            (f"{where} notify p99", part["notify_latency_ms"]["p99"], "ms"),
            (f"{where} write rtt p50", part["write_rtt_ms"]["p50"], "ms"),
            (f"{where} write rtt p99", part["write_rtt_ms"]["p99"], "ms"),
            (f"{where} burst", part["burst_per_s"], "notifications/s"),
        ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--notify-n", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=500, help="notifications per second")
    parser.add_argument("--write-n", type=int, default=1000)
    parser.add_argument("--burst-n", type=int, default=2000)
    add_loop_argument(parser)
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
    print_result(result, spread_lines(result))


if __name__ == "__main__":
    main()
