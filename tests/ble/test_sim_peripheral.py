"""The simulated device over the virtual radio, driven by a plain bumble central.

The bleak-level end-to-end tests are the lead's; these check the GATT surface itself: the
advertisement, pairing, the encryption requirement, ACK indications, telemetry notifications,
link loss and the radio impairments of the scenario API.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from bumble.att import ATT_Error
from bumble.core import UUID, AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt import GATT_BATTERY_LEVEL_CHARACTERISTIC, GATT_MODEL_NUMBER_STRING_CHARACTERISTIC
from bumble.gatt_client import CharacteristicProxy
from bumble.hci import Address

from ble import protocol as p
from ble.bumble.radio import VirtualRadio
from ble.errors import ProtocolError
from ble.sim.firmware import DEFAULT_LIMITS
from ble.sim.peripheral import SimulatedDevice

SIM_ADDRESS = "C0:00:00:00:10:01"
HUB_ADDRESS = "C0:00:00:00:20:01"
ATT_INSUFFICIENT_ENCRYPTION = 0x0F
STEP_S = 2.0  # upper bound for any single BLE step in these tests


@dataclass
class Session:
    """One central-side connection to the simulated device."""

    connection: Connection
    peer: Peer
    chars: dict[str, CharacteristicProxy[bytes]]
    responses: asyncio.Queue[p.Response] = field(default_factory=asyncio.Queue)
    telemetry: list[bytes] = field(default_factory=list)
    statuses: list[p.DeviceStatus] = field(default_factory=list)
    seq: int = 0

    async def write(self, command: p.Command) -> None:
        async with asyncio.timeout(STEP_S):
            await self.chars[p.CONTROL_POINT_UUID].write_value(bytes(command), with_response=True)

    async def send(self, make: Callable[..., p.Command]) -> p.Response:
        """Write a command built with a fresh seq; return its ACK/NACK indication."""
        self.seq += 1
        await self.write(make(seq=self.seq))
        async with asyncio.timeout(STEP_S):
            response = await self.responses.get()
        assert response.seq == self.seq
        return response

    async def read(self, uuid: str) -> bytes:
        async with asyncio.timeout(STEP_S):
            return bytes(await self.chars[uuid].read_value())

    def samples(self) -> list[p.TelemetrySample]:
        return [s for raw in self.telemetry for s in p.Telemetry.from_bytes(raw).samples]


async def open_session(hub: Device, *, pair: bool = True, mtu: int = 247) -> Session:
    async with asyncio.timeout(STEP_S):
        connection = await hub.connect(Address(SIM_ADDRESS))
        peer = Peer(connection)
        if mtu != 23:
            await peer.request_mtu(mtu)
        await peer.discover_services()
        await peer.discover_characteristics()
    uuids = [p.CONTROL_POINT_UUID, p.RESPONSE_UUID, p.TELEMETRY_UUID, p.STATUS_UUID]
    uuids.append(p.LIMITS_UUID)
    chars = {u: peer.get_characteristics_by_uuid(UUID(u))[0] for u in uuids}
    session = Session(connection, peer, chars)
    async with asyncio.timeout(STEP_S):
        await peer.subscribe(
            chars[p.RESPONSE_UUID],
            lambda v: session.responses.put_nowait(p.Response.from_bytes(v)),
            prefer_notify=False,
        )
        await peer.subscribe(chars[p.TELEMETRY_UUID], lambda v: session.telemetry.append(bytes(v)))
        await peer.subscribe(
            chars[p.STATUS_UUID], lambda v: session.statuses.append(p.DeviceStatus.from_bytes(v))
        )
        if pair:
            await connection.pair()
    return session


@pytest.fixture
async def radio() -> AsyncIterator[VirtualRadio]:
    radio = VirtualRadio()
    yield radio
    await radio.close()


@pytest.fixture
async def sim(radio: VirtualRadio) -> AsyncIterator[SimulatedDevice]:
    async with SimulatedDevice(radio, name="mc-sim-1", address=SIM_ADDRESS, seed=7) as device:
        yield device


@pytest.fixture
async def hub(radio: VirtualRadio, sim: SimulatedDevice) -> AsyncIterator[Device]:
    device = radio.attach("hub", HUB_ADDRESS)
    await device.power_on()
    yield device
    for connection in list(device.connections.values()):
        async with asyncio.timeout(STEP_S):
            await connection.disconnect()
    async with asyncio.timeout(STEP_S):
        await device.power_off()


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(STEP_S):
        while not condition():
            await asyncio.sleep(0.005)


def segment(seq: int, segment_id: int = 1, **fields: int) -> p.QueueSegment:
    values = {"frequency_dhz": 100, "amplitude_ua": 300, "pulse_width_us": 200}
    values |= {"duration_ms": 30_000, "ramp_ms": 100} | fields
    return p.QueueSegment(segment_id, **values, seq=seq)  # type: ignore[arg-type]


# -- advertising, services, pairing ----------------------------------------------------------------


async def test_advertisement_carries_name_service_and_manufacturer_data(
    sim: SimulatedDevice, hub: Device
) -> None:
    heard: asyncio.Future[Advertisement] = asyncio.get_running_loop().create_future()

    def on_advertisement(advertisement: Advertisement) -> None:
        if str(advertisement.address.to_string(False)) == SIM_ADDRESS and not heard.done():
            heard.set_result(advertisement)

    hub.on(Device.EVENT_ADVERTISEMENT, on_advertisement)
    await hub.start_scanning()
    async with asyncio.timeout(STEP_S):
        advertisement = await heard
    await hub.stop_scanning()
    data = advertisement.data
    assert data.get(AdvertisingData.COMPLETE_LOCAL_NAME) == "mc-sim-1"
    services = data.get(AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS)
    assert services is not None
    assert UUID(p.SERVICE_UUID) in services
    manufacturer = data.get(AdvertisingData.MANUFACTURER_SPECIFIC_DATA)
    assert manufacturer is not None
    company, payload = manufacturer
    assert company == p.COMPANY_ID
    assert p.AdvertData.from_bytes(payload) == p.AdvertData(1, p.DeviceState.IDLE, 100)
    assert advertisement.is_connectable


async def test_unencrypted_write_is_refused_with_att_insufficient_encryption(
    sim: SimulatedDevice, hub: Device
) -> None:
    session = await open_session(hub, pair=False)
    with pytest.raises(ATT_Error) as refused:
        await session.write(p.Keepalive(seq=1))
    assert refused.value.error_code == ATT_INSUFFICIENT_ENCRYPTION
    with pytest.raises(ATT_Error) as refused:
        await session.write(p.Start(seq=2))
    assert refused.value.error_code == ATT_INSUFFICIENT_ENCRYPTION
    assert sim.firmware.counters.commands == 0
    # Reads need no encryption: a gateway learns the limits before bonding.
    assert p.DeviceLimits.from_bytes(await session.read(p.LIMITS_UUID)) == DEFAULT_LIMITS


async def test_a_stop_is_executed_on_any_link(sim: SimulatedDevice, hub: Device) -> None:
    session = await open_session(hub)
    assert (await session.send(segment)).ok
    assert (await session.send(p.Start)).ok
    await wait_for(lambda: sim.firmware.output_ua > 0, "output")
    async with asyncio.timeout(STEP_S):
        await session.connection.disconnect()
    plain = await open_session(hub, pair=False)
    assert not plain.connection.is_encrypted
    assert (await plain.send(p.Stop)).ok
    with pytest.raises(ATT_Error):
        await plain.write(
            p.QueueSegment(segment_id=1, seq=99)
        )  # malformed ranges, but refused first
    assert sim.firmware.command_log[-1][1] == p.Opcode.STOP


async def test_pair_write_and_get_the_ack_by_indication(sim: SimulatedDevice, hub: Device) -> None:
    session = await open_session(hub)
    assert session.connection.is_encrypted
    assert (await session.send(p.Hello)).ok
    nack = await session.send(lambda seq: segment(seq, amplitude_ua=DEFAULT_LIMITS.hard_cap_ua + 1))
    assert nack.status is p.Status.ABOVE_HARD_CAP
    status = p.DeviceStatus.from_bytes(await session.read(p.STATUS_UUID))
    assert status == sim.firmware.status()


async def test_device_information_and_battery(sim: SimulatedDevice, hub: Device) -> None:
    session = await open_session(hub, pair=False)
    peer = session.peer
    model = peer.get_characteristics_by_uuid(GATT_MODEL_NUMBER_STRING_CHARACTERISTIC)[0]
    battery = peer.get_characteristics_by_uuid(GATT_BATTERY_LEVEL_CHARACTERISTIC)[0]
    async with asyncio.timeout(STEP_S):
        assert bytes(await model.read_value()) == b"MC-SIM-1"
        sim.set_battery(42)
        assert bytes(await battery.read_value()) == bytes([42])


# -- a session -------------------------------------------------------------------------------------


async def test_a_session_ramps_streams_telemetry_and_stops(
    sim: SimulatedDevice, hub: Device
) -> None:
    session = await open_session(hub)
    assert (await session.send(lambda seq: p.SetTelemetryRate(100, 4, seq=seq))).ok
    session.telemetry.clear()  # what came before the ACK was sent before the rate change
    assert (await session.send(segment)).ok
    assert (await session.send(p.Start)).ok
    await wait_for(lambda: sim.firmware.output_ua == 300, "the ramp to 300 µA")
    assert (await session.send(p.Keepalive)).ok
    await wait_for(
        lambda: any(s.current_mean_ua > 250 for s in session.samples()), "telemetry at 300 µA"
    )
    assert (await session.send(p.Stop)).ok
    assert sim.firmware.output_ua == 0
    samples = session.samples()
    frames = [s.frame for s in samples]
    assert frames == list(range(frames[0], frames[0] + len(frames)))
    assert {s.segment_id for s in samples if s.state is p.DeviceState.RUNNING} == {1}
    assert all(len(p.Telemetry.from_bytes(raw).samples) == 4 for raw in session.telemetry)
    await wait_for(lambda: session.statuses[-1].state is p.DeviceState.IDLE, "status IDLE")
    assert any(s.state is p.DeviceState.RUNNING for s in session.statuses)
    log = list(sim.firmware.output_log)
    assert log[1][1] == 0  # the onset starts from a logged zero, then ramps
    assert sim.firmware.max_output_ua == 300


async def test_link_loss_turns_output_off_and_the_device_comes_back(
    sim: SimulatedDevice, hub: Device
) -> None:
    session = await open_session(hub)
    assert (await session.send(segment)).ok
    assert (await session.send(p.Start)).ok
    await wait_for(lambda: sim.firmware.output_ua > 0, "output")
    assert sim.drop_link() == 1
    await wait_for(lambda: not sim.is_connected, "the link to drop")
    assert sim.firmware.output_ua == 0
    assert sim.firmware.state is p.DeviceState.IDLE
    assert sim.firmware.queue == ()
    again = await open_session(hub, pair=False)
    async with asyncio.timeout(STEP_S):
        await again.connection.encrypt()  # bonded: re-encrypt without pairing again
    assert (await again.send(p.Hello)).ok


async def test_vanish_drops_the_link_until_reappear(sim: SimulatedDevice, hub: Device) -> None:
    await open_session(hub)
    sim.vanish()
    await wait_for(lambda: not sim.is_connected, "the link to drop")
    sim.reappear()
    session = await open_session(hub)
    assert (await session.send(p.Hello)).ok


# -- impairments ---------------------------------------------------------------------------------


async def test_stall_holds_commands_until_it_ends(sim: SimulatedDevice, hub: Device) -> None:
    session = await open_session(hub)
    stall_ms = 200
    began = sim.now_ms()
    sim.stall(stall_ms)
    assert (await session.send(p.Keepalive)).ok
    handled_at, opcode, _status = sim.firmware.command_log[-1]
    assert opcode == p.Opcode.KEEPALIVE
    assert handled_at >= began + stall_ms


async def test_garbled_notifications_fail_to_decode_then_recover(
    sim: SimulatedDevice, hub: Device
) -> None:
    session = await open_session(hub)
    session.telemetry.clear()
    sim.send_malformed(3)
    await wait_for(lambda: len(session.telemetry) >= 8, "telemetry")
    bad = 0
    for raw in session.telemetry:
        try:
            p.Telemetry.from_bytes(raw)
        except ProtocolError:
            bad += 1
    assert bad == 3
    assert sim.transmitter.counters.garbled == 3


async def test_refused_commands_are_nacked(sim: SimulatedDevice, hub: Device) -> None:
    session = await open_session(hub)
    sim.refuse_commands(1, opcodes=[p.Opcode.KEEPALIVE])
    assert (await session.send(p.Hello)).ok
    assert (await session.send(p.Keepalive)).status is p.Status.REFUSED
    assert (await session.send(p.Keepalive)).ok


async def test_latency_delays_but_keeps_order(sim: SimulatedDevice, hub: Device) -> None:
    session = await open_session(hub)
    sim.set_radio_latency(50)
    for _ in range(3):
        assert (await session.send(p.Keepalive)).ok
    sim.set_radio_latency(0)
    assert sim.transmitter.latency_s == 0


async def test_a_telemetry_setting_that_does_not_fit_the_mtu_is_refused(
    sim: SimulatedDevice, hub: Device
) -> None:
    session = await open_session(hub, mtu=100)  # 97-byte values: 4 samples (91 bytes) fit
    too_many = await session.send(lambda seq: p.SetTelemetryRate(100, 5, seq=seq))
    assert too_many.status is p.Status.OUT_OF_RANGE
    assert (await session.send(lambda seq: p.SetTelemetryRate(100, 4, seq=seq))).ok
    session.telemetry.clear()
    await wait_for(lambda: len(session.telemetry) >= 3, "telemetry")
    assert {len(p.Telemetry.from_bytes(raw).samples) for raw in session.telemetry} == {4}


async def test_without_an_mtu_exchange_telemetry_is_dropped_not_truncated(
    sim: SimulatedDevice, hub: Device
) -> None:
    session = await open_session(hub, mtu=23)
    assert (await session.send(p.Hello)).ok  # commands and responses fit the default MTU
    too_big = sim.transmitter.counters.too_big
    await wait_for(lambda: sim.transmitter.counters.too_big > too_big + 3, "dropped samples")
    assert session.telemetry == []


async def test_a_silent_gateway_loses_the_lease(radio: VirtualRadio) -> None:
    limits = dataclasses.replace(DEFAULT_LIMITS, lease_ms=100)
    async with SimulatedDevice(radio, name="mc-lease", address=SIM_ADDRESS, limits=limits) as sim:
        hub = radio.attach("hub", HUB_ADDRESS)
        await hub.power_on()
        session = await open_session(hub)
        assert p.DeviceLimits.from_bytes(await session.read(p.LIMITS_UUID)).lease_ms == 100
        assert (await session.send(segment)).ok
        assert (await session.send(p.Start)).ok
        await wait_for(lambda: sim.firmware.output_ua > 0, "output")
        await wait_for(lambda: sim.firmware.state is p.DeviceState.IDLE, "the lease to expire")
        assert sim.firmware.output_ua == 0
        await wait_for(lambda: p.FaultFlags.LEASE_EXPIRED in session.statuses[-1].faults, "status")
        async with asyncio.timeout(STEP_S):
            await session.connection.disconnect()
            await hub.power_off()
