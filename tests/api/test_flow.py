"""The whole phone flow over real HTTP and a real WebSocket against a hub with simulated devices.

pair with a code from the storage function (as `mcgw pair` makes it) -> consent -> devices ->
claim -> watch the device over the WebSocket -> start -> live telemetry and a "move" cue ->
pause (REST) -> resume (WebSocket, acknowledged) -> stop -> history, events, CSV, statistics.
"""

from __future__ import annotations

import asyncio
import csv
import io

from tests.api.hub import Hub, recv_until, request, ws_connect


async def test_phone_flow_from_pairing_to_history(hub: Hub) -> None:
    anonymous = hub.client()
    code = await hub.pairing_code("ada")
    paired = await anonymous.post("/api/v1/pair", json={"code": code, "client_name": "Ada's phone"})
    assert paired.status_code == 201, paired.text
    token = paired.json()["token"]
    assert paired.json()["user"]["consent"]["accepted"] is False
    phone = hub.client(token)

    # The code was single use.
    again = await anonymous.post("/api/v1/pair", json={"code": code})
    assert again.status_code == 400
    assert again.headers["content-type"] == "application/problem+json"

    me = (await phone.get("/api/v1/me")).json()
    consent = await phone.post(
        "/api/v1/me/consent", json={"version": me["consent"]["current_version"], "accept": True}
    )
    assert consent.status_code == 200
    assert consent.json()["consent"]["accepted"] is True

    await hub.runtime.wait_connected()
    devices = (await phone.get("/api/v1/devices")).json()
    assert len(devices) == 2
    assert all(d["claimed"] is False and d["state"] == "bonded" for d in devices)
    address = devices[0]["address"]
    claimed = await phone.post(f"/api/v1/devices/{address}/claim")
    assert claimed.json()["owned_by_you"] is True
    renamed = await phone.patch(f"/api/v1/devices/{address}", json={"name": "Bathroom"})
    assert renamed.json()["name"] == "Bathroom"

    ws = await ws_connect(hub, token)
    ack = await request(ws, {"type": "subscribe", "id": "sub", "device": address, "rate_hz": 25})
    assert ack["type"] == "ack"
    assert ack["device"] == address

    started = await phone.post(
        "/api/v1/sessions",
        json={"device": address, "program": "quick-lift", "level": 2},
        headers={"Idempotency-Key": "first-session"},
    )
    assert started.status_code == 201, started.text
    session = started.json()
    assert session["state"] == "running"
    assert session["live"] is True
    sid = session["id"]

    running, _ = await recv_until(
        ws, lambda m: m["type"] == "session_state" and m["state"] == "running"
    )
    assert running["session_id"] == sid
    assert running["reason"] == "started"
    cue, _ = await recv_until(ws, lambda m: m["type"] == "session_notice" and m["notice"] == "move")
    assert cue["detail"]["zone"] == "forehead"
    frame, _ = await recv_until(ws, lambda m: m["type"] == "telemetry" and m["session_id"] == sid)
    assert frame["device"] == address
    assert frame["zone"] == "forehead"
    assert isinstance(frame["seq"], int)
    assert 0 <= frame["contact_quality"] <= 100
    for _ in range(24):  # let a second of treatment run (and be recorded) before pausing
        await recv_until(ws, lambda m: m["type"] == "telemetry" and m["session_id"] == sid)

    paused = await phone.post(f"/api/v1/sessions/{sid}/pause")
    assert paused.json()["state"] == "paused"
    resumed = await request(ws, {"type": "resume", "id": "r1", "session_id": sid})
    assert resumed["type"] == "ack"
    assert resumed["session"]["state"] == "running"

    stopped = await request(ws, {"type": "stop", "id": "stop-1", "session_id": sid})
    assert stopped["type"] == "ack"
    assert stopped["session"]["state"] == "stopped"
    ended, _ = await recv_until(
        ws, lambda m: m["type"] == "session_state" and m["state"] == "stopped"
    )
    assert ended["reason"]
    await ws.close()
    # Stopping an ended session is a harmless no-op.
    assert (await phone.post(f"/api/v1/sessions/{sid}/stop")).json()["state"] == "stopped"

    # History is stored through the journal a moment after the stop is answered (a stop never
    # waits for storage): wait, bounded, until its end is stored, then check all of it.
    async with asyncio.timeout(10):
        while True:
            page = (await phone.get("/api/v1/sessions", params={"state": "stopped"})).json()
            detail = (await phone.get(f"/api/v1/sessions/{sid}")).json()
            states = [e["detail"].get("state") for e in detail["events"] if e["kind"] == "state"]
            if page["items"] and states and states[-1] == "stopped":
                break
            await asyncio.sleep(0.05)
    assert [item["id"] for item in page["items"]] == [sid]
    assert page["total"] == 1
    assert states[:3] == ["running", "paused", "running"]
    assert states[-1] == "stopped"
    assert any(e["kind"] == "move" for e in detail["events"])

    export = await phone.get(f"/api/v1/sessions/{sid}/telemetry", params={"format": "csv"})
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) >= 40  # 25 frames seen at 25 Hz: about a second of a 50 Hz stream
    assert rows[0]["state"] in ("running", "paused", "idle")
    averaged = await phone.get(f"/api/v1/sessions/{sid}/telemetry", params={"every_ms": 500})
    body = averaged.json()
    assert body["every_ms"] == 500
    assert 0 < len(body["rows"]) < len(rows)

    stats = (await phone.get("/api/v1/me/stats", params={"tz": "Europe/Paris"})).json()
    assert stats["streak_current"] == 0  # a stopped session is not a completed one
    assert stats["weeks"]
    assert "forehead" in stats["weeks"][-1]["minutes_by_zone"]
    assert stats["weeks"][-1]["dose_uas_by_zone"]["forehead"] > 0


async def test_scan_forget_and_claim_again(hub: Hub) -> None:
    _, token = await hub.user("ada")
    phone = hub.client(token)
    address = await hub.claimed_device(token)
    busy = await phone.post("/api/v1/sessions", json={"device": address, "program": "quick-lift"})
    assert busy.status_code == 201
    refused = await phone.delete(f"/api/v1/devices/{address}")
    assert refused.status_code == 409  # a session runs on it
    await phone.post(f"/api/v1/sessions/{busy.json()['id']}/stop")
    assert (await phone.delete(f"/api/v1/devices/{address}")).status_code == 204
    assert hub.runtime.devices.find(address) is None

    found = await phone.post("/api/v1/devices/scan", json={"timeout_s": 0.5})
    assert found.status_code == 200
    assert address in [d["address"] for d in found.json()]
    seen = (await phone.get(f"/api/v1/devices/{address}")).json()
    assert seen["managed"] is False
    assert seen["claimed"] is False
    again = await phone.post(f"/api/v1/devices/{address}/claim")
    assert again.json()["managed"] is True
    assert again.json()["owned_by_you"] is True
