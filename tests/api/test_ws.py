"""The WebSocket: authentication variants, resume without gaps, a slow client that never reads,
down-sampling, ownership, and hostile messages.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.api.hub import Hub, make_settings, recv, recv_until, request, serve, ws_connect

START = {"program": "quick-lift", "level": 1}


def is_frame(message: dict[str, Any]) -> bool:
    return message["type"] == "telemetry"


async def frames(ws: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` telemetry frames, failing on any loss marker."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        message = await recv(ws)
        assert message["type"] not in ("dropped", "gap"), message
        if is_frame(message):
            got.append(message)
    return got


async def read_until_closed(ws: Any) -> tuple[list[dict[str, Any]], ConnectionClosed]:
    read: list[dict[str, Any]] = []
    try:
        while True:
            read.append(await recv(ws))
    except ConnectionClosed as closed:
        return read, closed


async def test_auth_by_message_header_or_subprotocol(hub: Hub) -> None:
    _, token = await hub.user("ada")
    by_message = await ws_connect(hub, token)
    await by_message.send(orjson.dumps({"type": "ping", "id": "p"}).decode())
    assert (await recv(by_message))["type"] == "pong"
    await by_message.close()

    async with websockets.connect(
        hub.ws_url, additional_headers={"Authorization": f"Bearer {token}"}
    ) as by_header:
        hello = await recv(by_header)
        assert hello["type"] == "hello"
        assert hello["heartbeat_s"] > 0

    async with websockets.connect(
        hub.ws_url,
        subprotocols=["mcgw.v1", f"bearer.{token}"],  # type: ignore[list-item]
    ) as by_protocol:
        assert by_protocol.subprotocol == "mcgw.v1"  # never the token
        assert (await recv(by_protocol))["type"] == "hello"
        await by_protocol.send(orjson.dumps({"type": "ping", "id": "x"}).decode())
        assert await recv(by_protocol) == {"type": "pong", "id": "x"}


@pytest.mark.parametrize(
    "first",
    [
        {"type": "auth", "token": "mcgw_wrong"},
        {"type": "subscribe", "device": "C0:4D:43:00:00:00"},
        {"type": "auth"},
        "not json at all",
    ],
)
async def test_unauthenticated_connections_are_closed_with_4401(hub: Hub, first: Any) -> None:
    async with websockets.connect(hub.ws_url) as ws:
        await ws.send(first if isinstance(first, str) else orjson.dumps(first).decode())
        reply = orjson.loads(await ws.recv())
        assert reply["type"] == "error"
        assert reply["problem"]["status"] == 401
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401


async def test_resume_after_reconnect_has_no_gap(hub: Hub) -> None:
    _, token = await hub.user("ada")
    address = await hub.claimed_device(token)
    ws = await ws_connect(hub, token)
    await request(ws, {"type": "subscribe", "id": "s", "device": address, "events": False})
    # A second phone keeps watching, so the device streams at its full rate while we are away
    # (with nobody watching it would drop to the idle rate).
    watcher = await ws_connect(hub, token)
    await request(watcher, {"type": "subscribe", "id": "w", "device": address, "events": False})
    before = await frames(ws, 20)
    await ws.close()
    last = before[-1]["seq"]
    while hub.runtime.hub.counters.frames_in < last * 2 + 40:  # frames flow while we are away
        await asyncio.sleep(0.05)

    ws = await ws_connect(hub, token)
    ack = await request(
        ws,
        {"type": "subscribe", "id": "s", "device": address, "from_seq": last + 1, "events": False},
    )
    assert ack["type"] == "ack"
    after = await frames(ws, 60)
    seqs = [f["seq"] for f in after]
    assert seqs == list(range(last + 1, last + 61))
    # Neither client reads what is still queued for it, so a closing handshake would wait on it.
    ws.transport.abort()
    watcher.transport.abort()


async def test_a_slow_client_is_told_what_it_missed_and_never_stalls_others(tmp_path: Path) -> None:
    async with serve(make_settings(tmp_path)) as hub:
        _, token = await hub.user("ada")
        address = await hub.claimed_device(token)
        # A tiny receive buffer and a client that never reads: the server's sends soon block.
        raw = socket.create_connection(("127.0.0.1", int(hub.base_url.rsplit(":", 1)[1])))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        slow = await ws_connect(hub, token, sock=raw, max_queue=1)
        hub.throttle_client(raw.getsockname()[1])
        await request(slow, {"type": "subscribe", "id": "s", "device": address, "queue": 8})

        fast = await ws_connect(hub, token)
        await request(fast, {"type": "subscribe", "id": "s", "device": address, "events": False})
        received: list[dict[str, Any]] = []
        while hub.runtime.hub.counters.frames_dropped == 0:
            received.extend(await frames(fast, 10))
        received.extend(await frames(fast, 50))  # still flowing after the slow one overflowed
        seqs = [f["seq"] for f in received]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))

        dropped, before = await recv_until(slow, lambda m: m["type"] == "dropped", timeout_s=30)
        assert dropped["count"] > 0
        assert dropped["device"] == address
        previous = [m for m in before if is_frame(m)][-1]
        following = (await frames(slow, 1))[0]
        assert following["seq"] == previous["seq"] + dropped["count"] + 1
        # Neither client reads what is queued for it, so a closing handshake would wait on it.
        slow.transport.abort()
        fast.transport.abort()


async def test_rate_hz_down_samples_on_the_device_clock(hub: Hub) -> None:
    _, token = await hub.user("ada")
    address = await hub.claimed_device(token)
    ws = await ws_connect(hub, token)
    await request(ws, {"type": "subscribe", "id": "s", "device": address, "rate_hz": 10})
    times = [f["device_time_ms"] for f in await frames(ws, 8)]
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert all(80 <= step <= 120 for step in steps), steps
    await ws.close()


async def test_ownership_and_hostile_messages(hub: Hub) -> None:
    _, ada = await hub.user("ada")
    _, bob = await hub.user("bob")
    address = await hub.claimed_device(ada)
    session = (
        await hub.client(ada).post("/api/v1/sessions", json={"device": address, **START})
    ).json()
    ws = await ws_connect(hub, bob)

    async def problem(message: dict[str, Any]) -> dict[str, Any]:
        reply = await request(ws, message)
        assert reply["type"] == "error", reply
        body: dict[str, Any] = reply["problem"]
        return body

    assert (await problem({"type": "subscribe", "id": "1", "device": address}))["status"] == 404
    assert (await problem({"type": "subscribe", "id": "2", "session_id": session["id"]}))[
        "status"
    ] == 404
    for kind in ("stop", "pause", "resume"):
        assert (await problem({"type": kind, "id": kind, "session_id": session["id"]}))[
            "status"
        ] == 404
    assert (
        await problem({"type": "set_level", "id": "l", "session_id": session["id"], "level": 5})
    )["status"] == 404
    assert hub.runtime.sessions.get(session["id"]).state.value == "running"

    unknown = await problem({"type": "subscribe", "id": "3", "device": address, "colour": "red"})
    assert unknown["status"] == 422
    assert unknown["errors"][0]["field"] == "colour"
    assert (await problem({"type": "explode", "id": "4"}))["status"] == 422
    assert (await problem({"type": "set_level", "id": "5", "session_id": "a", "level": 9}))[
        "status"
    ] == 422
    assert (await problem({"type": "subscribe", "id": "6"}))["status"] == 422
    assert (await problem({"type": "auth", "id": "7", "token": bob}))["status"] == 409
    assert (await problem({"type": "unsubscribe", "id": "8", "subscription": "s99"}))[
        "status"
    ] == 404

    await ws.send("{broken")
    broken = await recv(ws)
    assert broken["type"] == "error"
    assert broken["problem"]["status"] == 400
    await ws.send(b"[1, 2, 3]")
    assert (await recv(ws))["problem"]["status"] == 422
    await ws.send(orjson.dumps({"type": "ping", "id": "alive"}).decode())
    assert await recv(ws) == {"type": "pong", "id": "alive"}  # errors never end the connection

    await ws.send("x" * (hub.settings.api.max_body_bytes + 1))
    with pytest.raises(ConnectionClosed) as closed:
        await recv(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


async def test_session_subscription_gets_its_events_and_acks_commands(hub: Hub) -> None:
    _, token = await hub.user("ada")
    address = await hub.claimed_device(token)
    session = (
        await hub.client(token).post("/api/v1/sessions", json={"device": address, **START})
    ).json()
    ws = await ws_connect(hub, token)
    ack = await request(ws, {"type": "subscribe", "id": "s", "session_id": session["id"]})
    assert ack["session_id"] == session["id"]
    frame, _ = await recv_until(ws, is_frame)
    assert frame["session_id"] == session["id"]
    level = await request(
        ws, {"type": "set_level", "id": "up", "session_id": session["id"], "level": 3}
    )
    assert level["type"] == "ack"
    assert level["session"]["level"] == 3
    notice, _ = await recv_until(
        ws, lambda m: m["type"] == "session_notice" and m["notice"] == "intensity"
    )
    assert notice["detail"] == {"from": 1, "to": 3}
    paused = await request(ws, {"type": "pause", "id": "p", "session_id": session["id"]})
    assert paused["session"]["state"] == "paused"
    stop = await request(ws, {"type": "stop", "id": "s2", "session_id": session["id"]})
    assert stop["session"]["state"] == "stopped"
    again = await request(ws, {"type": "pause", "id": "p2", "session_id": session["id"]})
    assert again["type"] == "error"
    assert again["problem"]["status"] == 409
    await ws.close()


async def test_a_silent_client_is_closed_after_three_heartbeats(hub: Hub) -> None:
    _, token = await hub.user("ada")
    async with websockets.connect(hub.ws_url) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token, "heartbeat_s": 1}).decode())
        hello = await recv(ws)
        assert hello["heartbeat_s"] == 1
        read, closed = await read_until_closed(ws)  # read, never answer
        assert closed.rcvd is not None
        assert closed.rcvd.code == 4408
        assert sum(m["type"] == "ping" for m in read) >= 2
    assert not hub.app.state.connections
