"""Losing the radio transport, and the logs of links that end: in-process, over real HCI-over-TCP.

The hub's adapter opens ``tcp-client:`` to an ``HciTcpServer`` in this process (the server of
`mcgw sim`), so the bumble host, the TCP transport and the controller are all real. Faults are
made at the server: it closes (a killed sim), stops passing the host's packets on (a hung
controller), or holds the controller's answers back and then sends them in one burst (a sim
stopped and resumed). Devices are the simulated device, driven through bleak via ``DeviceLink``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bumble import hci

from ble import protocol as p
from ble.bumble.adapter import BumbleAdapter
from ble.bumble.client import BumbleClient
from ble.bumble.hci_server import HciTcpServer
from ble.bumble.radio import VirtualRadio
from ble.bumble.scanner import BumbleScanner
from ble.errors import LinkError, RadioError
from ble.link import DeviceLink
from ble.sim.peripheral import SimulatedDevice
from ble.supervisor import (
    REOPEN_BACKOFF_START_S,
    REOPEN_STABLE_S,
    RadioState,
    RadioStatus,
    RadioSupervisor,
)

HANG_S = 10.0
"""Upper bound for any one wait: a hang guard, never a measurement."""
ADDRESS = "C0:4D:43:BB:00:01"


@dataclass
class Bench:
    radio: VirtualRadio
    sim: SimulatedDevice
    server: HciTcpServer
    adapters: list[BumbleAdapter] = field(default_factory=list)

    @property
    def moniker(self) -> str:
        return f"tcp-client:127.0.0.1:{self.server.port}"

    async def open(self) -> BumbleAdapter:
        adapter = await BumbleAdapter.open(self.moniker)
        self.adapters.append(adapter)
        return adapter

    async def find(self, adapter: BumbleAdapter) -> BLEDevice:
        device = await BleakScanner.find_device_by_address(
            ADDRESS, timeout=HANG_S, backend=BumbleScanner.bound_to(adapter)
        )
        assert device is not None
        return device


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    radio = VirtualRadio()
    sim = SimulatedDevice(radio, name="MC-RS", address=ADDRESS, seed=3)
    await sim.start()
    server = HciTcpServer(radio)
    await server.start()
    bench = Bench(radio, sim, server)
    try:
        yield bench
    finally:
        for adapter in bench.adapters:
            await adapter.close()
        await bench.server.close()
        await sim.stop()
        await radio.close()


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(HANG_S):
        while not condition():
            await asyncio.sleep(0.005)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    gc.collect()  # "Future exception was never retrieved" is logged when a future is collected
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info
    ]


def deafen(sim: SimulatedDevice) -> None:
    """The device's host stops hearing anything (its firmware hangs): requests go unanswered."""
    sim.device.host.on_packet = lambda _packet: None  # type: ignore[method-assign]


def undeafen(sim: SimulatedDevice) -> None:
    del sim.device.host.on_packet


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records]


# -- the supervisor ------------------------------------------------------------------------------


async def test_a_lost_transport_is_reopened_as_the_same_hub_and_its_device_reconnects(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    downs: list[RadioState] = []
    ups: list[BumbleAdapter] = []

    async def opener() -> BumbleAdapter:
        previous = bench.adapters[-1] if bench.adapters else None
        adapter = await BumbleAdapter.open(
            bench.moniker,
            address=previous.address if previous else None,
            keystore=previous.keystore if previous else None,
        )
        bench.adapters.append(adapter)
        return adapter

    supervisor: RadioSupervisor[BumbleAdapter] = RadioSupervisor(
        bench.moniker,
        opener,
        on_down=lambda: downs.append(supervisor.state),
        on_up=ups.append,
        label="radio1",
    )
    first = await supervisor.open()
    runner = asyncio.create_task(supervisor.run())
    try:
        device = await bench.find(first)
        lost = asyncio.Event()
        link = DeviceLink(device, client_backend=BumbleClient, on_disconnect=lost.set)
        await link.connect()
        port = bench.server.port

        await bench.server.close()  # the sim process is gone: its port refuses connections
        await asyncio.wait_for(lost.wait(), HANG_S)
        assert [state.status for state in downs] == [RadioStatus.DOWN]
        assert downs[0].down_since is not None
        assert not first.is_open
        await wait_until(lambda: supervisor.state.failed_attempts >= 2)
        assert supervisor.state.status in (RadioStatus.DOWN, RadioStatus.REOPENING)
        assert (supervisor.state.last_error or "").startswith("cannot open bumble transport")
        assert "attempt(s) to reopen it failed" in supervisor.state.detail

        bench.server = HciTcpServer(bench.radio, port=port)  # a new sim on the same port
        await bench.server.start()
        await wait_until(lambda: supervisor.state.up)
        assert (supervisor.state.reopens, supervisor.state.down_since) == (1, None)
        assert len(ups) == 1
        assert ups[0] is supervisor.adapter is not first
        assert ups[0].address == first.address  # the same hub to the devices
        assert ups[0].keystore is first.keystore  # with the same bonds

        # The BLEDevice still names the dead adapter; the backend bound to the new one takes over.
        await link.close()
        again = DeviceLink(device, client_backend=BumbleClient.bound_to(ups[0]))
        await again.connect()
        assert (await again.send(p.Keepalive())).ok
        await again.close()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await supervisor.close()
    supervisor_lines = [line for line in lines(caplog) if "ble.supervisor" in line]
    assert [line.split()[0] for line in supervisor_lines] == ["INFO", "WARNING", "INFO"]
    # Each line names the radio and its transport (two connections to one sim read apart).
    named = f"ble.supervisor: radio1 ({bench.moniker}) "
    assert all(named in line for line in supervisor_lines), supervisor_lines
    assert errors(caplog) == []


async def test_a_controller_that_stops_answering_is_declared_lost(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    adapter = await bench.open()
    reasons: list[str] = []
    adapter.on_lost(reasons.append)
    (session,) = bench.server.sessions
    session.to_controller = lambda _packet: None  # type: ignore[method-assign]
    adapter.device.command_timeout = 0.2  # CONTROLLER_STALL_S, shortened for the test

    with pytest.raises(RadioError, match="hung"):
        await adapter.add_advertisement_listener(lambda _adv: None)
    assert len(reasons) == 1
    assert "no answer to" in reasons[0]
    assert adapter.failure == reasons[0]
    with pytest.raises(RadioError, match="was lost"):
        await adapter.add_advertisement_listener(lambda _adv: None)
    assert errors(caplog) == []


async def test_answers_held_back_by_a_stalled_controller_reach_their_own_commands(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    adapter = await bench.open()
    (session,) = bench.server.sessions
    held: list[bytes] = []
    forward = session.on_packet
    session.on_packet = held.append  # type: ignore[method-assign]

    # The caller gives up; the command itself stays pending, and so does the one behind it.
    with pytest.raises(TimeoutError):
        await adapter.bounded(
            adapter.device.host.send_command(hci.HCI_Read_BD_ADDR_Command()), 0.1, "a read"
        )
    second = asyncio.create_task(
        adapter.bounded(
            adapter.device.host.send_command(hci.HCI_Read_Local_Version_Information_Command()),
            HANG_S,
            "a second read",
        )
    )
    await asyncio.sleep(0.05)
    assert not second.done()

    # The controller wakes up: the held answers arrive in one burst, each for its own command.
    session.on_packet = forward  # type: ignore[method-assign]
    for packet in held:
        forward(packet)
    answer = await second
    assert answer.command_opcode == hci.HCI_READ_LOCAL_VERSION_INFORMATION_COMMAND
    assert adapter.is_open
    assert await bench.find(adapter)  # and the radio works on
    assert errors(caplog) == []


# -- links that end: one line at most, nothing left unretrieved ----------------------------------


async def test_a_normal_disconnect_logs_nothing(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = await bench.open()
    link = DeviceLink(await bench.find(adapter), client_backend=BumbleClient)
    await link.connect()
    caplog.set_level(logging.INFO)
    await link.close()
    await wait_until(lambda: not bench.sim.is_connected)
    assert lines(caplog) == []
    assert errors(caplog) == []


async def test_a_write_cut_by_a_dropped_link_fails_once_and_logs_nothing(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = await bench.open()
    lost = asyncio.Event()
    link = DeviceLink(
        await bench.find(adapter), client_backend=BumbleClient, on_disconnect=lost.set
    )
    await link.connect()
    caplog.set_level(logging.INFO)
    deafen(bench.sim)
    write = asyncio.create_task(link.send(p.Keepalive(), timeout_s=HANG_S))
    await asyncio.sleep(0.05)
    assert not write.done()  # the write is on air, its answer will never come

    bench.radio.drop_links(ADDRESS)
    with pytest.raises(LinkError):
        await write
    await asyncio.wait_for(lost.wait(), HANG_S)
    await link.close()
    undeafen(bench.sim)
    assert lines(caplog) == []
    assert errors(caplog) == []


async def test_an_unanswered_write_is_abandoned_with_its_link_in_at_most_one_line(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = await bench.open()
    lost = asyncio.Event()
    link = DeviceLink(
        await bench.find(adapter), client_backend=BumbleClient, on_disconnect=lost.set
    )
    await link.connect()
    caplog.set_level(logging.INFO)
    deafen(bench.sim)

    with pytest.raises(LinkError, match="did not acknowledge"):
        await link.send(p.Keepalive(), timeout_s=0.2)
    # ATT cannot abandon a request: the backend drops the bearer, and the link reports it.
    await asyncio.wait_for(lost.wait(), HANG_S)
    undeafen(bench.sim)
    assert len(lines(caplog)) <= 1
    assert errors(caplog) == []


class FlappingAdapter:
    """A transport that is lost whenever the test says (the backoff policy, nothing of BLE)."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[str], None]] = []

    def on_lost(self, listener: Callable[[str], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: None

    async def close(self) -> None:
        pass

    def lose(self) -> None:
        for listener in self.listeners:
            listener("transport closed")


async def test_a_flapping_transport_waits_longer_each_time_until_it_stays_up() -> None:
    now = [1000.0]
    adapters: list[FlappingAdapter] = []
    waits: list[float] = []

    async def opener() -> FlappingAdapter:
        adapters.append(FlappingAdapter())
        return adapters[-1]

    async def sleep(seconds: float) -> None:  # the waits asked for, not time passing
        waits.append(seconds)

    no_jitter = random.Random()
    no_jitter.uniform = lambda _a, _b: 0.0  # type: ignore[method-assign]
    supervisor: RadioSupervisor[FlappingAdapter] = RadioSupervisor(
        "flapping",
        opener,
        on_down=lambda: None,
        on_up=lambda _a: None,
        clock=lambda: now[0],
        sleep=sleep,
        rng=no_jitter,
    )
    await supervisor.open()
    runner = asyncio.create_task(supervisor.run())
    try:
        for flap in range(4):
            if flap == 3:
                now[0] += REOPEN_STABLE_S  # it stayed up: the next loss starts afresh
            adapters[-1].lose()
            await wait_until(lambda want=flap + 2: len(adapters) == want)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await supervisor.close()
    start = REOPEN_BACKOFF_START_S
    assert waits == [start, 2 * start, 4 * start, start]
    assert supervisor.state.reopens == 4


async def test_a_radio_that_could_not_open_at_start_is_opened_by_run_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    failures = [RadioError("cannot open bumble transport 'tcp-client:x'")] * 2
    waits: list[float] = []
    ups: list[FlappingAdapter] = []

    async def opener() -> FlappingAdapter:
        if failures:
            raise failures.pop()
        return FlappingAdapter()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    no_jitter = random.Random()
    no_jitter.uniform = lambda _a, _b: 0.0  # type: ignore[method-assign]
    supervisor: RadioSupervisor[FlappingAdapter] = RadioSupervisor(
        "tcp-client:x",
        opener,
        on_down=lambda: None,
        on_up=ups.append,
        label="radio1",
        sleep=sleep,
        rng=no_jitter,
    )
    with pytest.raises(RadioError):
        await supervisor.open()
    supervisor.start_down("cannot open bumble transport 'tcp-client:x'")
    assert supervisor.state.status is RadioStatus.DOWN
    assert supervisor.state.down_since is not None
    runner = asyncio.create_task(supervisor.run())
    try:
        await wait_until(lambda: supervisor.state.up)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await supervisor.close()
    assert waits == [REOPEN_BACKOFF_START_S, 2 * REOPEN_BACKOFF_START_S]
    assert len(ups) == 1
    assert (supervisor.state.reopens, supervisor.state.failed_attempts) == (0, 0)
    assert supervisor.state.last_error == "cannot open bumble transport 'tcp-client:x'"
    supervisor_lines = [line for line in lines(caplog) if "ble.supervisor" in line]
    assert [line.split()[0] for line in supervisor_lines] == ["WARNING", "INFO"]
    assert all("radio1 (tcp-client:x) " in line for line in supervisor_lines)
