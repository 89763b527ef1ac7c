"""The web page's side of the API: the page itself (CSP, compression, caching), its cookie
credential (HttpOnly, SameSite=Strict, the Origin check on writes and on the WebSocket,
sign-out), and the routes it added (pairing codes, the hub's caps and settings, checking a
program). Browsers drive the page in tests/e2e/test_webapp.py; these are the HTTP facts.
"""

from __future__ import annotations

import gzip

import httpx
import orjson
import pytest
import websockets

from tests.api.hub import Hub, recv, request

COOKIE = "mcgw_token"


async def paired_with_cookie(hub: Hub, name: str = "ana") -> tuple[httpx.AsyncClient, str]:
    """A client holding the page's cookie (as a browser on the hub's page would) and its
    value."""
    code = await hub.pairing_code(name)
    client = hub.client()
    origin = hub.base_url
    response = await client.post(
        "/api/v1/pair",
        json={"code": code, "client_name": "browser", "cookie": True},
        headers={"Origin": origin},
    )
    assert response.status_code == 201, response.text
    assert response.json()["token"] is None  # the page's script never sees it
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert "secure" not in attributes  # plain HTTP on the LAN; set under HTTPS
    return client, client.cookies[COOKIE]


async def test_the_page_is_served_with_a_strict_policy_compressed_and_revalidated(
    hub: Hub,
) -> None:
    client = hub.client()
    page = await client.get("/", headers={"Accept-Encoding": "gzip"})
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-encoding"] == "gzip"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="app/app.js">' in page.text
    assert "<script>" not in page.text  # no inline script
    again = await client.get("/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304
    module = await client.get("/app/mcgw-client.js")
    assert module.headers["content-type"] == "text/javascript; charset=utf-8"
    raw = await client.get("/app/app.css", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert gzip.compress(raw.content)  # served plain to a client that does not take gzip
    missing = await client.get("/app/nothing.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await client.get("/app/../app.py")).status_code == 404


async def test_the_cookie_authenticates_reads_and_same_origin_writes_only(hub: Hub) -> None:
    client, _ = await paired_with_cookie(hub)
    me = await client.get("/api/v1/me")
    assert me.status_code == 200
    assert me.json()["name"] == "ana"
    body = {"version": "2026-11", "accept": True}
    # A write carrying the cookie from another origin, or with no origin at all, is refused.
    for headers in (
        {},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        refused = await client.post("/api/v1/me/consent", json=body, headers=headers)
        assert refused.status_code == 403, (headers, refused.text)
        assert refused.json()["type"] == "urn:mcgw:problem:cross-origin"
    wrong_port = hub.base_url.rsplit(":", 1)[0] + ":1"
    assert (
        await client.post("/api/v1/me/consent", json=body, headers={"Origin": wrong_port})
    ).status_code == 403
    accepted = await client.post("/api/v1/me/consent", json=body, headers={"Origin": hub.base_url})
    assert accepted.status_code == 200, accepted.text
    fetched = await client.post(
        "/api/v1/me/consent", json=body, headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert fetched.status_code == 200


async def test_a_bearer_token_needs_no_origin_and_wins_over_the_cookie(hub: Hub) -> None:
    _, token = await hub.user("bob")
    client, _ = await paired_with_cookie(hub)
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.json()["name"] == "bob"
    app = hub.client(token)
    assert (await app.put("/api/v1/me/cap", json={"cap_ua": 200})).status_code == 200


async def test_a_cookie_is_set_only_for_the_hubs_own_page(hub: Hub) -> None:
    code = await hub.pairing_code("eve")
    client = hub.client()
    refused = await client.post(
        "/api/v1/pair",
        json={"code": code, "cookie": True},
        headers={"Origin": "http://evil.example"},
    )
    assert refused.status_code == 403
    assert "set-cookie" not in refused.headers
    # The code was not spent: the hub's page can still use it.
    ok = await client.post(
        "/api/v1/pair", json={"code": code, "cookie": True}, headers={"Origin": hub.base_url}
    )
    assert ok.status_code == 201


async def test_sign_out_revokes_the_token_and_clears_the_cookie(hub: Hub) -> None:
    client, token = await paired_with_cookie(hub)
    out = await client.post("/api/v1/me/sign-out", headers={"Origin": hub.base_url})
    assert out.status_code == 204
    cleared = out.headers["set-cookie"]
    assert cleared.startswith(f'{COOKIE}="";') or "max-age=0" in cleared.lower()
    assert COOKIE not in client.cookies
    stale = hub.client()
    stale.cookies.set(COOKIE, token)
    assert (await stale.get("/api/v1/me")).status_code == 401


async def test_the_websocket_takes_the_cookie_only_from_the_hubs_origin(hub: Hub) -> None:
    _, token = await paired_with_cookie(hub)
    cookie = {"Cookie": f"{COOKIE}={token}"}
    async with websockets.connect(
        hub.ws_url,
        compression=None,
        origin=websockets.Origin(hub.base_url),
        additional_headers=cookie,
    ) as ws:
        hello = await recv(ws)
        assert hello["type"] == "hello"
        address = await hub.claimed_device(token)
        ack = await request(ws, {"type": "subscribe", "id": "s", "device": address})
        assert ack["type"] == "ack", ack
    async with websockets.connect(
        hub.ws_url,
        compression=None,
        origin=websockets.Origin("http://evil.example"),
        additional_headers=cookie,
    ) as ws:
        # The cookie is ignored: the connection is not authenticated, so a first message
        # other than auth is refused and the connection closed with 4401.
        await ws.send(orjson.dumps({"type": "ping", "id": "p"}).decode())
        refused = await recv(ws)
        assert refused["type"] == "error"
        assert refused["problem"]["status"] == 401
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401


async def test_admins_make_pairing_codes_and_read_settings(hub: Hub) -> None:
    _, admin = await hub.user("root", admin=True)
    _, user = await hub.user("ana")
    made = await hub.client(admin).post("/api/v1/pairing-codes", json={"name": "cleo"})
    assert made.status_code == 201, made.text
    issued = made.json()
    assert issued["link"] == f"/#/pair/{issued['code']}"
    paired = await hub.client().post("/api/v1/pair", json={"code": issued["code"]})
    assert paired.json()["user"]["name"] == "cleo"
    unknown = await hub.client(admin).post("/api/v1/pairing-codes", json={"user_id": 999})
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["field"] == "user_id"
    settings = await hub.client(admin).get("/api/v1/hub/settings")
    assert settings.json()["safety"]["hub_cap_ua"] == 400
    assert settings.json()["token_pepper"] == "***"
    for path, method in (("/api/v1/pairing-codes", "POST"), ("/api/v1/hub/settings", "GET")):
        denied = await hub.client(user).request(method, path, json={} if method == "POST" else None)
        assert denied.status_code == 403, path


async def test_every_user_reads_the_caps_and_checks_a_program_without_saving_it(hub: Hub) -> None:
    _, token = await hub.user("ana", cap_ua=250)
    client = hub.client(token)
    caps = (await client.get("/api/v1/hub")).json()
    assert caps["zone_caps_ua"]["eye_area"] == 200
    assert caps["user_cap_ua"] == 250
    assert (caps["step_min_s"], caps["step_max_s"]) == (5, 600)
    draft = {
        "slug": "mine",
        "name": "Mine",
        "steps": [
            {"zone": "forehead", "amplitude_ua": 300, "duration_s": 60},
            {"zone": "eye_area", "amplitude_ua": 300, "duration_s": 60},
        ],
    }
    refused = await client.post("/api/v1/programs/check", json=draft)
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["steps[1].amplitude_ua"]
    draft["steps"][1]["amplitude_ua"] = 150  # type: ignore[index]
    checked = await client.post("/api/v1/programs/check", json=draft)
    assert checked.status_code == 200, checked.text
    assert checked.json()["duration_s"] == 120
    assert (await client.get("/api/v1/programs/mine")).status_code == 404  # nothing was saved
