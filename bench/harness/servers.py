"""The servers and publishers of the fan-out: paced by ``step`` commands from the orchestrator.

A server helper (the gateway hub, the bare Starlette broadcast, the MQTT publisher) answers
``{"cmd": "step", "rate": R, "seconds": S}`` by publishing R frames/s for S seconds
(``Stepper``, released every ``TICK_S``) and says which sequence numbers it used (with
``"profile": path``, under cProfile of its event-loop thread). Every server
runs under the same uvicorn settings (``uvicorn_config``, as ``mcgw serve``). The frames are the
gateway's own JSON for a fake device (``frame_bytes``), serialised once per frame. Nothing here
reads what the phones received.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from harness.processes import commands, emit
from harness.profiles import profiled
from harness.wire import MQTT_TOPIC, mqtt_connect, mqtt_publish_packet

FAKE_DEVICE = "C0:FA:00:00:00:01"
TICK_S = 0.002
"""Publishers release the frames due every 2 ms (the same pacing for every system)."""
READY_TIMEOUT_S = 60.0


def sample(n: int) -> Any:
    """A plausible telemetry sample, the ``n``-th of a device."""
    from ble.protocol import DeviceState, FaultFlags, TelemetrySample

    return TelemetrySample(
        frame=n % 65536,
        device_time_ms=(1000 + n * 20) % (1 << 32),
        state=DeviceState.RUNNING,
        segment_id=n // 50 % 65000,
        segment_elapsed_ms=(n % 50) * 20,
        current_mean_ua=300 + n % 17,
        current_peak_ua=330 + n % 13,
        impedance_10ohm=480 + n % 7,
        contact_quality=95,
        battery_pct=88,
        temperature_dc=330,
        faults=FaultFlags.NONE,
    )


def frame_bytes(n: int) -> bytes:
    """The gateway's JSON for frame ``n`` of FAKE_DEVICE, stamped with the publish time."""
    from gateway.telemetry import TelemetryFrame

    return TelemetryFrame(FAKE_DEVICE, n, sample(n), None, None, time.monotonic()).json_bytes


async def paced(
    rate: float, seconds: float, publish: Callable[[int], Awaitable[None] | None]
) -> dict[str, Any]:
    """Call ``publish(n)`` ``rate`` times a second for ``seconds``, releasing what is due every
    TICK_S. A publisher that cannot keep up publishes fewer (reported), never more."""
    start = time.monotonic()
    end = start + seconds
    published = 0
    while (now := time.monotonic()) < end:
        due = min(int((now - start) * rate) + 1, int(seconds * rate))
        while published < due:
            result = publish(published)
            if result is not None:
                await result
            published += 1
        await asyncio.sleep(TICK_S)
    return {"published": published, "t0": start, "t1": time.monotonic()}


class Stepper:
    """A publisher's step command: run ``rate`` frames/s for ``seconds``; the seq range used."""

    def __init__(self, publish: Callable[[int], Awaitable[None] | None]) -> None:
        self._publish = publish
        self.next_n = 0

    async def step(self, rate: float, seconds: float) -> dict[str, Any]:
        first = self.next_n

        def one(i: int) -> Awaitable[None] | None:
            return self._publish(first + i)

        result = await paced(rate, seconds, one)
        self.next_n = first + result["published"]
        # seq of frame n is n: the hub numbers a new device from its first frame counter (0).
        return result | {"first_seq": first, "last_seq": self.next_n - 1}


async def bare_main() -> None:
    """Child side: a bare Starlette WebSocket broadcast under uvicorn (the floor)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    clients: set[WebSocket] = set()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        clients.add(websocket)
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            clients.discard(websocket)

    async def broadcast(n: int) -> None:
        text = frame_bytes(n).decode()  # serialised once, like the hub; sent as text frames
        for websocket in list(clients):
            with contextlib.suppress(Exception):
                await websocket.send_text(text)

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    server = uvicorn.Server(uvicorn_config(app))
    await run_server_with_steps(server, Stepper(broadcast), "/ws")


def uvicorn_config(app: Any) -> Any:
    """The uvicorn settings every server in the benchmarks uses (as the API tests do)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
    )


async def run_server_with_steps(
    server: Any,
    stepper: Stepper | None,
    path: str,
    ready: dict[str, Any] | None = None,
    on_command: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]] | None = None,
    before_ready: Callable[[int], Awaitable[dict[str, Any]]] | None = None,
) -> None:
    """Run ``server`` until stdin closes, answering ``step`` (and ``on_command``) commands."""
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited during start-up")
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        extra = await before_ready(port) if before_ready else {}
        emit(
            "ready",
            port=port,
            url=f"ws://127.0.0.1:{port}{path}",
            pid=os.getpid(),
            **(ready or {}),
            **extra,
        )
        async for message in commands():
            if message.get("cmd") == "step" and stepper is not None:
                # With "profile": the step under cProfile, written to that path.
                step = stepper.step(message["rate"], message["seconds"])
                emit("step", **await profiled(step, message.get("profile")))
            elif on_command is not None:
                reply = await on_command(message)
                if reply is not None:
                    emit(**reply)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(20):
                await task


async def mqtt_publisher_main() -> None:
    """Child side: a raw-socket MQTT publisher of the same frames."""
    publisher = await mqtt_connect(f"bench-pub-{os.getpid()}", None, None)
    transport = publisher.transport
    assert transport is not None

    def publish(n: int) -> None:
        transport.write(mqtt_publish_packet(MQTT_TOPIC, frame_bytes(n)))

    stepper = Stepper(publish)
    emit("ready", pid=os.getpid())
    async for message in commands():
        if message.get("cmd") == "step":
            emit("step", **await stepper.step(message["rate"], message["seconds"]))
    transport.close()
