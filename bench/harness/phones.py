"""The phones: many WebSocket (or MQTT) clients in one helper process, recording every frame.

``start_phones(config)`` starts the helper (bench/helper.py phones) and returns once every
client is connected and subscribed; ``save_phones`` fetches what they read so far (``Records``,
compact arrays) and starts them afresh. The phones run in their own process so that a server's
CPU is its own. Joining the records with what was sent is the benchmarks' business, not this
module's.
"""

from __future__ import annotations

import asyncio
import os
from array import array
from typing import Any

from harness.processes import Child, commands, emit, save_pickle, start_helper
from harness.wire import MQTT_TOPIC, OnMessage, RawWebSocket, mqtt_connect, ws_connect

READY_TIMEOUT_S = 60.0


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


class Phones:
    """Child side: the clients, what they read, and the replies they wait for."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.records = Records()
        self.pending: dict[tuple[int, str], asyncio.Future[dict[str, Any]]] = {}
        self.sockets: list[Any] = []

    def handler(self, client: int) -> OnMessage:
        import orjson

        def on_message(payload: bytes, read: float) -> None:
            message = orjson.loads(payload)
            kind = message.get("type")
            records = self.records
            if kind == "telemetry":
                records.add(client, message, read)
            elif kind in ("ack", "error"):
                future = self.pending.pop((client, message.get("id") or ""), None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif kind == "dropped":
                records.dropped += message["count"]
            elif kind == "gap":
                records.gaps += message["missed"]
            elif kind == "ping":
                self.sockets[client].send_text(b'{"type":"pong"}')
            else:
                records.other += 1

        return on_message

    async def request(self, client: int, message: dict[str, Any]) -> dict[str, Any]:
        import orjson

        future = asyncio.get_running_loop().create_future()
        self.pending[(client, message["id"])] = future
        self.sockets[client].send_text(orjson.dumps(message))
        return await asyncio.wait_for(future, 20)

    async def connect(self, client: int, devices: list[str]) -> None:
        """One client, subscribed to ``devices``; raises if a subscription is refused."""
        config = self.config
        if config["kind"] == "mqtt":
            name = f"phone-{os.getpid()}-{client}"
            self.sockets.append(await mqtt_connect(name, self.handler(client), MQTT_TOPIC))
            return
        token = config.get("token")
        protocols = ["mcgw.v1", f"bearer.{token}"] if token else []
        self.sockets.append(await ws_connect(config["url"], self.handler(client), protocols))
        # The bare floor has no protocol: every client gets every frame.
        queue = {"queue": config["queue"]} if config.get("queue") else {}
        for i, device in enumerate(devices if token else []):
            subscribe = {"type": "subscribe", "id": f"s{i}", "device": device, "events": False}
            reply = await self.request(client, subscribe | queue)
            if reply["type"] != "ack":
                raise RuntimeError(f"subscribe to {device} refused: {reply}")

    def close(self) -> None:
        for sock in self.sockets:
            if isinstance(sock, RawWebSocket):
                sock.close()
            elif sock.transport is not None:
                sock.transport.close()


async def phones_main(config: dict[str, Any]) -> None:
    """Child side: ``config["subscriptions"]`` clients, each subscribed to its list of devices."""
    phones = Phones(config)
    for client, devices in enumerate(config["subscriptions"]):
        try:
            await phones.connect(client, devices)
        except RuntimeError as exc:
            emit("error", message=str(exc))
            return
    emit("ready", clients=len(phones.sockets))
    async for message in commands():
        if message.get("cmd") == "save":
            save_pickle(message["path"], phones.records.dump())
            count = len(phones.records.read)
            phones.records = Records()
            emit("saved", frames=count)
    phones.close()
    await asyncio.sleep(0.05)


async def start_phones(config: dict[str, Any]) -> Child:
    return await start_helper("phones", config, timeout_s=READY_TIMEOUT_S)


async def save_phones(phones: Child) -> dict[str, Any]:
    """The phones' records so far (and a fresh start for theirs)."""
    loaded: dict[str, Any] = await phones.fetch("save", "saved", 120)
    return loaded
