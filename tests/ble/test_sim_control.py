"""The simulator's local control endpoint: the scenario API over HTTP/JSON."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ble.bumble.radio import VirtualRadio
from ble.sim.control import ControlError, ControlServer, call, request
from ble.sim.peripheral import SimulatedDevice

ADDRESS = "C0:00:00:00:30:01"


@pytest.fixture
async def server() -> AsyncIterator[tuple[ControlServer, SimulatedDevice]]:
    radio = VirtualRadio()
    try:
        async with (
            SimulatedDevice(radio, name="mc-ctl", address=ADDRESS) as device,
            ControlServer([device]) as control,
        ):
            yield control, device
    finally:
        await radio.close()


async def test_actions_change_the_device_and_return_its_snapshot(
    server: tuple[ControlServer, SimulatedDevice],
) -> None:
    control, device = server
    snapshot = await call(control.port, ADDRESS.lower(), "set_on_skin", on_skin=False)
    assert snapshot["contact"] is False
    assert snapshot["impedance_ohm"] is None
    assert device.firmware.physics.on_skin is False
    await call(control.port, ADDRESS, "set_temperature", celsius=42)
    await asyncio.sleep(0.02)  # a few ticks for the firmware to notice
    snapshot = await call(control.port, ADDRESS, "refuse_commands", n=2, opcodes=[6])
    assert snapshot["state"] == "FAULT"
    assert "OVER_TEMPERATURE" in snapshot["faults"]
    assert (await call(control.port, ADDRESS, "stall", ms=10))["address"] == ADDRESS


async def test_listing_and_reading_devices(server: tuple[ControlServer, SimulatedDevice]) -> None:
    control, _device = server
    listing = await request(control.port, "GET", "/devices")
    assert [d["address"] for d in listing["devices"]] == [ADDRESS]
    one = await request(control.port, "GET", f"/devices/{ADDRESS}")
    assert one["state"] == "IDLE"
    assert set(one["counters"]) == {"firmware", "radio"}


@pytest.mark.parametrize(
    ("action", "args", "message"),
    [
        ("set_on_skin", {}, "needs"),
        ("set_on_skin", {"on_skin": 1}, "wrong type"),
        ("dry_gel", {"minutes": True}, "wrong type"),
        ("dry_gel", {"minutes": -1}, "cannot un-dry"),
        ("stall", {"ms": 5, "extra": 1}, "takes no argument"),
        ("refuse_commands", {"n": 1, "opcodes": ["STOP"]}, "list of integers"),
        ("self_destruct", {}, "unknown action"),
    ],
)
async def test_bad_requests_are_refused_with_a_reason(
    server: tuple[ControlServer, SimulatedDevice],
    action: str,
    args: dict[str, object],
    message: str,
) -> None:
    control, _device = server
    with pytest.raises(ControlError, match=message):
        await call(control.port, ADDRESS, action, **args)


async def test_unknown_device_path_and_method(
    server: tuple[ControlServer, SimulatedDevice],
) -> None:
    control, _device = server
    with pytest.raises(ControlError, match=r"404.*known: C0:00:00:00:30:01"):
        await call(control.port, "C0:00:00:00:99:99", "vanish")
    with pytest.raises(ControlError, match="404"):
        await request(control.port, "GET", "/nowhere")
    with pytest.raises(ControlError, match="405"):
        await request(control.port, "GET", f"/devices/{ADDRESS}/vanish")


async def test_a_missing_endpoint_is_a_control_error() -> None:
    server = ControlServer([])
    await server.start()
    port = server.port
    await server.stop()
    with pytest.raises(ControlError, match="no simulator control endpoint"):
        await request(port, "GET", "/devices")
