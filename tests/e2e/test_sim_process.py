"""`mcgw sim` as its own process, and a second process's bleak code finding and using its devices.

The test process is the "second process": it opens a bumble adapter on ``tcp-client:`` to the
sim's HCI-over-TCP port and talks to the devices through bleak, exactly as `mcgw serve --ble
hci:tcp-client:...` does. Scenarios are driven through the sim's control endpoint.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from bleak import BleakScanner

from ble import protocol as p
from ble.bumble.adapter import BumbleAdapter
from ble.bumble.client import BumbleClient
from ble.bumble.scanner import BumbleScanner
from ble.link import DeviceLink
from ble.sim import control
from tests.e2e.served import Sim, SimFactory

DEVICES = 3


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[Sim]:
    sims = SimFactory(tmp_path)
    try:
        yield sims.start_blocking(devices=DEVICES)
    finally:
        sims.stop_all()


@pytest.fixture
async def remote_adapter(sim_process: Sim) -> AsyncIterator[BumbleAdapter]:
    adapter = await BumbleAdapter.open(f"tcp-client:127.0.0.1:{sim_process.hci_port}")
    try:
        yield adapter
    finally:
        await adapter.close()


async def test_second_process_finds_bonds_and_streams_from_every_device(
    sim_process: Sim, remote_adapter: BumbleAdapter
) -> None:
    assert len(sim_process.addresses) == DEVICES
    found = await BleakScanner.discover(
        timeout=1.0,
        return_adv=True,
        service_uuids=[p.SERVICE_UUID],
        backend=BumbleScanner.bound_to(remote_adapter),
    )
    devices = {device.address.upper(): device for device, _adv in found.values()}
    assert set(devices) == set(sim_process.addresses)

    frames: dict[str, list[int]] = {address: [] for address in devices}
    links = [
        DeviceLink(
            device,
            client_backend=BumbleClient,
            on_telemetry=lambda t, a=address: frames[a].extend(s.frame for s in t.samples),
        )
        for address, device in devices.items()
    ]
    try:
        for link in links:
            await link.connect(telemetry_hz=50)  # bonds, handshakes, reads limits
        async with asyncio.timeout(15):
            while min(len(f) for f in frames.values()) < 100:
                await asyncio.sleep(0.05)
        for address, seen in frames.items():
            steps = {(b - a) % 65536 for a, b in itertools.pairwise(seen)}
            assert steps == {1}, f"{address} lost telemetry frames: {steps}"

        # Commands with ACKs across the process boundary, and the scenario endpoint.
        link = links[0]
        address = link.address.upper()
        segment = p.QueueSegment(
            segment_id=1,
            zone=p.Zone.FOREHEAD,
            waveform=p.Waveform.SINE,
            frequency_dhz=100,
            amplitude_ua=200,
            pulse_width_us=500,
            duration_ms=5000,
            ramp_ms=200,
        )
        assert (await link.send(segment)).ok
        assert (await link.send(p.Start())).ok
        async with asyncio.timeout(10):
            while (await control.request(sim_process.control_port, "GET", f"/devices/{address}"))[
                "output_ua"
            ] == 0:
                await link.send(p.Keepalive())
                await asyncio.sleep(0.05)
        snapshot = await control.call(
            sim_process.control_port, address, "set_on_skin", on_skin=False
        )
        assert snapshot["contact"] is False
        await link.stop()
        state = await control.request(sim_process.control_port, "GET", f"/devices/{address}")
        assert state["output_ua"] == 0
        assert state["queue"] == []
    finally:
        for link in links:
            await link.close()
