"""The simulated device through bleak's public API over the in-process virtual radio.

These are the foundation's contract tests: what a gateway sees of a device, with the real GATT
stack in between (bleak -> bumble backend -> virtual radio -> bumble peripheral -> firmware).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakError

from ble import protocol as p
from ble.bumble.adapter import BumbleAdapter
from ble.bumble.client import BumbleClient
from ble.bumble.radio import VirtualRadio
from ble.bumble.scanner import BumbleScanner
from ble.errors import CommandRefused, LinkError
from ble.link import DeviceLink
from ble.sim.peripheral import SimulatedDevice

HANG_GUARD_S = 10.0


class Bench:
    """A radio, N simulated devices and the hub's adapter."""

    def __init__(self, radio: VirtualRadio, sims: list[SimulatedDevice], adapter: BumbleAdapter):
        self.radio = radio
        self.sims = sims
        self.adapter = adapter

    async def find(self, sim: SimulatedDevice) -> DeviceLink:
        device = await BleakScanner.find_device_by_address(
            sim.address, timeout=5.0, backend=BumbleScanner.bound_to(self.adapter)
        )
        assert device is not None, f"{sim.address} not found"
        return DeviceLink(device, client_backend=BumbleClient)

    async def wait_for(self, predicate: object, what: str) -> None:
        assert callable(predicate)
        async with asyncio.timeout(HANG_GUARD_S):
            while not predicate():
                await asyncio.sleep(0.01)


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    radio = VirtualRadio()
    sims = [
        SimulatedDevice(radio, name=f"MC-T{i}", address=f"C0:4D:43:AA:00:{i:02X}", seed=i + 1)
        for i in range(3)
    ]
    for sim in sims:
        await sim.start()
    adapter = await BumbleAdapter.open("virtual", radio=radio)
    try:
        yield Bench(radio, sims, adapter)
    finally:
        await adapter.close()
        for sim in sims:
            await sim.stop()
        await radio.close()


def segment(segment_id: int, amplitude: int = 200, duration: int = 2000) -> p.QueueSegment:
    return p.QueueSegment(
        segment_id=segment_id,
        zone=p.Zone.CHEEKS,
        waveform=p.Waveform.SQUARE_BIPHASIC,
        frequency_dhz=100,
        amplitude_ua=amplitude,
        pulse_width_us=500,
        duration_ms=duration,
        ramp_ms=200,
    )


async def test_scan_finds_every_device_by_service_uuid(bench: Bench) -> None:
    found = await BleakScanner.discover(
        timeout=0.5,
        return_adv=True,
        service_uuids=[p.SERVICE_UUID],
        backend=BumbleScanner.bound_to(bench.adapter),
    )
    addresses = {device.address.upper() for device, _adv in found.values()}
    assert addresses == {sim.address for sim in bench.sims}
    for _device, adv in found.values():
        advert = p.AdvertData.from_bytes(adv.manufacturer_data[p.COMPANY_ID])
        assert advert.state is p.DeviceState.IDLE
        assert 0 < advert.battery_pct <= 100


async def test_connect_bond_discover_and_read_device_information(bench: Bench) -> None:
    sim = bench.sims[0]
    device = await BleakScanner.find_device_by_address(
        sim.address, timeout=5.0, backend=BumbleScanner.bound_to(bench.adapter)
    )
    assert device is not None
    async with BleakClient(device, backend=BumbleClient) as client:
        await client.pair()
        uuids = {service.uuid for service in client.services}
        assert {
            p.SERVICE_UUID,
            p.DEVICE_INFORMATION_SERVICE_UUID,
            p.BATTERY_SERVICE_UUID,
        } <= uuids
        limits = p.DeviceLimits.from_bytes(await client.read_gatt_char(p.LIMITS_UUID))
        assert limits.protocol_version == p.PROTOCOL_VERSION
        assert limits.hard_cap_ua <= 500
        model = await client.read_gatt_char(p.MODEL_NUMBER_UUID)
        assert model.decode().startswith("MC-SIM")
        battery = await client.read_gatt_char(p.BATTERY_LEVEL_UUID)
        assert 0 < battery[0] <= 100


async def test_unbonded_control_write_is_refused(bench: Bench) -> None:
    sim = bench.sims[0]
    device = await BleakScanner.find_device_by_address(
        sim.address, timeout=5.0, backend=BumbleScanner.bound_to(bench.adapter)
    )
    assert device is not None
    async with BleakClient(device, backend=BumbleClient) as client:
        with pytest.raises(BleakError) as refused:
            await client.write_gatt_char(p.CONTROL_POINT_UUID, bytes(segment(1, 1)), response=True)
        assert "0x0F" in str(refused.value).upper() or "ENCRYPTION" in str(refused.value).upper()
    assert sim.sync().queue == ()


async def test_queue_segments_and_get_acks(bench: Bench) -> None:
    sim = bench.sims[0]
    link = await bench.find(sim)
    await link.connect()
    try:
        free = []
        for i in range(1, 4):
            response = await link.send(segment(i))
            assert response.ok
            free.append(response.queue_free)
        assert free == sorted(free, reverse=True)
        assert [s.segment_id for s in sim.sync().queue] == [1, 2, 3]
    finally:
        await link.close()


async def test_segment_above_the_hard_cap_is_refused(bench: Bench) -> None:
    sim = bench.sims[0]
    link = await bench.find(sim)
    await link.connect()
    try:
        assert link.limits is not None
        with pytest.raises(CommandRefused) as refused:
            await link.send(segment(1, amplitude=link.limits.hard_cap_ua + 1))
        assert refused.value.status == p.Status.ABOVE_HARD_CAP.name
        assert sim.sync().queue == ()
    finally:
        await link.close()


async def test_telemetry_rate_holds_with_no_missing_frames(bench: Bench) -> None:
    frames: list[int] = []
    sim = bench.sims[1]
    device = await BleakScanner.find_device_by_address(
        sim.address, timeout=5.0, backend=BumbleScanner.bound_to(bench.adapter)
    )
    assert device is not None
    link = DeviceLink(
        device,
        client_backend=BumbleClient,
        on_telemetry=lambda t: frames.extend(s.frame for s in t.samples),
    )
    await link.connect(telemetry_hz=50)
    try:
        start = asyncio.get_running_loop().time()
        await bench.wait_for(lambda: len(frames) >= 100, "100 telemetry frames")
        elapsed = asyncio.get_running_loop().time() - start
    finally:
        await link.close()
    steps = {(b - a) % 65536 for a, b in itertools.pairwise(frames)}
    assert steps == {1}, f"frame counter gaps: {steps}"
    # 100 frames at 50 Hz is two seconds of device time; the rate is the device's, not ours.
    assert elapsed > 1.0
    assert link.counters.malformed_frames == 0


async def test_output_runs_then_lease_expiry_stops_it(bench: Bench) -> None:
    sim = bench.sims[0]
    link = await bench.find(sim)
    await link.connect()
    await link.send(segment(1, amplitude=200, duration=10_000))
    await link.send(p.Start())
    await bench.wait_for(lambda: sim.sync().output_ua > 0, "output on")
    # Stop sending anything: no keepalive. The firmware's lease must cut output by itself.
    await bench.wait_for(lambda: sim.sync().output_ua == 0, "output off by lease")
    firmware = sim.sync()
    assert firmware.state is p.DeviceState.IDLE
    assert firmware.faults & p.FaultFlags.LEASE_EXPIRED
    assert firmware.queue == ()
    await link.close()


async def test_disconnect_stops_output(bench: Bench) -> None:
    sim = bench.sims[2]
    link = await bench.find(sim)
    await link.connect()
    await link.send(segment(1, amplitude=200, duration=10_000))
    await link.send(p.Start())
    await bench.wait_for(lambda: sim.sync().output_ua > 0, "output on")
    bench.radio.drop_links(sim.address)
    await bench.wait_for(lambda: sim.sync().output_ua == 0, "output off on disconnect")
    assert sim.sync().state is p.DeviceState.IDLE
    with pytest.raises(LinkError):
        await link.send(p.Keepalive())
    await link.close()


async def test_contact_loss_gates_output(bench: Bench) -> None:
    sim = bench.sims[0]
    link = await bench.find(sim)
    await link.connect()
    await link.send(segment(1, amplitude=200, duration=10_000))
    await link.send(p.Start())
    await bench.wait_for(lambda: sim.sync().output_ua > 0, "output on")
    sim.set_on_skin(False)
    await bench.wait_for(lambda: sim.sync().output_ua == 0, "output gated")
    for _ in range(20):
        await link.send(p.Keepalive())
        assert sim.sync().output_ua == 0
    sim.set_on_skin(True)
    await bench.wait_for(lambda: sim.sync().output_ua > 0, "output back")
    await link.stop()
    assert sim.sync().output_ua == 0
    await link.close()


async def test_stop_is_immediate_and_clears_the_queue(bench: Bench) -> None:
    sim = bench.sims[1]
    link = await bench.find(sim)
    await link.connect()
    for i in range(1, 4):
        await link.send(segment(i, amplitude=250, duration=5_000))
    await link.send(p.Start())
    await bench.wait_for(lambda: sim.sync().output_ua > 0, "output on")
    await link.stop()
    firmware = sim.sync()
    assert firmware.output_ua == 0
    assert firmware.queue == ()
    await link.close()


async def test_malformed_notifications_are_counted_and_dropped(bench: Bench) -> None:
    frames: list[int] = []
    sim = bench.sims[0]
    device = await BleakScanner.find_device_by_address(
        sim.address, timeout=5.0, backend=BumbleScanner.bound_to(bench.adapter)
    )
    assert device is not None
    link = DeviceLink(
        device,
        client_backend=BumbleClient,
        on_telemetry=lambda t: frames.extend(s.frame for s in t.samples),
    )
    await link.connect()
    try:
        sim.send_malformed(5)
        await bench.wait_for(lambda: link.counters.malformed_frames >= 5, "5 malformed")
        count = len(frames)
        await bench.wait_for(lambda: len(frames) > count + 10, "telemetry continues")
        assert link.is_connected
    finally:
        await link.close()
