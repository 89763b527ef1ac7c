"""bleak's own BlueZ backend, and the hub in its ``bluez`` modes, against the BlueZ-shaped
service (ble/sim/bluez_dbus.py) on a private D-Bus bus.

No test here hands bleak a backend: with ``DBUS_SYSTEM_BUS_ADDRESS`` pointing at the private
bus, bleak picks its BlueZ backend as on any Linux host, and the service carries each call over
the virtual air to a simulated device's firmware. The first tests run the service in this
process; the last runs `mcgw sim --bluez-bus` and the hub as real processes, with `mcgw doctor`
and `mcgw scan --all` on the way. What the service cannot show is listed in its module.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakGATTProtocolError

from ble import protocol as p
from ble.backends import BleStack
from ble.bumble.adapter import BumbleAdapter
from ble.bumble.radio import VirtualRadio
from ble.link import DeviceLink
from ble.mode import BleMode
from ble.sim.bluez_dbus import BluezService
from ble.sim.fleet import start_sim_devices, stop_sim_devices
from ble.sim.peripheral import SimulatedDevice
from gateway.doctor import Status
from gateway.doctor.bluetooth import bluetooth_checks
from tests.e2e.bluez_bus import BLUEZ_VERSION, PrivateBus
from tests.e2e.served import ServedHub, SimFactory, base_env, copy_database, free_port
from tests.e2e.test_cli import mcgw

HANG_S = 30.0
"""Upper bound for any one wait: a hang guard, never a measurement."""
INSUFFICIENT_ENCRYPTION = 0x0F


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateBus]:
    """The private bus, taken for the system bus by this process (bleak reads the address
    when it connects)."""
    private = PrivateBus.start(tmp_path)
    for name, value in private.env().items():
        monkeypatch.setenv(name, value)
    try:
        yield private
    finally:
        private.stop()


class Air:
    def __init__(self, radio: VirtualRadio, devices: list[SimulatedDevice]) -> None:
        self.radio = radio
        self.devices = devices


@pytest.fixture
async def air(bus: PrivateBus) -> AsyncIterator[Air]:
    """One simulated device, and BlueZ with two adapters (hci0, hci1) on the same air."""
    radio = VirtualRadio()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(radio.close)
        devices = await start_sim_devices(radio, 1)
        stack.push_async_callback(stop_sim_devices, devices)
        centrals = {}
        for name in ("hci0", "hci1"):
            centrals[name] = await BumbleAdapter.open("virtual", radio=radio, name=name)
            stack.push_async_callback(centrals[name].close)
        service = BluezService(centrals)
        await service.start(bus.address)
        stack.push_async_callback(service.close)
        yield Air(radio, devices)


async def test_bleaks_bluez_backend_scans_connects_pairs_subscribes_and_writes(air: Air) -> None:
    (sim,) = air.devices
    found = await BleakScanner.discover(1.0, return_adv=True, service_uuids=[p.SERVICE_UUID])
    assert [device.address for device, _ in found.values()] == [sim.address]
    ((device, adv),) = found.values()
    assert device.name == sim.name
    assert adv.local_name == sim.name
    assert p.COMPANY_ID in adv.manufacturer_data
    # No adapter named: bleak takes a powered one of the two (which one is bleak's choice).
    assert device.details["path"] in {
        f"/org/bluez/{hci}/dev_{sim.address.replace(':', '_')}" for hci in ("hci0", "hci1")
    }

    # Before pairing the device refuses commands with ATT 0x0F, and BlueZ's answer reaches
    # bleak as the same protocol error.
    async with BleakClient(device) as client:
        with pytest.raises(BleakGATTProtocolError) as refused:
            await client.write_gatt_char(p.CONTROL_POINT_UUID, bytes(p.Hello(seq=1)), True)
        assert refused.value.code == INSUFFICIENT_ENCRYPTION

    # The link as the hub runs it: connect (bleak-retry-connector), pair, subscribe to three
    # characteristics, read the limits, handshake, then telemetry and commands with ACKs.
    frames: list[int] = []
    link = DeviceLink(device, on_telemetry=lambda t: frames.extend(s.frame for s in t.samples))
    try:
        await link.connect(telemetry_hz=50)
        assert link.limits is not None
        assert link.limits.protocol_version == p.PROTOCOL_VERSION
        async with asyncio.timeout(HANG_S):
            while len(frames) < 50:
                await asyncio.sleep(0.02)
        assert {(b - a) % 65536 for a, b in itertools.pairwise(frames)} == {1}
        assert (await link.send(p.Keepalive())).ok
        segment = p.QueueSegment(
            segment_id=1,
            zone=p.Zone.FOREHEAD,
            waveform=p.Waveform.SINE,
            frequency_dhz=100,
            amplitude_ua=150,
            pulse_width_us=500,
            duration_ms=5000,
            ramp_ms=200,
        )
        assert (await link.send(segment)).ok
        assert (await link.send(p.Start())).ok
        async with asyncio.timeout(HANG_S):
            while sim.firmware.output_ua == 0:
                await link.send(p.Keepalive())
                await asyncio.sleep(0.05)
        await link.stop()
        assert sim.firmware.output_ua == 0
    finally:
        await link.close()


async def test_bluez_adapter_mode_scans_through_that_adapter(air: Air) -> None:
    (sim,) = air.devices
    stack = await BleStack.open(BleMode.parse("bluez:hci1"), on_down=lambda: None, on_up=print)
    try:
        found = await BleakScanner.discover(
            1.0, service_uuids=[p.SERVICE_UUID], backend=stack.backends.scanner
        )
    finally:
        await stack.close()
    assert [d.details["path"] for d in found] == [
        f"/org/bluez/hci1/dev_{sim.address.replace(':', '_')}"
    ]


@pytest.fixture
def bluez_sim(bus: PrivateBus, tmp_path: Path) -> Iterator[list[str]]:
    """`mcgw sim` with one device, also serving BlueZ (hci0, hci1) on the private bus."""
    sims = SimFactory(tmp_path)
    try:
        extra = ("--bluez-bus", bus.address, "--bluez-adapters", "2")
        yield sims.start_blocking(devices=1, extra=extra).addresses
    finally:
        sims.stop_all()


async def test_serve_with_bluez_hci1_claims_and_runs_a_session(
    bus: PrivateBus, bluez_sim: list[str], tmp_path: Path, migrated_sqlite: Path
) -> None:
    (address,) = bluez_sim
    copy_database(migrated_sqlite, tmp_path / "hub.db")  # base_env's database, migrated
    env = base_env(tmp_path, **bus.env())

    # The installer's checks first: BlueZ answers on the bus and its radio hears the device.
    doctor = mcgw("doctor", "--json", "--ble", "bluez:hci1", "--port", str(free_port()), env=env)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["dbus"]["status"] == "ok"
    assert checks["bluez"] == {
        "name": "bluez",
        "status": "ok",
        "detail": f"BlueZ {BLUEZ_VERSION} runs (org.bluez on the system bus)",
        "fix": "",
    }
    assert checks["adapters"]["status"] == "ok"
    assert checks["adapters"]["detail"].endswith("the hub uses hci1")
    assert checks["radio"]["status"] == "ok", checks["radio"]
    assert "1 microcurrent device(s)" in checks["radio"]["detail"]
    scan = mcgw("scan", "--all", "--json", "--ble", "bluez", "--timeout", "1", env=env)
    assert scan.returncode == 0, scan.stderr
    assert [row["address"] for row in json.loads(scan.stdout)] == [address]

    with ServedHub.start(env, devices=1, ble="bluez:hci1") as hub:
        async with hub.client(hub.admin_token) as admin:
            consent = {"version": "2026-11", "accept": True}
            assert (await admin.post("/api/v1/me/consent", json=consent)).status_code == 200
            claimed = await admin.post(f"/api/v1/devices/{address}/claim")
            assert claimed.status_code == 200, claimed.text
            started = await admin.post(
                "/api/v1/sessions", json={"device": address, "program": "quick-lift", "level": 1}
            )
            assert started.status_code == 201, started.text
            session = started.json()["id"]
            async with asyncio.timeout(HANG_S):
                while (await admin.get(f"/api/v1/sessions/{session}")).json()["state"] != "running":
                    await asyncio.sleep(0.1)
            stopped = await admin.post(f"/api/v1/sessions/{session}/stop")
            assert stopped.status_code == 200, stopped.text
            final = (await admin.get(f"/api/v1/sessions/{session}")).json()
            assert final["state"] == "stopped"
        assert "Traceback" not in hub.logged()


async def test_doctor_names_a_powered_off_adapter_and_how_to_turn_it_on(bus: PrivateBus) -> None:
    radio = VirtualRadio()
    central = await BumbleAdapter.open("virtual", radio=radio, name="hci0")
    service = BluezService({"hci0": central}, powered=False)
    await service.start(bus.address)
    try:
        checks = {c.name: c for c in await bluetooth_checks(BleMode.parse("bluez"), scan_s=0.5)}
    finally:
        await service.close()
        await central.close()
        await radio.close()
    assert checks["dbus"].status is Status.OK
    assert checks["bluez"].status is Status.OK
    adapters = checks["adapters"]
    assert adapters.status is Status.FAIL
    assert adapters.detail == f"hci0 is powered off (hci0 ({central.address}, off))"
    assert "bluetoothctl power on" in adapters.fix
    assert checks["radio"].status is Status.SKIP
