"""The orchestrator's side of the gateway's API: a client, claims, sessions started and running.

What a phone does before it watches: claim devices, start a session on each (``SESSION_BODY``,
quick-lift at level 1) and wait until it runs; and stopping over an authenticated WebSocket
(``WsStopper``) or over REST with a raw HTTP/1.1 client (``RawHttp``: the request bytes are
ready before the clock starts, so a stop's latency is the server's, not httpx's). Nothing here
times anything: the benchmarks stamp around these calls.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

SESSION_BODY = {"program": "quick-lift", "level": 1}
RUNNING_TIMEOUT_S = 10.0


def http_client(base_url: str, token: str) -> Any:
    import httpx

    return httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
    )


async def claim_all(http: Any, devices: list[str]) -> None:
    for address in devices:
        response = await http.post(f"/api/v1/devices/{address}/claim")
        response.raise_for_status()


async def wait_running(http: Any, session_id: str) -> None:
    async with asyncio.timeout(RUNNING_TIMEOUT_S):
        while True:
            response = await http.get(f"/api/v1/sessions/{session_id}")
            response.raise_for_status()
            state = response.json()["state"]
            if state == "running":
                return
            if state not in ("pending", "starting"):
                raise RuntimeError(f"session {session_id} is {state}, expected running")
            await asyncio.sleep(0.02)


async def start_all(http: Any, devices: list[str]) -> list[str]:
    """A running session on every device (quick-lift, level 1)."""
    started = await asyncio.gather(
        *(http.post("/api/v1/sessions", json={"device": a, **SESSION_BODY}) for a in devices)
    )
    ids = []
    for response in started:
        if response.status_code != 201:
            raise RuntimeError(f"session start failed: {response.status_code} {response.text}")
        ids.append(response.json()["id"])
    await asyncio.gather(*(wait_running(http, i) for i in ids))
    return ids


class WsStopper:
    """Stops sessions over one authenticated WebSocket (no per-request token check)."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.ws: Any = None
        self._ids = 0

    async def __aenter__(self) -> WsStopper:
        import websockets

        self.ws = await websockets.connect(
            self.url, subprotocols=["mcgw.v1", f"bearer.{self.token}"], compression=None
        )
        await self.ws.recv()  # hello
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.ws.close()

    async def stop(self, session_id: str) -> None:
        self._ids += 1
        request = f"stop-{self._ids}"
        await self.ws.send(json.dumps({"type": "stop", "id": request, "session_id": session_id}))
        async with asyncio.timeout(10):
            while True:
                reply = json.loads(await self.ws.recv())
                if reply.get("id") == request:
                    if reply["type"] != "ack":
                        raise RuntimeError(f"WebSocket stop refused: {reply}")
                    return


async def watch(url: str, token: str, devices: list[str], **options: Any) -> Any:
    """A WebSocket authenticated with ``token``, subscribed to ``devices`` at 10 Hz."""
    import orjson
    import websockets

    ws = await websockets.connect(url, compression=None, **options)
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    for n, device in enumerate(devices):
        subscribe = {"type": "subscribe", "id": str(n), "device": device, "rate_hz": 10}
        await ws.send(orjson.dumps(subscribe).decode())
    return ws


class RawHttp:
    """One keep-alive HTTP/1.1 connection that sends ready-made requests: no client library
    between the stamp and the bytes on the socket (as the phones are raw WebSocket clients)."""

    def __init__(self, base_url: str, token: str) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self.host, self.port, self.token = host, int(port), token
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawHttp:
        await self.ready()
        return self

    async def ready(self) -> None:
        """An open connection (the server closes an idle keep-alive one after a few seconds);
        call it before the clock starts."""
        reader, writer = self._reader, self._writer
        if reader is None or writer is None or reader.at_eof() or writer.is_closing():
            if writer is not None:
                writer.close()
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def __aexit__(self, *_exc: object) -> None:
        if self._writer is not None:
            self._writer.close()

    def request(self, path: str) -> bytes:
        """A POST with no body, as bytes."""
        return (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    async def send(self, request: bytes) -> int:
        """Send ``request`` and read the whole answer; its status code."""
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.partition(b":")[2])
        await self._reader.readexactly(length)
        return int(head.split(b" ", 2)[1])
