"""The trust boundary attacked from outside: a real `mcgw serve` process, real httpx and
websockets clients, several users, and the hub's own CLI as a second process.

Each test plays an adversary or a second user: a revoked phone that keeps its socket open, a
watcher who stays subscribed while someone else claims the device, a replay after a device
changed hands, an admin who lost their rights, connection floods, pairing-code guess floods
(with forged X-Forwarded-For), and hostile names and types. What must hold is in
docs/api.md ("Ownership", "Limits") and docs/websocket.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.api.hub import recv, recv_until, request
from tests.e2e.served import ServedHub, base_env, copy_database

pytestmark = pytest.mark.slow

CONSENT = {"version": "2026-11", "accept": True}


@dataclass(frozen=True)
class User:
    id: int
    token: str
    token_id: int


@pytest.fixture
def served(tmp_path: Path, migrated_sqlite: Path) -> Iterator[ServedHub]:
    copy_database(migrated_sqlite, tmp_path / "hub.db")  # base_env's database, migrated
    env = base_env(tmp_path, MCGW_API__WS_MAX_PER_TOKEN="4", MCGW_API__WS_MAX_CONNECTIONS="10")
    with ServedHub.start(env, devices=2) as hub:
        yield hub


@pytest.fixture
async def admin(served: ServedHub) -> AsyncIterator[httpx.AsyncClient]:
    async with served.client(served.admin_token) as client:
        yield client


async def make_user(admin: httpx.AsyncClient, name: str, *, consent: bool = True) -> User:
    created = await admin.post("/api/v1/tokens", json={"name": "phone", "new_user_name": name})
    assert created.status_code == 201, created.text
    body = created.json()
    user = User(id=body["user_id"], token=body["token"], token_id=body["id"])
    if consent:
        async with httpx.AsyncClient(
            base_url=str(admin.base_url), headers={"Authorization": f"Bearer {user.token}"}
        ) as client:
            assert (await client.post("/api/v1/me/consent", json=CONSENT)).status_code == 200
    return user


async def devices(admin: httpx.AsyncClient) -> list[str]:
    listed = await admin.get("/api/v1/devices")
    return sorted(d["address"] for d in listed.json())


@contextlib.asynccontextmanager
async def socket(hub: ServedHub, token: str) -> AsyncIterator[Any]:
    """An authenticated socket. Its client queues whatever the test has not read yet without a
    bound (``max_queue=None``): with websockets' default (16 messages) a full queue stops the
    client reading, so it never sees the hub's answer to its close and waits out close_timeout
    (10 s) before giving up with 1006. What the hub sends is the same either way."""
    async with websockets.connect(hub.ws_url, compression=None, max_queue=None) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token, "id": "auth"}).decode())
        assert (await recv(ws))["type"] == "ack"
        assert (await recv(ws))["type"] == "hello"
        yield ws


async def read_for(ws: Any, seconds: float) -> list[dict[str, Any]]:
    """Everything the socket receives in the next ``seconds`` (answering pings)."""
    seen: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                message = orjson.loads(await ws.recv())
                seen.append(message)
    return seen


async def read_until_closed(ws: Any, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout_s):
            while True:
                seen.append(orjson.loads(await ws.recv()))
    return seen


async def start(client: httpx.AsyncClient, device: str, level: int = 1) -> dict[str, Any]:
    started = await client.post(
        "/api/v1/sessions", json={"device": device, "program": "quick-lift", "level": level}
    )
    assert started.status_code == 201, started.text
    session: dict[str, Any] = started.json()
    return session


# --- revocation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "revoked_by", ["admin over REST", "`mcgw token revoke` in another process"]
)
async def test_a_revoked_phone_loses_its_open_socket_and_every_command(
    served: ServedHub, admin: httpx.AsyncClient, revoked_by: str
) -> None:
    ada = await make_user(admin, "ada")
    device = (await devices(admin))[0]
    async with served.client(ada.token) as phone:
        assert (await phone.post(f"/api/v1/devices/{device}/claim")).status_code == 200
        session = await start(phone, device)
        async with socket(served, ada.token) as ws:
            subscribed = await request(ws, {"type": "subscribe", "id": "s", "device": device})
            assert subscribed["type"] == "ack"
            if revoked_by.startswith("admin"):
                assert (await admin.delete(f"/api/v1/tokens/{ada.token_id}")).status_code == 204
            else:
                done = await asyncio.to_thread(served.mcgw, "token", "revoke", str(ada.token_id))
                assert done.returncode == 0, done.stderr
            revoked_at = time.monotonic()  # committed (the CLI process has exited)
            # The lost phone keeps trying to turn the current up while the socket lives.
            closed = asyncio.create_task(read_until_closed(ws))
            with contextlib.suppress(ConnectionClosed):
                while not closed.done():
                    await ws.send(
                        orjson.dumps(
                            {"type": "set_level", "session_id": session["id"], "level": 5}
                        ).decode()
                    )
                    await asyncio.sleep(0.05)
            seen = await closed
            print(f"revoked by {revoked_by}: socket closed {time.monotonic() - revoked_at:.3f} s")
            assert ws.close_code == 4401
            assert any(m["type"] == "error" and m["problem"]["status"] == 401 for m in seen)
            acked = [m for m in seen if m["type"] == "ack"]
            if revoked_by.startswith("admin"):
                # Revoked through this hub: in force before the DELETE was answered.
                assert not acked
        assert (await phone.get("/api/v1/me")).status_code == 401
        assert (await phone.post(f"/api/v1/sessions/{session['id']}/stop")).status_code == 401
    now = (await admin.get(f"/api/v1/sessions/{session['id']}")).json()
    assert now["level"] == (5 if acked else 1)
    assert (await admin.post(f"/api/v1/sessions/{session['id']}/stop")).status_code == 200


# --- visibility of live data --------------------------------------------------------------------


async def test_a_watcher_of_an_unclaimed_device_sees_nothing_once_another_user_claims_it(
    served: ServedHub, admin: httpx.AsyncClient
) -> None:
    ada, bob = await make_user(admin, "ada"), await make_user(admin, "bob")
    device = (await devices(admin))[1]
    async with (
        served.client(ada.token) as ada_phone,
        socket(served, bob.token) as bob_ws,
        socket(served, ada.token) as ada_ws,
    ):
        watching = await request(bob_ws, {"type": "subscribe", "id": "w", "device": device})
        assert watching["type"] == "ack"
        unclaimed, _ = await recv_until(bob_ws, lambda m: m["type"] == "telemetry")
        assert unclaimed["session_id"] is None  # unclaimed devices are visible to everyone
        assert (await ada_phone.post(f"/api/v1/devices/{device}/claim")).status_code == 200
        ended, _ = await recv_until(bob_ws, lambda m: m["type"] == "subscription_ended")
        assert ended["subscription"] == watching["subscription"]
        assert ended["device"] == device
        assert "no longer see" in ended["reason"]

        assert (await request(ada_ws, {"type": "subscribe", "id": "a", "device": device}))[
            "type"
        ] == "ack"
        session = await start(ada_phone, device)
        mine, _ = await recv_until(ada_ws, lambda m: m.get("session_id") == session["id"])
        assert mine["type"] in ("telemetry", "session_state", "session_notice")
        after = await read_for(bob_ws, 1.5)
        assert not [m for m in after if m.get("session_id") == session["id"]], after
        assert not [m for m in after if m["type"] == "telemetry"], after
        for attempt in (
            {"type": "subscribe", "id": "d", "device": device},
            {"type": "subscribe", "id": "s", "session_id": session["id"]},
            {"type": "stop", "id": "x", "session_id": session["id"]},
        ):
            refused = await request(bob_ws, attempt)
            assert refused["type"] == "error"
            assert refused["problem"]["status"] == 404, refused
        assert (await ada_phone.post(f"/api/v1/sessions/{session['id']}/stop")).status_code == 200


async def test_the_replay_ring_serves_no_frame_of_a_previous_owner(
    served: ServedHub, admin: httpx.AsyncClient
) -> None:
    ada, bob = await make_user(admin, "ada"), await make_user(admin, "bob")
    device = (await devices(admin))[0]
    async with served.client(ada.token) as ada_phone, served.client(bob.token) as bob_phone:
        async with socket(served, ada.token) as ada_ws:
            assert (await ada_phone.post(f"/api/v1/devices/{device}/claim")).status_code == 200
            await request(ada_ws, {"type": "subscribe", "id": "a", "device": device})
            session = await start(ada_phone, device)
            frames: list[dict[str, Any]] = []
            while len(frames) < 20:
                message = await recv(ada_ws)
                if message["type"] == "telemetry" and message["session_id"] == session["id"]:
                    frames.append(message)
            last_seq = frames[-1]["seq"]
        assert (await ada_phone.post(f"/api/v1/sessions/{session['id']}/stop")).status_code == 200
        assert (await ada_phone.delete(f"/api/v1/devices/{device}")).status_code == 204
        # Forgotten: gone for everyone until a scan hears it again.
        assert (await ada_phone.get(f"/api/v1/devices/{device}")).status_code == 404
        found = await bob_phone.post("/api/v1/devices/scan", json={"timeout_s": 1.0})
        assert device in [d["address"] for d in found.json()]
        assert (await bob_phone.post(f"/api/v1/devices/{device}/claim")).status_code == 200
        async with socket(served, bob.token) as bob_ws:
            replay = await request(
                bob_ws, {"type": "subscribe", "id": "r", "device": device, "from_seq": 0}
            )
            assert replay["type"] == "ack"
            got = [m for m in await read_for(bob_ws, 1.5) if m["type"] == "telemetry"]
        assert got, "bob's own device streams to him"
        assert all(m["session_id"] is None for m in got)
        assert all(m["seq"] > last_seq for m in got)
        assert (await ada_phone.get(f"/api/v1/sessions/{session['id']}")).status_code == 200
        assert (await bob_phone.get(f"/api/v1/sessions/{session['id']}")).status_code == 404


async def test_rights_taken_away_apply_to_open_sockets_and_the_next_request(
    served: ServedHub, admin: httpx.AsyncClient
) -> None:
    ada, carl = await make_user(admin, "ada"), await make_user(admin, "carl")
    device = (await devices(admin))[0]
    async with served.client(ada.token) as ada_phone, served.client(carl.token) as staff:
        assert (await ada_phone.post(f"/api/v1/devices/{device}/claim")).status_code == 200
        assert (await staff.get(f"/api/v1/devices/{device}")).status_code == 404
        granted = await admin.patch(f"/api/v1/users/{carl.id}", json={"is_admin": True})
        assert granted.status_code == 200
        assert granted.json()["is_admin"] is True
        assert (await staff.get(f"/api/v1/devices/{device}")).status_code == 200
        async with socket(served, carl.token) as carl_ws, socket(served, ada.token) as ada_ws:
            watching = await request(carl_ws, {"type": "subscribe", "id": "w", "device": device})
            assert watching["type"] == "ack"
            mine = await request(ada_ws, {"type": "subscribe", "id": "m", "device": device})
            taken = await admin.patch(f"/api/v1/users/{carl.id}", json={"is_admin": False})
            assert taken.status_code == 200
            ended, _ = await recv_until(carl_ws, lambda m: m["type"] == "subscription_ended")
            assert ended["subscription"] == watching["subscription"]
            assert (await staff.get(f"/api/v1/devices/{device}")).status_code == 404

            # An admin hands the device to carl: ada's subscription ends, carl's works.
            handed = await admin.put(f"/api/v1/devices/{device}/owner", json={"user_id": carl.id})
            assert handed.status_code == 200, handed.text
            ended, _ = await recv_until(ada_ws, lambda m: m["type"] == "subscription_ended")
            assert ended["subscription"] == mine["subscription"]
            assert (await ada_phone.get(f"/api/v1/devices/{device}")).status_code == 404
            assert (await staff.get(f"/api/v1/devices/{device}")).json()["owned_by_you"] is True

        withdrawn = await staff.delete("/api/v1/me/consent")
        assert withdrawn.json()["consent"]["accepted"] is False
        refused = await staff.post(
            "/api/v1/sessions", json={"device": device, "program": "quick-lift"}
        )
        assert refused.status_code == 403
        assert refused.json()["type"] == "urn:mcgw:problem:consent-required"


# --- limits -------------------------------------------------------------------------------------


async def test_websocket_floods_meet_the_per_token_and_per_hub_limits(
    served: ServedHub, admin: httpx.AsyncClient
) -> None:
    users = [await make_user(admin, name) for name in ("ada", "bob", "carl")]
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(4):  # MCGW_API__WS_MAX_PER_TOKEN=4
            await stack.enter_async_context(socket(served, users[0].token))
        async with websockets.connect(served.ws_url, compression=None) as fifth:
            await fifth.send(orjson.dumps({"type": "auth", "token": users[0].token}).decode())
            seen = await read_until_closed(fifth)
            assert fifth.close_code == 4429
            assert seen[-1]["problem"]["type"] == "urn:mcgw:problem:too-many-connections"
        for user in users[1:]:
            for _ in range(3):
                await stack.enter_async_context(socket(served, user.token))
        # 4 + 3 + 3 = 10 = MCGW_API__WS_MAX_CONNECTIONS: the hub is full for everyone.
        async with websockets.connect(served.ws_url, compression=None) as eleventh:
            await read_until_closed(eleventh)
            assert eleventh.close_code == 1013
            assert "maximum of 10" in (eleventh.close_reason or "")
    # Everything closed: the hub holds no connection and the first token may connect again.
    async with httpx.AsyncClient(base_url=served.base_url) as anyone:
        for _ in range(50):
            metrics = (await anyone.get("/metrics")).text
            if "mcgw_ws_connections 0.0" in metrics:
                break
            await asyncio.sleep(0.1)
        assert "mcgw_ws_connections 0.0" in metrics
    async with socket(served, users[0].token) as again:
        await again.send(orjson.dumps({"type": "ping", "id": "p"}).decode())
        assert await recv(again) == {"type": "pong", "id": "p"}


async def test_sockets_that_never_authenticate_cannot_hold_the_hubs_slots(
    served: ServedHub, admin: httpx.AsyncClient
) -> None:
    ada = await make_user(admin, "ada")
    # MCGW_API__WS_MAX_CONNECTIONS=10: one eighth of it (at least 1) may wait for auth at once.
    async with contextlib.AsyncExitStack() as stack:
        silent = [
            await stack.enter_async_context(websockets.connect(served.ws_url, compression=None))
            for _ in range(5)
        ]
        # Each newcomer evicted the one before it; the last still waits.
        for evicted in silent[:-1]:
            await read_until_closed(evicted)
            assert evicted.close_code == 1013
            assert "authenticating" in (evicted.close_reason or "")
        async with socket(served, ada.token) as phone:  # evicts the last silent one, gets in
            await phone.send(orjson.dumps({"type": "ping", "id": "p"}).decode())
            assert await recv(phone) == {"type": "pong", "id": "p"}
            await read_until_closed(silent[-1])
            assert silent[-1].close_code == 1013


async def test_pairing_guesses_lock_out_the_guesser_and_never_burn_the_victims_code(
    served: ServedHub,
) -> None:
    issued = await asyncio.to_thread(served.mcgw, "pair", "--name", "victim")
    assert issued.returncode == 0, issued.stderr
    code = issued.stdout.strip()
    wrong = [f"{(int(code) + n) % 1_000_000:06d}" for n in range(1, 60)]
    async with served.client() as attacker:
        for guess in wrong[:5]:
            refused = await attacker.post("/api/v1/pair", json={"code": guess})
            assert refused.status_code == 400
            assert refused.json()["errors"] == [{"field": "code", "reason": "unknown"}]
        for n, guess in enumerate(wrong[5:10]):
            forged = {"X-Forwarded-For": f"10.66.0.{n}", "Forwarded": f"for=10.66.1.{n}"}
            locked = await attacker.post("/api/v1/pair", json={"code": guess}, headers=forged)
            assert locked.status_code == 429
            assert locked.json()["type"] == "urn:mcgw:problem:pairing-locked-out"
            assert int(locked.headers["retry-after"]) >= 1
        locked = await attacker.post("/api/v1/pair", json={"code": code})
        assert locked.status_code == 429  # even the right code: the guesser is locked out
    victim_transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with served.client(transport=victim_transport) as victim:
        paired = await victim.post("/api/v1/pair", json={"code": code, "client_name": "Vic"})
        assert paired.status_code == 201, paired.text
        again = await victim.post("/api/v1/pair", json={"code": code})
        assert again.status_code == 400
        assert again.json()["errors"] == [{"field": "code", "reason": "used"}]
    # Many addresses guessing together meet the hub-wide cap of 30 wrong codes a minute: 6 so
    # far (the attacker's 5 counted ones and the victim's "used"), so 24 more, then none.
    statuses = []
    for n in range(8):
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.1.{n + 1}")
        async with served.client(transport=transport) as bot:
            for guess in wrong[10 + n * 4 : 14 + n * 4]:
                statuses.append((await bot.post("/api/v1/pair", json={"code": guess})).status_code)
    assert statuses == [400] * 24 + [429] * 8


async def test_hostile_names_and_coerced_types_are_refused_naming_the_field(
    served: ServedHub, admin: httpx.AsyncClient
) -> None:
    ada = await make_user(admin, "ada")
    device = (await devices(admin))[0]
    async with served.client(ada.token) as phone:
        assert (await phone.post(f"/api/v1/devices/{device}/claim")).status_code == 200
        for name in ("a\x00b", "bell\x07", "evil\u202egnp.exe", "x\u2066y", "line\nbreak"):
            renamed = await phone.patch(f"/api/v1/devices/{device}", json={"name": name})
            assert renamed.status_code == 422, name
            assert [e["field"] for e in renamed.json()["errors"]] == ["name"]
            token = await admin.post("/api/v1/tokens", json={"name": name, "new_user_name": "z"})
            assert token.status_code == 422
        fine = await phone.patch(f"/api/v1/devices/{device}", json={"name": "Bathroom 🛁"})
        assert fine.status_code == 200
        for level in ("3", 3.0, True):
            started = await phone.post(
                "/api/v1/sessions", json={"device": device, "program": "quick-lift", "level": level}
            )
            assert started.status_code == 422, level
            assert [e["field"] for e in started.json()["errors"]] == ["level"]
        program = {
            "slug": "strict-one",
            "name": "Strict",
            "steps": [{"zone": "cheeks", "amplitude_ua": "399", "duration_s": 30}],
        }
        refused = await phone.post("/api/v1/programs", json=program)
        assert refused.status_code == 422
        assert [e["field"] for e in refused.json()["errors"]] == ["steps[0].amplitude_ua"]
        cap = await phone.put("/api/v1/me/cap", json={"cap_ua": "250"})
        assert [e["field"] for e in cap.json()["errors"]] == ["cap_ua"]
        session = await start(phone, device)
        async with socket(served, ada.token) as ws:
            for level in ("3", 3.0, True):
                reply = await request(
                    ws,
                    {"type": "set_level", "id": "l", "session_id": session["id"], "level": level},
                )
                assert reply["type"] == "error"
                assert [e["field"] for e in reply["problem"]["errors"]] == ["level"]
        assert (await phone.post(f"/api/v1/sessions/{session['id']}/stop")).status_code == 200
