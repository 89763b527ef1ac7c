"""A fleet: two `mcgw serve` processes with their own hub ids on one PostgreSQL and one broker.

``mcgw fleet --json`` and ``GET /api/v1/fleet`` (admins) list both hubs from the broker's
retained messages, with their devices and live sessions; a hub killed with SIGKILL shows
``offline`` through its last will. Waits are hang guards, never measurements.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_URL, require_service
from tests.e2e.mqtt_broker import HANG_S, Broker, unique_prefixes
from tests.e2e.served import ServedHub, base_env

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.slow]


def _pg_admin(statement: str) -> None:
    engine = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def shared_database() -> Iterator[str]:
    """A fresh PostgreSQL database of this test's own, dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"mcgw_fleet_{uuid.uuid4().hex[:10]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(POSTGRES_URL).set(database=name).render_as_string(False)
    finally:
        _pg_admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}"')


def fleet_json(hub: ServedHub) -> dict[str, dict[str, Any]]:
    done = hub.mcgw("fleet", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return {entry["hub_id"]: entry for entry in json.loads(done.stdout)}


async def test_two_hubs_on_one_database_and_broker_form_a_fleet_and_a_killed_hub_goes_offline(
    tmp_path: Path, shared_database: str
) -> None:
    broker = Broker(tmp_path)
    broker.start()
    prefix, ha = unique_prefixes()
    common = {
        "MCGW_DB__URL": shared_database,
        "MCGW_MQTT__URL": broker.url,
        "MCGW_MQTT__TOPIC_PREFIX": prefix,
        "MCGW_MQTT__DISCOVERY_PREFIX": ha,
    }
    envs = []
    for hub_id in ("spa-a", "spa-b"):
        (tmp_path / hub_id).mkdir()
        envs.append(base_env(tmp_path / hub_id, MCGW_HUB_ID=hub_id, **common))
        envs[-1]["MCGW_DB__JOURNAL_PATH"] = str(tmp_path / hub_id / "hub.journal")
    try:
        with ServedHub.start(envs[0]) as hub_a, ServedHub.start(envs[1]) as hub_b:
            async with hub_a.client(hub_a.admin_token) as admin_a:
                accepted = await admin_a.post(
                    "/api/v1/me/consent", json={"version": "2026-11", "accept": True}
                )
                assert accepted.status_code == 200, accepted.text
                devices = (await admin_a.get("/api/v1/devices")).json()
                address = devices[0]["address"]
                claimed = await admin_a.post(f"/api/v1/devices/{address}/claim")
                assert claimed.status_code == 200, claimed.text
                started = await admin_a.post(
                    "/api/v1/sessions",
                    json={"device": address, "program": "quick-lift", "level": 1},
                )
                assert started.status_code == 201, started.text
                session_id = started.json()["id"]

            async with asyncio.timeout(HANG_S):
                while True:
                    fleet = fleet_json(hub_b)
                    if {"spa-a", "spa-b"} <= set(fleet) and fleet["spa-a"]["sessions"]:
                        break
                    await asyncio.sleep(0.2)
            for hub_id in ("spa-a", "spa-b"):
                assert fleet[hub_id]["availability"] == "online"
                assert len(fleet[hub_id]["devices"]) == 2
            assert [s["id"] for s in fleet["spa-a"]["sessions"]] == [session_id]
            assert fleet["spa-b"]["sessions"] == []

            async with hub_b.client(hub_b.admin_token) as admin_b:
                listed = await admin_b.get("/api/v1/fleet")
                assert listed.status_code == 200, listed.text
                by_id = {entry["hub_id"]: entry for entry in listed.json()}
                assert by_id["spa-a"]["sessions"][0]["id"] == session_id
                token = hub_b.mcgw("token", "create", "--name", "staff").stdout.split()[-1]
                async with hub_b.client(token) as staff:
                    assert (await staff.get("/api/v1/fleet")).status_code == 403

            os.killpg(hub_a.process.pid, signal.SIGKILL)  # no clean shutdown: the last will
            hub_a.process.wait()
            async with asyncio.timeout(HANG_S):
                while fleet_json(hub_b)["spa-a"]["availability"] != "offline":
                    await asyncio.sleep(0.2)
            assert fleet_json(hub_b)["spa-b"]["availability"] == "online"
    finally:
        with contextlib.suppress(Exception):
            broker.kill()
