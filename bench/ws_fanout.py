"""WebSocket fan-out: the gateway's live path against a bare uvicorn broadcast and Mosquitto.

One publisher emits telemetry frames (the gateway's own JSON, ``TelemetryFrame.json_bytes``,
~330 bytes, serialised once per frame) at a paced rate to ``--clients`` subscribers in another
process (so the server's CPU is its own), through three systems:

* ``gateway``: the mcgw API (``create_app``) under uvicorn with no radio; frames are published
  into its telemetry hub for one device, and every client subscribes to that device over
  /api/v1/ws as a phone would;
* ``bare``: the floor, a bare Starlette WebSocket endpoint under the same uvicorn settings whose
  broadcaster sends the same bytes to every client in a direct loop;
* ``mosquitto``: the local broker (127.0.0.1:1883) relaying the same bytes, published over a raw
  MQTT 3.1.1 socket (no client library: the Python publisher must not be the bottleneck) to
  subscribers at QoS 0.

For each system the offered rate climbs a ladder (``--rates`` frames/s per client); each step
reports delivered frames/s, latency from publish to the subscriber's read (p50/p99), frames lost,
whether the publisher held the rate, and the server's CPU. The sustained capacity is the highest
step where every frame reached every client within the grace period at the offered rate.

The raw WebSocket and MQTT clients and the "phones" helper process here are reused by
bench/telemetry_e2e.py and bench/capacity.py. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from floors import (
    Child,
    CpuMeter,
    bench_script,
    commands,
    emit,
    latency_stats,
    load_pickle,
    loop_name,
    run_loop,
    save_pickle,
    spread_line,
    summarize,
)

FAKE_DEVICE = "C0:FA:00:00:00:01"
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
MQTT_TOPIC = "mcgw/bench/telemetry"
TICK_S = 0.002
"""Publishers release the frames due every 2 ms (the same pacing for every system)."""
GRACE_S = 0.5
"""After a step, how long frames may still arrive and count as delivered."""
LATENCY_BUDGET_MS = 50.0
"""A step is sustained only with p99 under this: above it frames are queueing up (10x the
BRIEF's 5 ms telemetry budget, so only a growing backlog fails it)."""
WARMUP_S = 1.0
"""A discarded step at the first rate before each ladder (connections and caches warm up)."""
DEFAULT_RATES = [100.0, 200.0, 400.0, 800.0]
READY_TIMEOUT_S = 60.0

OnMessage = Callable[[bytes, float], None]


# --- raw clients -------------------------------------------------------------------------------


class RawWebSocket(asyncio.Protocol):
    """The least a WebSocket client can do, so that 100 of them fit in one Python process.

    Handshake, unfragmented text/binary frames, ping -> pong, masked client frames. Each message
    is handed to ``on_message(payload, received_monotonic_s)``; all the messages of one socket
    read share the read's timestamp.
    """

    def __init__(self, url: str, on_message: OnMessage, subprotocols: list[str]) -> None:
        parts = urlsplit(url)
        self._request = (
            f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            + (f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}\r\n" if subprotocols else "")
            + "\r\n"
        ).encode()
        self._on_message = on_message
        self._buffer = bytearray()
        self._open = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buffer = self._buffer
        buffer += data
        if not self._open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            del buffer[: end + 4]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(f"handshake refused: {status!r}"))
                assert self.transport is not None
                self.transport.close()
                return
            self._open = True
            self.opened.set_result(None)
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            if size - pos < head + length:
                break
            payload = bytes(buffer[pos + head : pos + head + length])
            pos += head + length
            opcode = b0 & 0x0F
            if opcode in (1, 2):
                self._on_message(payload, now)
            elif opcode == 9:
                self._send_frame(0xA, payload)
            elif opcode == 8:
                assert self.transport is not None
                self._send_frame(0x8, payload[:2])
                self.transport.close()
        del buffer[:pos]

    def send_text(self, text: bytes) -> None:
        self._send_frame(0x1, text)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big") if n else 0
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
        self.transport.write(head + mask + masked)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send_frame(0x8, (1000).to_bytes(2, "big"))
            self.transport.close()


async def ws_connect(url: str, on_message: OnMessage, subprotocols: list[str]) -> RawWebSocket:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: RawWebSocket(url, on_message, subprotocols), parts.hostname, parts.port
    )
    await asyncio.wait_for(protocol.opened, 10)
    return protocol


def _mqtt_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def mqtt_publish_packet(topic: str, payload: bytes) -> bytes:
    """One QoS 0 PUBLISH."""
    body = _mqtt_string(topic) + payload
    return b"\x30" + _mqtt_length(len(body)) + body


class RawMqtt(asyncio.Protocol):
    """A minimal MQTT 3.1.1 client: CONNECT (clean session, no keepalive), SUBSCRIBE at QoS 0,
    PUBLISH at QoS 0. Received PUBLISH payloads go to ``on_message(payload, monotonic_s)``."""

    def __init__(self, client_id: str, on_message: OnMessage | None, topic: str | None) -> None:
        self._client_id = client_id
        self._on_message = on_message
        self._topic = topic
        self._buffer = bytearray()
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        body = _mqtt_string("MQTT") + bytes([4, 0x02, 0, 0]) + _mqtt_string(self._client_id)
        self.transport.write(b"\x10" + _mqtt_length(len(body)) + body)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"MQTT connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buffer = self._buffer
        buffer += data
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            kind = buffer[pos] >> 4
            length, multiplier, i = 0, 1, pos + 1
            while True:
                if i >= size:
                    length = -1
                    break
                byte = buffer[i]
                length += (byte & 0x7F) * multiplier
                multiplier *= 128
                i += 1
                if not byte & 0x80:
                    break
            if length < 0 or size - i < length:
                break
            end = i + length
            if kind == 3 and self._on_message is not None:
                topic_len = int.from_bytes(buffer[i : i + 2], "big")
                self._on_message(bytes(buffer[i + 2 + topic_len : end]), now)
            elif kind == 2:  # CONNACK
                if self._topic is None:
                    self.ready.set_result(None)
                else:
                    body = b"\x00\x01" + _mqtt_string(self._topic) + b"\x00"
                    assert self.transport is not None
                    self.transport.write(b"\x82" + _mqtt_length(len(body)) + body)
            elif kind == 9 and not self.ready.done():  # SUBACK
                self.ready.set_result(None)
            pos = end
        del buffer[:pos]


async def mqtt_connect(client_id: str, on_message: OnMessage | None, topic: str | None) -> RawMqtt:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: RawMqtt(client_id, on_message, topic), MQTT_HOST, MQTT_PORT
    )
    await asyncio.wait_for(protocol.ready, 10)
    return protocol


# --- frames and pacing ---------------------------------------------------------------------------


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


# --- the phones: many clients in one helper process ---------------------------------------------


class Records:
    """Every telemetry frame the phones read: who, which device, seq, frame, sent and read time."""

    def __init__(self) -> None:
        self.devices: dict[str, int] = {}
        self.client = array("i")
        self.device = array("i")
        self.seq = array("q")
        self.frame = array("i")
        self.sent = array("d")
        self.read = array("d")
        self.dropped = 0
        self.gaps = 0
        self.other = 0

    def add(self, client: int, message: dict[str, Any], read: float) -> None:
        device = message["device"]
        index = self.devices.get(device)
        if index is None:
            index = self.devices[device] = len(self.devices)
        self.client.append(client)
        self.device.append(index)
        self.seq.append(message["seq"])
        self.frame.append(message["frame"])
        self.sent.append(message["received_at"])
        self.read.append(read)

    def dump(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "client": self.client,
            "device": self.device,
            "seq": self.seq,
            "frame": self.frame,
            "sent": self.sent,
            "read": self.read,
            "dropped": self.dropped,
            "gaps": self.gaps,
        }


async def phones_main(config: dict[str, Any]) -> None:
    """Child side: ``config["clients"]`` clients, each subscribed to its list of devices."""
    import orjson

    records = Records()
    pending: dict[tuple[int, str], asyncio.Future[dict[str, Any]]] = {}
    sockets: list[Any] = []
    kind = config["kind"]
    loop = asyncio.get_running_loop()

    def handler(client: int) -> OnMessage:
        def on_message(payload: bytes, read: float) -> None:
            message = orjson.loads(payload)
            kind = message.get("type")
            if kind == "telemetry":
                records.add(client, message, read)
            elif kind in ("ack", "error"):
                future = pending.pop((client, message.get("id") or ""), None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif kind == "dropped":
                records.dropped += message["count"]
            elif kind == "gap":
                records.gaps += message["missed"]
            elif kind == "ping":
                sockets[client].send_text(b'{"type":"pong"}')
            else:
                records.other += 1

        return on_message

    async def request(client: int, message: dict[str, Any]) -> dict[str, Any]:
        future = pending[(client, message["id"])] = loop.create_future()
        sockets[client].send_text(orjson.dumps(message))
        return await asyncio.wait_for(future, 20)

    subscriptions: list[list[str]] = config["subscriptions"]
    for client, devices in enumerate(subscriptions):
        if kind == "mqtt":
            sockets.append(
                await mqtt_connect(f"phone-{os.getpid()}-{client}", handler(client), MQTT_TOPIC)
            )
            continue
        token = config.get("token")
        protocols = ["mcgw.v1", f"bearer.{token}"] if token else []
        sockets.append(await ws_connect(config["url"], handler(client), protocols))
        # The bare floor has no protocol: every client gets every frame.
        for i, device in enumerate(devices if token else []):
            reply = await request(
                client,
                {
                    "type": "subscribe",
                    "id": f"s{i}",
                    "device": device,
                    "events": False,
                    **({"queue": config["queue"]} if config.get("queue") else {}),
                },
            )
            if reply["type"] != "ack":
                emit("error", message=f"subscribe to {device} refused: {reply}")
                return
    emit("ready", clients=len(sockets))
    async for message in commands():
        if message.get("cmd") == "save":
            save_pickle(message["path"], records.dump())
            count = len(records.read)
            records = Records()
            emit("saved", frames=count)
    for sock in sockets:
        if isinstance(sock, RawWebSocket):
            sock.close()
        elif sock.transport is not None:
            sock.transport.close()
    await asyncio.sleep(0.05)


async def start_phones(config: dict[str, Any]) -> Child:
    child = await Child.start(
        sys.executable, bench_script("ws_fanout.py"), "--phones", json.dumps(config)
    )
    await child.event("ready", READY_TIMEOUT_S)
    return child


async def save_phones(phones: Child) -> dict[str, Any]:
    """The phones' records so far (and a fresh start for theirs)."""
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as handle:
        path = handle.name
    try:
        await phones.command({"cmd": "save", "path": path}, "saved", 120)
        loaded: dict[str, Any] = load_pickle(path)
        return loaded
    finally:
        os.unlink(path)


# --- the systems under test: servers and publishers ---------------------------------------------


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
                emit("step", **await stepper.step(message["rate"], message["seconds"]))
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


def mosquitto_pid() -> int | None:
    """The local broker's process, to read its CPU (None if it is not visible)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "mosquitto":
                    return int(entry.name)
    return None


def mosquitto_reachable() -> bool:
    import socket

    try:
        with socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=0.5):
            return True
    except OSError:
        return False


# --- the orchestrator ---------------------------------------------------------------------------


def step_figures(
    records: dict[str, Any], step: dict[str, Any], clients: int, rate: float, cpu_pct: float
) -> dict[str, Any]:
    """One step's delivered rate, latency and loss from the phones' records."""
    first, last = step["first_seq"], step["last_seq"]
    deadline = step["t1"] + GRACE_S
    latencies: list[float] = []
    last_read = step["t0"]
    for seq, sent, read in zip(records["seq"], records["sent"], records["read"], strict=True):
        if first <= seq <= last and read <= deadline:
            latencies.append((read - sent) * 1000)
            last_read = max(last_read, read)
    expected = (last - first + 1) * clients
    seconds = step["t1"] - step["t0"]
    offered = rate * seconds
    held = step["published"] >= 0.97 * offered
    lost = expected - len(latencies)
    stats = latency_stats(latencies)
    kept_up = stats["p99"] < LATENCY_BUDGET_MS
    return {
        "offered_per_client_hz": rate,
        "offered_per_s": round(rate * clients),
        "published_per_s": round(step["published"] / seconds),
        "delivered_per_s": round(len(latencies) / max(last_read - step["t0"], seconds)),
        "latency_ms": {k: round(v, 3) for k, v in stats.items() if k != "n"},
        "lost": lost,
        "held_rate": held,
        "sustained": held and lost == 0 and kept_up,
        "server_cpu_pct": round(cpu_pct, 1),
    }


async def ladder(
    server: Child,
    phones: Child,
    server_pid: int | None,
    clients: int,
    rates: list[float],
    seconds: float,
) -> list[dict[str, Any]]:
    steps = []
    meter = CpuMeter(server_pid) if server_pid else None
    await server.command({"cmd": "step", "rate": rates[0], "seconds": WARMUP_S}, "step")
    await asyncio.sleep(GRACE_S)
    await save_phones(phones)  # discards the warm-up's frames
    for rate in rates:
        if meter:
            meter.start()
        reply = await server.command({"cmd": "step", "rate": rate, "seconds": seconds}, "step")
        cpu = meter.stop() if meter else math.nan
        assert reply is not None
        steps.append((rate, reply, cpu))
        await asyncio.sleep(GRACE_S)
    records = await save_phones(phones)
    return [step_figures(records, reply, clients, rate, cpu) for rate, reply, cpu in steps]


async def run_system(
    system: str, clients: int, rates: list[float], seconds: float, repeats: int, loop: str
) -> list[list[dict[str, Any]]]:
    """Every repeat of the ladder on one system: [repeat][step]."""
    from telemetry_e2e import start_hub

    subscriptions = [[FAKE_DEVICE]] * clients
    if system == "gateway":
        server = await start_hub(ble="none", loop=loop)
        ready = server.ready
        phones_config = {"kind": "ws", "url": ready["url"], "token": ready["token"]}
        server_pid: int | None = server.pid
    elif system == "bare":
        server = await Child.start(
            sys.executable, bench_script("ws_fanout.py"), "--bare", "--loop", loop
        )
        ready = await server.event("ready", READY_TIMEOUT_S)
        phones_config = {"kind": "ws", "url": ready["url"]}
        server_pid = server.pid
    else:
        server = await Child.start(
            sys.executable, bench_script("ws_fanout.py"), "--mqtt-pub", "--loop", loop
        )
        await server.event("ready", READY_TIMEOUT_S)
        phones_config = {"kind": "mqtt"}
        server_pid = mosquitto_pid()
    runs = []
    async with server:
        phones = await start_phones(phones_config | {"subscriptions": subscriptions})
        async with phones:
            for _ in range(repeats):
                runs.append(await ladder(server, phones, server_pid, clients, rates, seconds))
    return runs


def summarize_system(runs: list[list[dict[str, Any]]], rates: list[float]) -> dict[str, Any]:
    steps = []
    for i, rate in enumerate(rates):
        per = [run[i] for run in runs]
        steps.append(
            {
                "offered_per_s": per[0]["offered_per_s"],
                "offered_per_client_hz": rate,
                "delivered_per_s": summarize([s["delivered_per_s"] for s in per], 0),
                "p50_ms": summarize([s["latency_ms"]["p50"] for s in per]),
                "p99_ms": summarize([s["latency_ms"]["p99"] for s in per]),
                "lost": [s["lost"] for s in per],
                "sustained": [s["sustained"] for s in per],
                "server_cpu_pct": summarize([s["server_cpu_pct"] for s in per], 1),
            }
        )
    capacities = []
    for run in runs:
        ok = [s["offered_per_s"] for s in run if s["sustained"]]
        capacities.append(max(ok) if ok else 0)
    return {
        "steps": steps,
        "sustained_capacity_per_s": summarize(capacities, 0),
        "max_delivered_per_s": summarize(
            [max(s["delivered_per_s"] for s in run) for run in runs], 0
        ),
    }


async def measure_async(
    *,
    clients: int,
    rates: list[float],
    seconds: float,
    repeats: int,
    loop: str,
    systems: list[str],
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "bench": "ws_fanout",
        "config": {
            "clients": clients,
            "rates_per_client_hz": rates,
            "step_s": seconds,
            "repeats": repeats,
            "loop": loop,
            "frame_bytes": len(frame_bytes(0)),
        },
        "systems": {},
        "systems_not_measured": {},
    }
    for system in systems:
        if system == "mosquitto" and not mosquitto_reachable():
            result["systems_not_measured"][system] = f"no MQTT broker on {MQTT_HOST}:{MQTT_PORT}"
            continue
        runs = await run_system(system, clients, rates, seconds, repeats, loop)
        result["systems"][system] = summarize_system(runs, rates)
        if system == "mosquitto" and mosquitto_pid() is None:
            result["systems"][system]["note"] = "broker CPU not visible (another namespace)"
    return result


def measure(
    *,
    clients: int = 100,
    rates: list[float] | None = None,
    seconds: float = 2.0,
    repeats: int = 3,
    loop: str = "auto",
    systems: list[str] | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    chosen = loop_name(loop)
    result = asyncio.run(
        measure_async(
            clients=clients,
            rates=rates or DEFAULT_RATES,
            seconds=seconds,
            repeats=repeats,
            loop=chosen,
            systems=systems or ["bare", "gateway", "mosquitto"],
        )
    )
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def report_spread(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    for system, figures in result["systems"].items():
        echo(
            spread_line(
                f"{system} sustained capacity", figures["sustained_capacity_per_s"], "frames/s"
            )
        )
        echo(spread_line(f"{system} max delivered", figures["max_delivered_per_s"], "frames/s"))
        first = figures["steps"][0]
        echo(spread_line(f"{system} p99 at {first['offered_per_s']}/s", first["p99_ms"], "ms"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rates", type=float, nargs="+", default=DEFAULT_RATES)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--systems", nargs="+", default=["bare", "gateway", "mosquitto"])
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--phones", help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mqtt-pub", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phones:
        run_loop(phones_main(json.loads(args.phones)), "auto")
        return
    if args.bare:
        run_loop(bare_main(), args.loop)
        return
    if args.mqtt_pub:
        run_loop(mqtt_publisher_main(), args.loop)
        return
    result = measure(
        clients=args.clients,
        rates=args.rates,
        seconds=args.seconds,
        repeats=args.repeats,
        loop=args.loop,
        systems=args.systems,
    )
    report_spread(result, lambda line: print(line, file=sys.stderr))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
