"""The bumble bleak backend, driven only through bleak's public API.

Each test builds its own VirtualRadio and small bumble GATT peripherals (advertising every
20 ms), then uses BleakScanner / BleakClient with backend=BumbleScanner / BumbleClient.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError, BleakGATTProtocolError
from bleak_retry_connector import establish_connection
from bumble.core import UUID, AdvertisingData
from bumble.device import Advertisement, Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import Address
from bumble.transport import open_transport

from ble.bumble.adapter import ATT_MTU, BumbleAdapter, BumbleDeviceDetails
from ble.bumble.client import BumbleClient
from ble.bumble.hci_server import HciTcpServer
from ble.bumble.radio import VirtualRadio
from ble.bumble.scanner import BumbleScanner
from ble.errors import RadioError

SERVICE = "7d2a0001-6b1c-4f6e-9a0a-3c5e2f1b0001"
READ_CHAR = "7d2a0002-6b1c-4f6e-9a0a-3c5e2f1b0001"
WRITE_CHAR = "7d2a0003-6b1c-4f6e-9a0a-3c5e2f1b0001"
NOTIFY_CHAR = "7d2a0004-6b1c-4f6e-9a0a-3c5e2f1b0001"
INDICATE_CHAR = "7d2a0005-6b1c-4f6e-9a0a-3c5e2f1b0001"
SECURE_CHAR = "7d2a0006-6b1c-4f6e-9a0a-3c5e2f1b0001"
COMPANY_ID = 0xFFFF  # reserved for testing by the Bluetooth SIG
ADV_INTERVAL_MS = 20
ATT_INSUFFICIENT_ENCRYPTION = 0x0F
SCAN_S = 0.3  # 15 advertising intervals
FIND_TIMEOUT_S = 3.0  # an upper bound only: finding takes about one advertising interval


@dataclass
class Peripheral:
    """A small bumble GATT server on the virtual radio."""

    device: Device
    address: str
    name: str
    written: list[bytes] = field(default_factory=list)
    secure_written: list[bytes] = field(default_factory=list)
    notify_char: Characteristic[bytes] | None = None
    indicate_char: Characteristic[bytes] | None = None

    async def notify(self, value: bytes) -> None:
        assert self.notify_char is not None
        await self.device.notify_subscribers(self.notify_char, value)

    async def indicate(self, value: bytes) -> None:
        assert self.indicate_char is not None
        await self.device.indicate_subscribers(self.indicate_char, value)


def advertising_data(name: str, manufacturer_payload: bytes) -> bytes:
    return bytes(
        AdvertisingData(
            [
                (AdvertisingData.FLAGS, bytes([0x06])),
                (AdvertisingData.COMPLETE_LOCAL_NAME, name.encode()),
                (
                    AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                    UUID(SERVICE).to_bytes(),
                ),
                (
                    AdvertisingData.MANUFACTURER_SPECIFIC_DATA,
                    COMPANY_ID.to_bytes(2, "little") + manufacturer_payload,
                ),
            ]
        )
    )


async def start_peripheral(radio: VirtualRadio, index: int) -> Peripheral:
    address = f"C0:00:00:00:01:{index:02X}"
    name = f"mc-{index}"
    device = radio.attach(name, address)
    peripheral = Peripheral(device=device, address=address, name=name)

    def on_write(_connection: Connection, value: bytes) -> None:
        peripheral.written.append(bytes(value))

    def on_secure_write(_connection: Connection, value: bytes) -> None:
        peripheral.secure_written.append(bytes(value))

    props = Characteristic.Properties
    perms = Characteristic.Permissions
    peripheral.notify_char = Characteristic(
        NOTIFY_CHAR, props.NOTIFY | props.READ, perms.READABLE, b""
    )
    peripheral.indicate_char = Characteristic(INDICATE_CHAR, props.INDICATE, perms.READABLE, b"")
    device.add_service(
        Service(
            SERVICE,
            [
                Characteristic(READ_CHAR, props.READ, perms.READABLE, f"hello {index}".encode()),
                Characteristic(
                    WRITE_CHAR,
                    props.WRITE | props.WRITE_WITHOUT_RESPONSE,
                    perms.WRITEABLE,
                    CharacteristicValue(write=on_write),
                ),
                peripheral.notify_char,
                peripheral.indicate_char,
                Characteristic(
                    SECURE_CHAR,
                    props.WRITE,
                    perms.WRITEABLE | perms.WRITE_REQUIRES_ENCRYPTION,
                    CharacteristicValue(write=on_secure_write),
                ),
            ],
        )
    )
    device.advertising_data = advertising_data(name, bytes([index]))
    await device.power_on()
    await device.start_advertising(
        auto_restart=True,
        advertising_interval_min=ADV_INTERVAL_MS,
        advertising_interval_max=ADV_INTERVAL_MS,
    )
    return peripheral


@asynccontextmanager
async def virtual_setup(
    count: int = 1,
) -> AsyncIterator[tuple[VirtualRadio, BumbleAdapter, list[Peripheral]]]:
    radio = VirtualRadio()
    try:
        peripherals = [await start_peripheral(radio, i) for i in range(1, count + 1)]
        async with await BumbleAdapter.open("virtual", radio=radio) as adapter:
            yield radio, adapter, peripherals
        for peripheral in peripherals:
            await peripheral.device.power_off()
    finally:
        await radio.close()


async def find(adapter: BumbleAdapter, address: str) -> BLEDevice:
    device = await BleakScanner.find_device_by_address(
        address, timeout=FIND_TIMEOUT_S, backend=BumbleScanner.bound_to(adapter)
    )
    assert device is not None, f"{address} not found"
    return device


async def wait_until(condition: Callable[[], bool], timeout_s: float = FIND_TIMEOUT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


class RetryClient(BleakClient):
    """What gateway code hands bleak-retry-connector: a subclass that pins the backend."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("backend", BumbleClient)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


# -- radio -------------------------------------------------------------------------------------


async def test_radio_attach_returns_unpowered_device_and_rejects_duplicates() -> None:
    radio = VirtualRadio()
    try:
        device = radio.attach("p", "C0:00:00:00:00:01")
        assert isinstance(device, Device)
        assert not device.powered_on
        with pytest.raises(RadioError, match="already attached"):
            radio.attach("q", "c0:00:00:00:00:01")
        with pytest.raises(RadioError, match="not a Bluetooth address"):
            radio.attach("r", "nope")
    finally:
        await radio.close()


def test_radio_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        VirtualRadio()


# -- scanning ----------------------------------------------------------------------------------


async def test_scan_by_service_uuid_finds_every_peripheral_with_name_and_manufacturer_data() -> (
    None
):
    async with virtual_setup(count=3) as (_radio, adapter, peripherals):
        found = await BleakScanner.discover(
            timeout=SCAN_S,
            return_adv=True,
            backend=BumbleScanner.bound_to(adapter),
            service_uuids=[SERVICE],
        )
        assert sorted(found) == sorted(p.address for p in peripherals)
        for index, peripheral in enumerate(peripherals, start=1):
            device, adv = found[peripheral.address]
            assert device.name == peripheral.name
            assert adv.local_name == peripheral.name
            assert adv.service_uuids == [SERVICE]
            assert adv.manufacturer_data == {COMPANY_ID: bytes([index])}
            assert adv.rssi < 0
            assert isinstance(device.details, BumbleDeviceDetails)


async def test_scan_filters_by_service_uuid() -> None:
    async with virtual_setup(count=1) as (_radio, adapter, (peripheral,)):
        wanted, other = [], []
        async with (
            BleakScanner(
                lambda d, _a: wanted.append(d.address),
                service_uuids=[SERVICE],
                backend=BumbleScanner.bound_to(adapter),
            ),
            BleakScanner(
                lambda d, _a: other.append(d.address),
                service_uuids=["0000180f-0000-1000-8000-00805f9b34fb"],
                backend=BumbleScanner.bound_to(adapter),
            ),
        ):
            await wait_until(lambda: bool(wanted))
        assert wanted == [peripheral.address]
        assert other == []


async def test_scan_deduplicates_unchanged_reports_and_reports_changes() -> None:
    async with virtual_setup(count=1) as (_radio, adapter, (peripheral,)):
        reports: list[tuple[str, bytes]] = []
        # The constructor takes **kwargs, so bumble_adapter= type-checks here.
        scanner = BleakScanner(
            lambda device, adv: reports.append((device.address, adv.manufacturer_data[COMPANY_ID])),
            backend=BumbleScanner,
            bumble_adapter=adapter,
        )
        async with scanner:
            await wait_until(lambda: bool(reports))
            await asyncio.sleep(SCAN_S)
            # 15 more advertisements, each echoed as a scan response: still one report.
            assert reports == [(peripheral.address, b"\x01")]
            # A change in the advertising data is reported at once.
            advertising_set = peripheral.device.legacy_advertising_set
            assert advertising_set is not None
            await advertising_set.set_advertising_data(advertising_data(peripheral.name, b"\x02"))
            await wait_until(lambda: len(reports) > 1)
            assert reports == [(peripheral.address, b"\x01"), (peripheral.address, b"\x02")]
        # start() clears what the previous run saw.
        await scanner.start()
        assert scanner.discovered_devices == []
        await scanner.stop()


# -- connection and GATT -----------------------------------------------------------------------


async def test_connect_discover_read_write_notify_indicate_mtu() -> None:
    async with virtual_setup() as (_radio, adapter, (peripheral,)):
        device = await find(adapter, peripheral.address)
        started = time.perf_counter()
        async with BleakClient(device, backend=BumbleClient) as client:
            connect_ms = (time.perf_counter() - started) * 1000
            assert connect_ms < 500, f"connect took {connect_ms:.0f} ms"
            assert client.is_connected
            assert client.mtu_size == ATT_MTU
            assert client.name == peripheral.name
            service = client.services.get_service(SERVICE)
            assert service is not None
            assert {c.uuid for c in service.characteristics} == {
                READ_CHAR,
                WRITE_CHAR,
                NOTIFY_CHAR,
                INDICATE_CHAR,
                SECURE_CHAR,
            }

            assert await client.read_gatt_char(READ_CHAR) == b"hello 1"
            await client.write_gatt_char(WRITE_CHAR, b"\x01\x02", response=True)
            await client.write_gatt_char(WRITE_CHAR, b"\x03", response=False)
            big = bytes(range(200))  # fits one write at MTU 247, not at 23
            await client.write_gatt_char(WRITE_CHAR, big, response=True)
            await asyncio.sleep(0.01)  # the write without response has no reply to wait for
            assert peripheral.written == [b"\x01\x02", b"\x03", big]

            received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
            await client.start_notify(
                NOTIFY_CHAR, lambda char, data: received.put_nowait((char.uuid, bytes(data)))
            )
            await client.start_notify(
                INDICATE_CHAR, lambda char, data: received.put_nowait((char.uuid, bytes(data)))
            )
            await peripheral.notify(b"n1")
            await peripheral.indicate(b"i1")
            got = {await asyncio.wait_for(received.get(), 1) for _ in range(2)}
            assert got == {(NOTIFY_CHAR, b"n1"), (INDICATE_CHAR, b"i1")}

            await client.stop_notify(NOTIFY_CHAR)
            await peripheral.notify(b"n2")
            await peripheral.indicate(b"i2")
            assert await asyncio.wait_for(received.get(), 1) == (INDICATE_CHAR, b"i2")
            assert received.empty()

            cccd = client.services.get_characteristic(INDICATE_CHAR)
            assert cccd is not None
            assert await client.read_gatt_descriptor(cccd.descriptors[0].handle) == b"\x02\x00"
        assert not client.is_connected


async def test_a_raising_notification_callback_does_not_break_the_link() -> None:
    async with virtual_setup() as (_radio, adapter, (peripheral,)):
        device = await find(adapter, peripheral.address)
        async with BleakClient(device, backend=BumbleClient) as client:

            def explode(_char: object, _data: bytearray) -> None:
                raise ValueError("callback bug")

            await client.start_notify(NOTIFY_CHAR, explode)
            await peripheral.notify(b"boom")
            await asyncio.sleep(0.01)
            assert await client.read_gatt_char(READ_CHAR) == b"hello 1"


async def test_connect_by_address_string() -> None:
    async with virtual_setup() as (_radio, adapter, (peripheral,)):
        for backend_kwargs in (
            {"backend": BumbleClient.bound_to(adapter)},
            {"backend": BumbleClient, "bumble_adapter": adapter},
        ):
            async with BleakClient(peripheral.address, timeout=2, **backend_kwargs) as client:
                assert await client.read_gatt_char(READ_CHAR) == b"hello 1"


async def test_adapter_keyword_works_but_bleak_deprecates_it() -> None:
    async with virtual_setup() as (_radio, adapter, (peripheral,)):
        with pytest.warns(DeprecationWarning, match="'adapter' keyword argument is deprecated"):
            scanner = BleakScanner(backend=BumbleScanner, adapter=adapter)
        async with scanner:
            await asyncio.sleep(0.05)
        assert [d.address for d in scanner.discovered_devices] == [peripheral.address]
        with pytest.warns(DeprecationWarning, match="'adapter' keyword argument is deprecated"):
            client = BleakClient(peripheral.address, backend=BumbleClient, adapter=adapter)
        async with client:
            assert client.is_connected


async def test_client_without_adapter_is_refused() -> None:
    with pytest.raises(BleakError, match="needs a BumbleAdapter"):
        BleakClient("C0:00:00:00:01:01", backend=BumbleClient)


# -- security ----------------------------------------------------------------------------------


async def test_encrypted_write_fails_before_pairing_then_succeeds_and_bond_reencrypts() -> None:
    async with virtual_setup() as (_radio, adapter, (peripheral,)):
        device = await find(adapter, peripheral.address)
        async with BleakClient(device, backend=BumbleClient) as client:
            with pytest.raises(BleakGATTProtocolError) as refused:
                await client.write_gatt_char(SECURE_CHAR, b"s1", response=True)
            assert refused.value.code == ATT_INSUFFICIENT_ENCRYPTION
            await client.pair()  # Just Works
            await client.write_gatt_char(SECURE_CHAR, b"s2", response=True)
        # Reconnect: the bond is in the adapter's keystore, so the link re-encrypts.
        async with BleakClient(device, backend=BumbleClient) as client:
            await client.write_gatt_char(SECURE_CHAR, b"s3", response=True)
        assert peripheral.secure_written == [b"s2", b"s3"]


async def test_connect_with_pair_true() -> None:
    async with virtual_setup() as (_radio, adapter, (peripheral,)):
        device = await find(adapter, peripheral.address)
        async with BleakClient(device, backend=BumbleClient, pair=True) as client:
            await client.write_gatt_char(SECURE_CHAR, b"p", response=True)
            await client.unpair()
            assert not client.is_connected
        async with BleakClient(device, backend=BumbleClient) as client:
            with pytest.raises(BleakGATTProtocolError):
                await client.write_gatt_char(SECURE_CHAR, b"q", response=True)


# -- link loss ---------------------------------------------------------------------------------


async def test_drop_links_calls_disconnected_callback() -> None:
    async with virtual_setup() as (radio, adapter, (peripheral,)):
        device = await find(adapter, peripheral.address)
        lost = asyncio.Event()
        client = BleakClient(device, lambda _c: lost.set(), backend=BumbleClient)
        await client.connect()
        assert radio.drop_links(peripheral.address) == 1
        await asyncio.wait_for(lost.wait(), 1)
        assert not client.is_connected
        with pytest.raises(BleakError, match="not connected"):
            await client.read_gatt_char(READ_CHAR)
        # The peripheral restarts advertising; a reconnect works.
        await client.connect()
        assert await client.read_gatt_char(READ_CHAR) == b"hello 1"
        await client.disconnect()


async def test_pending_gatt_request_cut_by_link_loss_is_a_bleak_error() -> None:
    async with virtual_setup() as (radio, adapter, (peripheral,)):
        device = await find(adapter, peripheral.address)
        async with BleakClient(device, backend=BumbleClient) as client:
            # The peer stops answering (its controller drops ATT) ...
            peripheral.device.host.on_packet = lambda _packet: None  # type: ignore[method-assign,assignment]
            read = asyncio.create_task(client.read_gatt_char(READ_CHAR))
            await asyncio.sleep(0.01)
            assert not read.done()
            # ... then the link is lost while the read is pending.
            radio.drop_links(peripheral.address)
            with pytest.raises(BleakError, match="disconnected"):
                await read


async def test_vanished_peripheral_times_out_then_reconnects_after_reappear() -> None:
    async with virtual_setup() as (radio, adapter, (peripheral,)):
        device = await find(adapter, peripheral.address)
        radio.vanish(peripheral.address)
        client = BleakClient(device, backend=BumbleClient, timeout=0.2)
        started = time.perf_counter()
        with pytest.raises(asyncio.TimeoutError):
            await client.connect()
        assert time.perf_counter() - started < 1.0
        assert not client.is_connected
        radio.reappear(peripheral.address)
        # Without a working LE_Create_Connection_Cancel this fails with COMMAND_DISALLOWED.
        await client.connect()
        assert await client.read_gatt_char(READ_CHAR) == b"hello 1"
        await client.disconnect()


async def test_bleak_retry_connector_establish_connection() -> None:
    async with virtual_setup() as (_radio, adapter, (peripheral,)):
        device = await find(adapter, peripheral.address)
        client = await establish_connection(RetryClient, device, peripheral.name, max_attempts=2)
        try:
            assert client.is_connected
            assert await client.read_gatt_char(READ_CHAR) == b"hello 1"
        finally:
            await client.disconnect()


async def test_connects_to_several_peripherals_concurrently() -> None:
    async with virtual_setup(count=3) as (_radio, adapter, peripherals):
        devices = [await find(adapter, p.address) for p in peripherals]
        clients = [BleakClient(d, backend=BumbleClient) for d in devices]
        await asyncio.gather(*(c.connect() for c in clients))
        values = await asyncio.gather(*(c.read_gatt_char(READ_CHAR) for c in clients))
        assert values == [b"hello 1", b"hello 2", b"hello 3"]
        await asyncio.gather(*(c.disconnect() for c in clients))


# -- HCI over TCP ------------------------------------------------------------------------------


async def test_hci_over_tcp_host_sees_and_connects_and_its_death_frees_links() -> None:
    radio = VirtualRadio()
    server = HciTcpServer(radio)
    try:
        peripheral = await start_peripheral(radio, 1)
        peer_lost = asyncio.Event()
        peripheral.device.on(
            "connection", lambda c: c.on("disconnection", lambda _r: peer_lost.set())
        )
        await server.start()
        assert server.port > 0
        adapter = await BumbleAdapter.open(f"tcp-client:127.0.0.1:{server.port}")
        try:
            device = await find(adapter, peripheral.address)
            lost = asyncio.Event()
            client = BleakClient(device, lambda _c: lost.set(), backend=BumbleClient)
            await client.connect()
            assert client.mtu_size == ATT_MTU
            assert await client.read_gatt_char(READ_CHAR) == b"hello 1"
            assert len(server.sessions) == 1

            # Kill the TCP client abruptly: the peripheral must see its link go down.
            next(iter(server.sessions)).close()
            await asyncio.wait_for(peer_lost.wait(), 1)
            await asyncio.wait_for(lost.wait(), 1)
            assert not client.is_connected
            assert not peripheral.device.connections
            # The hub side notices too, and says what to do instead of hanging.
            await wait_until(lambda: not adapter.is_open)
            with pytest.raises(BleakError, match="was lost"):
                await BleakScanner.discover(timeout=0.1, backend=BumbleScanner.bound_to(adapter))
        finally:
            await adapter.close()

        # A fresh client connects again straight away.
        async with await BumbleAdapter.open(f"tcp-client:127.0.0.1:{server.port}") as again:
            device = await find(again, peripheral.address)
            async with BleakClient(device, backend=BumbleClient) as client:
                assert await client.read_gatt_char(READ_CHAR) == b"hello 1"
        await peripheral.device.power_off()
    finally:
        await server.close()
        await radio.close()


async def test_raw_bumble_host_over_tcp_sees_peripherals_and_a_killed_client_frees_links() -> None:
    radio = VirtualRadio()
    async with HciTcpServer(radio) as server:
        try:
            peripheral = await start_peripheral(radio, 7)
            reasons: asyncio.Queue[int] = asyncio.Queue()
            peripheral.device.on("connection", lambda c: c.on("disconnection", reasons.put_nowait))
            async with await open_transport(f"tcp-client:127.0.0.1:{server.port}") as transport:
                tool = Device.with_hci(
                    "tool", Address("C0:00:00:00:0F:0F"), transport.source, transport.sink
                )
                await tool.power_on()
                seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

                def on_advertisement(advertisement: Advertisement) -> None:
                    if not seen.done():
                        seen.set_result(str(advertisement.address.to_string(False)))

                tool.on("advertisement", on_advertisement)
                await tool.start_scanning()
                assert await asyncio.wait_for(seen, FIND_TIMEOUT_S) == peripheral.address
                await tool.stop_scanning()
                await tool.connect(peripheral.address, timeout=FIND_TIMEOUT_S)
                assert len(peripheral.device.connections) == 1

                # "Kill" the client: its socket goes away with no HCI Disconnect sent.
                transport.sink.transport.abort()
                assert await asyncio.wait_for(reasons.get(), 1) == 0x08  # supervision timeout
                assert not peripheral.device.connections
                await wait_until(lambda: not server.sessions)
            await peripheral.device.power_off()
        finally:
            await radio.close()


async def test_adapter_open_errors_are_radio_errors() -> None:
    with pytest.raises(RadioError, match="needs radio"):
        await BumbleAdapter.open("virtual")
    with pytest.raises(RadioError, match="cannot open"):
        await BumbleAdapter.open("tcp-client:127.0.0.1:1")
