"""Helpers of the API suite: a real hub (two simulated devices, a SQLite file) served by uvicorn.

``serve`` (and the ``hub`` fixture of conftest.py) starts ``create_app(settings)`` under uvicorn
on 127.0.0.1 with a free port, in the test's own event loop, and yields a ``Hub`` with its URLs,
the running ``Runtime``, and helpers that make users and tokens through the storage functions
(as `mcgw token create` and `mcgw pair` do). Every test gets its own app, database and virtual
radio; nothing is shared. A shutdown that hangs prints every task's stack before failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
import websockets
from fastapi import FastAPI
from sqlmodel import Session

from api.app import create_app
from gateway.config import Settings
from gateway.runtime import Runtime
from gateway.storage import pairing, repo

PEPPER = "test-pepper"
SERVER_START_TIMEOUT_S = 15.0
SERVER_STOP_TIMEOUT_S = 20.0


@dataclass
class Hub:
    """One running hub and what a test needs to talk to it."""

    app: FastAPI
    server: uvicorn.Server
    base_url: str
    ws_url: str
    settings: Settings
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def db(self, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        return await self.runtime.db(fn, **kwargs)

    async def user(
        self, name: str, *, admin: bool = False, consent: bool = True, cap_ua: int | None = None
    ) -> tuple[int, str]:
        """A user and a bearer token for them (as `mcgw token create` would make)."""

        def make(*, session: Session) -> tuple[int, str]:
            user = repo.create_user(session=session, name=name, is_admin=admin, cap_ua=cap_ua)
            assert user.id is not None
            if consent:
                repo.accept_consent(session=session, user_id=user.id, version="2026-11")
            _, token = repo.create_token(session=session, user_id=user.id, name="t", pepper=PEPPER)
            return user.id, token

        result: tuple[int, str] = await self.db(make)
        return result

    async def pairing_code(self, name: str) -> str:
        """A one-time code, as `mcgw pair` prints it."""

        def make(*, session: Session) -> str:
            return pairing.create_pairing_code(session=session, pepper=PEPPER, user_name=name).code

        code: str = await self.db(make)
        return code

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=20.0)
        self.clients.append(client)
        return client

    def throttle_client(self, client_port: int, buffer_bytes: int = 4096) -> None:
        """Make the server's side of one client's TCP connection buffer little (a slow network).

        Loopback buffers megabytes, which would take a minute of telemetry to fill.
        """
        for protocol in self.server.server_state.connections:
            client = getattr(protocol, "client", None)
            if client is not None and client[1] == client_port:
                transport = protocol.transport  # type: ignore[attr-defined]
                transport.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes
                )
                transport.set_write_buffer_limits(high=buffer_bytes)
                return
        raise LookupError(f"no connection from port {client_port}")

    async def claimed_device(self, token: str, index: int = 0) -> str:
        """The address of simulated device ``index``, claimed by the token's user."""
        await self.runtime.wait_connected()
        address = self.runtime.devices.addresses()[index]
        response = await self.client(token).post(f"/api/v1/devices/{address}/claim")
        assert response.status_code == 200, response.text
        return address


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "hub_id": "hub-test",
        "ble": {"mode": "sim:2"},
        "db": {"url": f"sqlite:///{tmp_path / 'mcgw.db'}", "telemetry_flush_s": 0.2},
        "mdns": False,
        "token_pepper": PEPPER,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Hub]:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(SERVER_START_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()  # raises the start-up error
                    raise RuntimeError("uvicorn exited during start-up")
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        hub = Hub(
            app=app,
            server=server,
            base_url=f"http://127.0.0.1:{port}",
            ws_url=f"ws://127.0.0.1:{port}/api/v1/ws",
            settings=settings,
        )
        try:
            yield hub
        finally:
            for client in hub.clients:
                await client.aclose()
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(SERVER_STOP_TIMEOUT_S):
                await task
        except TimeoutError:
            for pending in asyncio.all_tasks():  # say where shutdown is stuck
                pending.print_stack()
            raise


# --- WebSocket helpers ----------------------------------------------------------------------------


async def ws_connect(hub: Hub, token: str | None = None, **kwargs: Any) -> Any:
    """An authenticated WebSocket (auth message first) after its ``hello``."""
    ws = await websockets.connect(hub.ws_url, compression=None, **kwargs)
    if token is not None:
        await ws.send(orjson.dumps({"type": "auth", "token": token, "id": "auth"}).decode())
        assert (await recv(ws))["type"] == "ack"
        hello = await recv(ws)
        assert hello["type"] == "hello", hello
    return ws


async def recv(ws: Any, timeout_s: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        message: dict[str, Any] = orjson.loads(await ws.recv())
    return message


async def recv_until(
    ws: Any, accept: Callable[[dict[str, Any]], bool], timeout_s: float = 15.0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read until a message ``accept``s; returns it and everything read before it."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while True:
            message = await recv(ws, timeout_s)
            if accept(message):
                return message, seen
            seen.append(message)


async def request(ws: Any, message: dict[str, Any]) -> dict[str, Any]:
    """Send a message with an id and return the ack or error that answers it (skipping data)."""
    await ws.send(orjson.dumps(message).decode())
    reply, _ = await recv_until(
        ws, lambda m: m.get("id") == message["id"] and m["type"] in ("ack", "error")
    )
    return reply
