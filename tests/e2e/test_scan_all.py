"""`mcgw scan --all`: every advertiser the radio hears, a stock peripheral mcgw never saw too.

A real `mcgw sim` process carries one simulated device and, on the same virtual air, a bumble
heart-rate sensor (tests/e2e/stranger.py). `mcgw scan` runs as a user runs it, with
``--ble hci:tcp-client:...`` to the sim: through bleak's API on the bumble backend.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ble import protocol as p
from gateway.config import BleSettings, Settings
from gateway.runtime import Runtime
from mcgw.advertisers import listen
from tests.e2e import stranger
from tests.e2e.served import Sim, SimFactory, base_env, refusing_port
from tests.e2e.test_cli import mcgw


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[Sim]:
    sims = SimFactory(tmp_path)
    try:
        yield sims.start_blocking(devices=1)
    finally:
        sims.stop_all()


async def test_scan_all_lists_a_stock_peripheral_beside_the_devices(
    sim_process: Sim, tmp_path: Path
) -> None:
    env = base_env(tmp_path)
    async with stranger.heart_rate_sensor(sim_process.hci_port):
        every, table, only_ours = await asyncio.gather(
            asyncio.to_thread(
                mcgw, "scan", "--ble", sim_process.ble, "--all", "--json", "--timeout", "1", env=env
            ),
            asyncio.to_thread(
                mcgw, "scan", "--ble", sim_process.ble, "--all", "--timeout", "1", env=env
            ),
            asyncio.to_thread(
                mcgw, "scan", "--ble", sim_process.ble, "--json", "--timeout", "1", env=env
            ),
        )
    assert every.returncode == 0, every.stderr
    heard = {row["address"]: row for row in json.loads(every.stdout)}
    assert set(heard) == {stranger.ADDRESS, *sim_process.addresses}
    assert heard[stranger.ADDRESS] == {
        "address": stranger.ADDRESS,
        "name": stranger.NAME,
        "rssi": heard[stranger.ADDRESS]["rssi"],
        "tx_power": None,
        "service_uuids": [stranger.HEART_RATE_UUID],
        "manufacturer_ids": [stranger.NORDIC],
        "microcurrent": False,
    }
    assert isinstance(heard[stranger.ADDRESS]["rssi"], int)
    (ours,) = sim_process.addresses
    assert heard[ours]["microcurrent"] is True
    assert heard[ours]["service_uuids"] == [p.SERVICE_UUID]
    assert heard[ours]["manufacturer_ids"] == [p.COMPANY_ID]

    assert table.returncode == 0, table.stderr
    (line,) = (row for row in table.stdout.splitlines() if stranger.ADDRESS in row)
    assert stranger.NAME in line
    assert "180d (Heart Rate)" in line
    assert "0x0059 (Nordic Semiconductor ASA)" in line
    assert "2 advertiser(s) heard, 1 microcurrent device(s)" in table.stderr

    # Without --all, the scan still lists microcurrent devices only, in its own shape.
    assert only_ours.returncode == 0, only_ours.stderr
    (device,) = json.loads(only_ours.stdout)
    assert device["address"] == ours
    assert set(device) == {"address", "name", "rssi", "battery_pct", "state"}


async def test_scan_all_in_sim_mode_hears_the_simulated_devices() -> None:
    runtime = Runtime(Settings(ble=BleSettings(mode="sim:2"), mdns=False), storage=False)
    await runtime.open_ble()
    try:
        rows = await listen(runtime, 0.5)
    finally:
        await runtime.stop()
    assert sorted(row["address"] for row in rows) == sorted(d.address for d in runtime.sim_devices)
    assert all(row["microcurrent"] and row["name"].startswith("MC-SIM") for row in rows)


async def test_scan_all_listens_on_the_radios_that_opened_when_one_is_down(
    sim_process: Sim, tmp_path: Path
) -> None:
    """A radio that could not be opened has no backend yet: the scan must not fall back to
    bleak's platform backend for it (BlueZ, absent here), only listen on the others."""
    env = base_env(tmp_path)
    with refusing_port() as held:
        nobody = held.getsockname()[1]
        radios = f"{sim_process.ble},hci:tcp-client:127.0.0.1:{nobody}"
        done = await asyncio.to_thread(
            mcgw, "scan", "--ble", radios, "--all", "--json", "--timeout", "1", env=env
        )
    assert done.returncode == 0, done.stderr
    assert {row["address"] for row in json.loads(done.stdout)} == set(sim_process.addresses)
    assert f"radio1 (tcp-client:127.0.0.1:{nobody}) could not be opened" in done.stderr
    assert "Traceback" not in done.stderr
