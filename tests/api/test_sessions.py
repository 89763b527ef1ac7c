"""Sessions and programs over HTTP: idempotent starts, consent, ownership between two users,
custom-program validation with per-field errors.
"""

from __future__ import annotations

import asyncio

from tests.api.hub import Hub
from tests.conftest import immutable

START = {"program": "quick-lift", "level": 1}


async def test_a_retried_start_returns_the_same_session_with_200(hub: Hub) -> None:
    _, token = await hub.user("ada")
    address = await hub.claimed_device(token)
    phone = hub.client(token)
    headers = {"Idempotency-Key": "5d7c1c38-retry"}
    first = await phone.post("/api/v1/sessions", json={"device": address, **START}, headers=headers)
    assert first.status_code == 201, first.text
    for _ in range(3):
        retry = await phone.post(
            "/api/v1/sessions", json={"device": address, **START}, headers=headers
        )
        assert retry.status_code == 200
        assert retry.json()["id"] == first.json()["id"]
    # A new key is a new start, refused because the device is busy.
    busy = await phone.post(
        "/api/v1/sessions", json={"device": address, **START}, headers={"Idempotency-Key": "other"}
    )
    assert busy.status_code == 409
    assert busy.json()["type"] == "urn:mcgw:problem:conflict"
    # Even after the session ended, the key still names it.
    await phone.post(f"/api/v1/sessions/{first.json()['id']}/stop")
    late = await phone.post("/api/v1/sessions", json={"device": address, **START}, headers=headers)
    assert late.status_code == 200
    assert late.json()["state"] == "stopped"
    assert len(hub.runtime.sessions.all()) == 1


async def test_concurrent_duplicates_start_exactly_one_session(hub: Hub) -> None:
    _, token = await hub.user("ada")
    address = await hub.claimed_device(token)
    phone = hub.client(token)
    headers = {"Idempotency-Key": "concurrent-key"}
    responses = await asyncio.gather(
        *(
            phone.post("/api/v1/sessions", json={"device": address, **START}, headers=headers)
            for _ in range(6)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 200, 200, 200, 201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(hub.runtime.sessions.all()) == 1


async def test_same_key_of_another_user_is_another_session(hub: Hub) -> None:
    _, ada = await hub.user("ada")
    _, bob = await hub.user("bob")
    first = await hub.claimed_device(ada, 0)
    second = await hub.claimed_device(bob, 1)
    headers = {"Idempotency-Key": "shared-key"}
    a = await hub.client(ada).post(
        "/api/v1/sessions", json={"device": first, **START}, headers=headers
    )
    b = await hub.client(bob).post(
        "/api/v1/sessions", json={"device": second, **START}, headers=headers
    )
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


async def test_no_session_before_consent(hub: Hub) -> None:
    _, token = await hub.user("new", consent=False)
    address = await hub.claimed_device(token)
    phone = hub.client(token)
    refused = await phone.post("/api/v1/sessions", json={"device": address, **START})
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "urn:mcgw:problem:consent-required"
    assert hub.runtime.sessions.active_on(address) is None
    outdated = await phone.post("/api/v1/me/consent", json={"version": "1999", "accept": True})
    assert outdated.status_code == 409
    not_true = await phone.post("/api/v1/me/consent", json={"version": "2026-11", "accept": False})
    assert not_true.status_code == 422
    assert (
        await phone.post("/api/v1/me/consent", json={"version": "2026-11", "accept": True})
    ).is_success
    started = await phone.post("/api/v1/sessions", json={"device": address, **START})
    assert started.status_code == 201


async def test_unclaimed_device_must_be_claimed_first(hub: Hub) -> None:
    _, token = await hub.user("ada")
    await hub.runtime.wait_connected()
    address = hub.runtime.devices.addresses()[0]
    refused = await hub.client(token).post("/api/v1/sessions", json={"device": address, **START})
    assert refused.status_code == 403
    assert refused.json()["type"] == "urn:mcgw:problem:claim-required"


async def test_two_users_cannot_see_or_touch_each_others_things(hub: Hub) -> None:
    _, ada_token = await hub.user("ada")
    _, bob_token = await hub.user("bob")
    _, admin_token = await hub.user("root", admin=True)
    ada, bob, admin = hub.client(ada_token), hub.client(bob_token), hub.client(admin_token)
    address = await hub.claimed_device(ada_token)
    session = (await ada.post("/api/v1/sessions", json={"device": address, **START})).json()
    sid = session["id"]

    # Bob sees neither Ada's device nor her session: 404, never 403 (existence is not leaked).
    assert address not in [d["address"] for d in (await bob.get("/api/v1/devices")).json()]
    for method, path, body in (
        ("GET", f"/api/v1/devices/{address}", None),
        ("PATCH", f"/api/v1/devices/{address}", {"name": "mine"}),
        ("DELETE", f"/api/v1/devices/{address}", None),
        ("POST", f"/api/v1/devices/{address}/claim", None),
        ("GET", f"/api/v1/sessions/{sid}", None),
        ("POST", f"/api/v1/sessions/{sid}/stop", None),
        ("POST", f"/api/v1/sessions/{sid}/pause", None),
        ("POST", f"/api/v1/sessions/{sid}/resume", None),
        ("PUT", f"/api/v1/sessions/{sid}/level", {"level": 5}),
        ("GET", f"/api/v1/sessions/{sid}/telemetry", None),
    ):
        response = await bob.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["type"] == "urn:mcgw:problem:not-found"
    start = await bob.post("/api/v1/sessions", json={"device": address, **START})
    assert start.status_code == 404
    assert (await bob.get("/api/v1/sessions")).json()["total"] == 0
    assert (await bob.get("/api/v1/sessions", params={"owner_id": 1})).status_code == 403
    assert hub.runtime.sessions.get(sid).state.value == "running"

    # Ada's custom program is hers alone.
    program = {
        "slug": "ada-only",
        "name": "Ada",
        "steps": [{"zone": "neck", "amplitude_ua": 100, "duration_s": 30}],
    }
    assert (await ada.post("/api/v1/programs", json=program)).status_code == 201
    assert (await bob.get("/api/v1/programs/ada-only")).status_code == 404
    assert (await bob.delete("/api/v1/programs/ada-only")).status_code == 404
    assert "ada-only" not in [p["slug"] for p in (await bob.get("/api/v1/programs")).json()]

    # An admin sees and controls everything.
    assert (await admin.get(f"/api/v1/sessions/{sid}")).status_code == 200
    assert (await admin.get("/api/v1/sessions")).json()["total"] == 1
    level = await admin.put(f"/api/v1/sessions/{sid}/level", json={"level": 2})
    assert level.json()["level"] == 2
    stopped = await admin.post(f"/api/v1/sessions/{sid}/stop")
    assert stopped.json()["state"] == "stopped"


async def test_custom_programs_are_validated_per_step_and_field(hub: Hub) -> None:
    _, token = await hub.user("ada", cap_ua=150)
    phone = hub.client(token)
    shape = await phone.post(
        "/api/v1/programs",
        json={
            "slug": "bad-shape",
            "name": "Bad",
            "steps": [
                {"zone": "neck", "amplitude_ua": 100, "duration_s": 30},
                {"zone": "nose", "amplitude_ua": 100, "duration_s": 30},
                {"zone": "neck", "amplitude_ua": 100, "duration_s": 30, "frequency_hz": 5000},
            ],
        },
    )
    assert shape.status_code == 422
    fields = {e["field"] for e in shape.json()["errors"]}
    assert fields == {"steps[1].zone", "steps[2].frequency_hz"}

    caps = await phone.post(
        "/api/v1/programs",
        json={
            "slug": "too-strong",
            "name": "Too strong",
            "steps": [
                {"zone": "eye_area", "amplitude_ua": 140, "duration_s": 30},
                {"zone": "cheeks", "amplitude_ua": 300, "duration_s": 30},
                {"zone": "eye_area", "amplitude_ua": 300, "duration_s": 30, "move_cue_s": 60},
            ],
        },
    )
    assert caps.status_code == 422
    problem = caps.json()
    assert problem["type"] == "urn:mcgw:problem:invalid-program"
    fields = [e["field"] for e in problem["errors"]]
    # The personal cap (150 µA) limits a program as it plays; only the zone caps refuse it.
    assert fields == ["steps[2].amplitude_ua", "steps[2].move_cue_s"]

    good = {
        "slug": "gentle",
        "name": "Gentle",
        "steps": [{"zone": "neck", "amplitude_ua": 120, "duration_s": 60}],
    }
    assert (await phone.post("/api/v1/programs", json=good)).status_code == 201
    assert (await phone.post("/api/v1/programs", json=good)).status_code == 409
    builtin = {**good, "slug": "quick-lift"}
    assert (await phone.post("/api/v1/programs", json=builtin)).status_code == 409
    updated = await phone.put(
        "/api/v1/programs/gentle",
        json={"name": "Gentler", "steps": [{"zone": "neck", "amplitude_ua": 90, "duration_s": 60}]},
    )
    assert updated.json()["name"] == "Gentler"
    assert updated.json()["duration_s"] == 60
    assert (
        await phone.put("/api/v1/programs/quick-lift", json={"name": "x", "steps": good["steps"]})
    ).status_code == 409
    listed = [p["slug"] for p in (await phone.get("/api/v1/programs")).json()]
    assert "gentle" in listed
    assert "quick-lift" in listed
    assert (await phone.delete("/api/v1/programs/gentle")).status_code == 204
    assert (await phone.get("/api/v1/programs/gentle")).status_code == 404


async def test_a_start_the_hub_cannot_record_is_refused_with_503_and_sends_nothing(
    hub: Hub,
) -> None:
    _, token = await hub.user("ada")
    device = await hub.claimed_device(token)
    journal = hub.runtime.journal
    assert journal is not None
    with immutable(journal.path):
        refused = await hub.client(token).post("/api/v1/sessions", json={"device": device, **START})
    assert refused.status_code == 503, refused.text
    assert refused.json()["type"] == "urn:mcgw:problem:storage-unavailable"
    assert "none starts" in refused.json()["detail"]
    firmware = hub.runtime.sim_devices[0].firmware
    assert (firmware.output_ua, firmware.max_output_ua) == (0, 0)
    assert hub.runtime.sessions.active_on(device) is None
