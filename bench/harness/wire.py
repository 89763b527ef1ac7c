"""The raw WebSocket and MQTT clients the phones and publishers speak with.

The least a client can do, so that 100 of them fit in one Python process and the client is
never what a benchmark measures: no ``websockets``/``paho-mqtt`` per-frame overhead. Not a
general client: unfragmented frames, QoS 0, no reconnects.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
MQTT_TOPIC = "mcgw/bench/telemetry"

OnMessage = Callable[[bytes, float], None]


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
