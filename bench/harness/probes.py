"""What the bench records inside a helper process: air times, GC pauses, event-loop lag.

``AirRecorder`` wraps the simulator's transmitter and firmware (never gateway code) to record
when each telemetry notification goes on air and when a STOP turns output off; ``GcPauses`` and
``LoopLag`` explain stalls. They only record; joining and judging is the benchmarks' work.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from typing import Any

from harness.stats import latency_stats


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
