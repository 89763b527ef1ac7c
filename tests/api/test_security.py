"""Authentication, hostile and malformed input, problem+json everywhere, request ids, CORS,
pairing rate limits, token revocation and /metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from tests.api.hub import Hub, make_settings, serve

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWRhOnNlY3JldA=="},
        {"Authorization": "Bearer mcgw_not-a-real-token"},
        {"Authorization": "Bearer " + "x" * 5000},
        {"Authorization": "Bearer tökén".encode()},
    ],
)
async def test_every_private_route_wants_a_valid_bearer_token(
    hub: Hub, headers: dict[str, str | bytes]
) -> None:
    client = hub.client()
    for method, path in (
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/devices"),
        ("POST", "/api/v1/sessions"),
        ("GET", "/api/v1/sessions/0b9f"),
        ("GET", "/api/v1/programs"),
        ("GET", "/api/v1/tokens"),
    ):
        response = await client.request(method, path, headers=headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_health_and_metrics_need_no_token(hub: Hub) -> None:
    client = hub.client()
    await hub.runtime.wait_connected()
    assert (await client.get("/api/v1/health")).json()["status"] == "ok"
    assert (await client.get("/api/v1/health/ready")).json()["ready"] is True
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'mcgw_devices{state="bonded"} 2.0' in metrics.text
    assert "mcgw_telemetry_frames_in_total" in metrics.text
    assert "mcgw_stop_latency_seconds_bucket" in metrics.text


async def test_revoked_tokens_stop_working_and_tokens_are_never_logged(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, admin_token = await hub.user("root", admin=True)
    admin = hub.client(admin_token)
    created = await admin.post("/api/v1/tokens", json={"name": "backup", "new_user_name": "script"})
    assert created.status_code == 201, created.text
    script_token = created.json()["token"]
    script = hub.client(script_token)
    assert (await script.get("/api/v1/me")).json()["name"] == "script"
    assert (
        await script.post("/api/v1/tokens", json={"name": "x", "user_id": 1})
    ).status_code == 403
    mine = (await script.get("/api/v1/tokens")).json()
    assert [t["name"] for t in mine] == ["backup"]
    assert "token" not in mine[0]
    revoked = await admin.delete(f"/api/v1/tokens/{created.json()['id']}")
    assert revoked.status_code == 204
    assert_problem(await script.get("/api/v1/me"), 401)
    bad = await admin.post("/api/v1/tokens", json={"name": "x", "user_id": 1, "new_user_name": "y"})
    assert_problem(bad, 422)
    assert all(script_token not in record.getMessage() for record in caplog.records)
    assert all(admin_token not in record.getMessage() for record in caplog.records)


async def test_malformed_input_is_a_4xx_problem_naming_the_field(hub: Hub) -> None:
    _, token = await hub.user("ada")
    client = hub.client(token)
    unknown = await client.post(
        "/api/v1/me/consent", json={"version": "2026-11", "accept": True, "extra": 1}
    )
    body = assert_problem(unknown, 422)
    assert body["errors"] == [{"field": "extra", "reason": "Extra inputs are not permitted"}]
    wrong_type = await client.post(
        "/api/v1/sessions", json={"device": 7, "program": [], "level": "loud"}
    )
    fields = {e["field"] for e in assert_problem(wrong_type, 422)["errors"]}  # type: ignore[union-attr]
    assert fields == {"device", "program", "level"}
    not_json = await client.post(
        "/api/v1/sessions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(not_json, 422)
    query = await client.get("/api/v1/sessions", params={"limit": 0, "state": "exploded"})
    fields = {e["field"] for e in assert_problem(query, 422)["errors"]}  # type: ignore[union-attr]
    assert fields == {"query.limit", "query.state[0]"}
    assert_problem(await client.get("/api/v1/me/stats", params={"tz": "Mars/Olympus"}), 422)
    assert_problem(await client.get("/api/v1/sessions/not-an-id!"), 422)
    assert_problem(await client.get("/api/v1/sessions/0b9f0000-0000-0000-0000-000000000000"), 404)
    assert_problem(await client.get("/api/v1/nowhere"), 404)
    not_allowed = await client.put("/api/v1/health")
    assert_problem(not_allowed, 405)
    assert "GET" in not_allowed.headers["allow"]
    huge_id = await client.delete(f"/api/v1/tokens/{2**70}")
    assert_problem(huge_id, 422)


async def test_oversized_bodies_are_refused_before_the_app_reads_them(hub: Hub) -> None:
    _, token = await hub.user("ada")
    client = hub.client(token)
    limit = hub.settings.api.max_body_bytes
    big = b'{"name": "' + b"x" * limit + b'"}'
    declared = await client.post(
        "/api/v1/programs", content=big, headers={"content-type": "application/json"}
    )
    assert assert_problem(declared, 413)["type"] == "urn:mcgw:problem:body-too-large"

    async def chunks() -> object:
        for _ in range(limit // 1000 + 2):
            yield b"x" * 1000

    streamed = await client.post(
        "/api/v1/programs",
        content=chunks(),
        headers={"content-type": "application/json"},  # type: ignore[arg-type]
    )
    assert_problem(streamed, 413)


async def test_request_ids_are_echoed_or_made(hub: Hub) -> None:
    client = hub.client()
    given = await client.get("/api/v1/health", headers={"X-Request-ID": "phone-1234"})
    assert given.headers["x-request-id"] == "phone-1234"
    made = await client.get("/api/v1/health", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["x-request-id"] not in ("", "bad id with spaces")
    problem = await client.get("/api/v1/me", headers={"X-Request-ID": "trace-9"})
    assert problem.json()["request_id"] == "trace-9"


async def test_pairing_attempts_are_rate_limited(hub: Hub) -> None:
    client = hub.client()
    code = await hub.pairing_code("ada")
    wrong = "000000" if code != "000000" else "111111"
    statuses = [
        (await client.post("/api/v1/pair", json={"code": wrong})).status_code for _ in range(6)
    ]
    assert statuses == [400] * 5 + [429]
    limited = await client.post("/api/v1/pair", json={"code": code})
    assert_problem(limited, 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert_problem(await client.post("/api/v1/pair", json={"code": "12ab56"}), 422)


async def test_cors_allows_only_the_configured_origins(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api={"cors_origins": ["https://app.example"]})
    async with serve(settings) as hub:
        client = hub.client()
        preflight = await client.options(
            "/api/v1/me",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = await client.get("/api/v1/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
