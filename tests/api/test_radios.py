"""The Bluetooth health view: GET /api/v1/radios (admins) and the radio metrics on /metrics.

A real hub (uvicorn, two simulated devices on the in-process radio, SQLite), real httpx
clients. The endpoint and /metrics are read from the same snapshot type, so their figures must
agree; /metrics must still name no device.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import radio_metrics
from ble.sim.fleet import sim_address
from gateway.events import DeviceStateChanged
from gateway.radio_report import BluetoothReport, DeviceLinkReport, RadioReport
from gateway.states import DeviceState
from tests.api.hub import Hub

PROBLEM = "application/problem+json"
RECONNECT_WAIT_S = 10.0
"""A hang guard: a dropped simulated link is back within a second or so."""


async def _admin(hub: Hub) -> httpx.AsyncClient:
    _, token = await hub.user("root", admin=True)
    return hub.client(token)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_an_admin_sees_each_radio_and_each_device_link(hub: Hub) -> None:
    await hub.runtime.wait_connected()
    admin = await _admin(hub)
    response = await admin.get("/api/v1/radios")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()

    [radio] = body["radios"]
    assert radio["name"] == "radio0"
    assert radio["mode"] == "sim:2"
    assert radio["state"] == "up"
    assert radio["address"] == hub.runtime.ble.adapter.address  # type: ignore[union-attr]
    assert (radio["slots"], radio["slots_used"], radio["slots_free"]) == (7, 2, 5)
    assert (radio["connect_attempts"], radio["connect_failures"]) == (2, 0)
    # Connected devices stop advertising, so the rate here depends on how long ago the start's
    # scan was; its arithmetic is tests/gateway/test_radios.py's (a given clock).
    assert isinstance(radio["adverts_per_s"], float)
    assert radio["adverts_per_s"] >= 0
    assert radio["reopens"] == 0
    assert radio["last_error"] is None
    assert set(radio) == {
        "name", "mode", "address", "state", "slots", "slots_used", "slots_free",
        "adverts_per_s", "connect_attempts", "connect_failures", "reopens", "last_error",
    }  # fmt: skip

    devices = sorted(body["devices"], key=lambda d: d["address"])
    assert [d["address"] for d in devices] == [sim_address(0), sim_address(1)]
    for device in devices:
        assert device["state"] == "bonded"
        assert device["radio"] == "radio0"
        assert isinstance(device["signal_dbm"], int)
        assert device["signal_dbm"] < 0
        assert device["reconnects"] == 0
        assert device["mtu"] > 23  # exchanged on connect (ATT's default is 23)
        assert device["last_disconnect_reason"] is None
        assert set(device) == {
            "address", "name", "state", "radio", "signal_dbm", "mtu", "reconnects",
            "last_disconnect_reason",
        }  # fmt: skip


async def test_a_dropped_link_counts_a_reconnect_and_its_slot_is_held_again(hub: Hub) -> None:
    await hub.runtime.wait_connected()
    admin = await _admin(hub)
    address = sim_address(0)
    changes = hub.runtime.bus.subscribe(
        lambda e: isinstance(e, DeviceStateChanged) and e.address == address
    )
    try:
        assert hub.runtime.sim_devices[0].drop_link() == 1
        seen: list[DeviceState] = []
        async with asyncio.timeout(RECONNECT_WAIT_S):
            while DeviceState.LOST not in seen or seen[-1] is not DeviceState.BONDED:
                event = await changes.get()
                assert isinstance(event, DeviceStateChanged)
                seen.append(event.state)
    finally:
        changes.close()

    body = (await admin.get("/api/v1/radios")).json()
    [device] = [d for d in body["devices"] if d["address"] == address]
    assert (device["reconnects"], device["radio"], device["state"]) == (1, "radio0", "bonded")
    assert device["last_disconnect_reason"]
    [radio] = body["radios"]
    assert (radio["slots_used"], radio["connect_attempts"]) == (2, 3)


async def test_a_user_gets_403_and_no_token_401(hub: Hub) -> None:
    _, token = await hub.user("ana")
    refused = await hub.client(token).get("/api/v1/radios")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == PROBLEM
    assert refused.json()["type"] == "urn:mcgw:problem:forbidden"

    anonymous = await hub.client().get("/api/v1/radios")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == PROBLEM
    assert anonymous.headers["www-authenticate"].startswith("Bearer")


async def test_the_radio_metrics_match_the_endpoint_and_name_no_device(hub: Hub) -> None:
    await hub.runtime.wait_connected()
    admin = await _admin(hub)
    body = (await admin.get("/api/v1/radios")).json()
    metrics = await hub.client().get("/metrics")
    assert metrics.status_code == 200
    samples = _samples(metrics.text)

    [radio] = body["radios"]
    label = (("radio", radio["name"]),)
    for metric, field in (
        ("mcgw_radio_slots", "slots"),
        ("mcgw_radio_slots_used", "slots_used"),
        ("mcgw_radio_adverts_per_second", "adverts_per_s"),
        ("mcgw_radio_connect_attempts_total", "connect_attempts"),
        ("mcgw_radio_connect_failures_total", "connect_failures"),
        ("mcgw_radio_reopens_total", "reopens"),
    ):
        assert samples[(metric, label)] == radio[field], metric
    assert samples[("mcgw_radio_up", label)] == 1.0
    assert (samples[("mcgw_radio_slots", label)], samples[("mcgw_radio_slots_used", label)]) == (
        7,
        2,
    )

    signals = [d["signal_dbm"] for d in body["devices"] if d["radio"] == radio["name"]]
    assert samples[("mcgw_radio_weakest_signal_dbm", label)] == min(signals)
    by_band = {
        band: samples[("mcgw_radio_devices", (("radio", "radio0"), ("signal", band)))]
        for band in ("strong", "fair", "weak", "unknown")
    }
    assert sum(by_band.values()) == len(signals) == 2

    for device in body["devices"]:
        assert device["address"] not in metrics.text
        assert device["address"].lower() not in metrics.text
        assert device["name"] not in metrics.text
    assert radio["address"] not in metrics.text


def test_several_radios_each_get_their_series_and_a_bluez_radio_no_up_value() -> None:
    def radio(name: str, state: str, used: int) -> RadioReport:
        return RadioReport(
            name=name, mode="hci:tcp-client:127.0.0.1:9100", address=None, state=state,
            slots=7, slots_used=used, adverts_per_s=12.5, connect_attempts=4,
            connect_failures=1, reopens=2, last_error=None,
        )  # fmt: skip

    def device(address: str, on: str | None, dbm: int | None) -> DeviceLinkReport:
        return DeviceLinkReport(
            address=address, name="MC", state="bonded", radio=on, signal_dbm=dbm, mtu=247,
            reconnects=0, last_disconnect_reason=None,
        )  # fmt: skip

    report = BluetoothReport(
        radios=(
            radio("radio0", "up", 2),
            radio("radio1", "down", 0),
            radio("radio2", "unknown", 1),
        ),
        devices=(
            device("C0:4D:43:00:00:00", "radio0", -50),
            device("C0:4D:43:00:00:01", "radio0", -80),
            device("C0:4D:43:00:00:02", "radio2", None),
            device("C0:4D:43:00:00:03", None, -40),
        ),
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in radio_metrics(report)
        for s in family.samples
    }
    up = {labels: v for (name, labels), v in samples.items() if name == "mcgw_radio_up"}
    assert up == {(("radio", "radio0"),): 1.0, (("radio", "radio1"),): 0.0}
    assert samples[("mcgw_radio_slots_used", (("radio", "radio0"),))] == 2
    assert samples[("mcgw_radio_reopens_total", (("radio", "radio1"),))] == 2
    assert samples[("mcgw_radio_connect_failures_total", (("radio", "radio2"),))] == 1

    def on(name: str, band: str) -> float:
        return samples[("mcgw_radio_devices", (("radio", name), ("signal", band)))]

    assert (on("radio0", "strong"), on("radio0", "weak"), on("radio0", "fair")) == (1, 1, 0)
    assert on("radio2", "unknown") == 1
    assert sum(on("radio1", band) for band in ("strong", "fair", "weak", "unknown")) == 0
    weakest = {
        labels: v
        for (name, labels), v in samples.items()
        if name == "mcgw_radio_weakest_signal_dbm"
    }
    assert weakest == {(("radio", "radio0"),): -80}
