"""The orchestrator's side of the gateway's API: a client, claims, sessions started and running.

What a phone does before it watches: claim devices, start a session on each (``SESSION_BODY``,
quick-lift at level 1) and wait until it runs; and stopping over an authenticated WebSocket
(``WsStopper``). Nothing here times anything: the benchmarks stamp around these calls.
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
