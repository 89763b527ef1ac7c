"""Several radios in one gateway, against a real `mcgw sim` process.

A gateway ``Runtime`` in this process opens two HCI-over-TCP connections to one `mcgw sim`
(``--ble hci:tcp-client:P,hci:tcp-client:P``): two radios on one virtual air that hear the
same devices. The sim's control endpoint sets what each radio hears (``set_signal``), makes a
radio deaf or drops it (``/radios``), and reports each radio's links, which is the truth the
gateway's slot counts are checked against. The tests check what the issue asks: devices are
placed by signal and by free slots; a dropped radio's devices move to the other radio and a
session on one of them resumes by the lost-link rules (S2: the output ramps up from zero); a
slot is never leaked, whatever state a link is killed in; a radio that cannot be opened at
start (its port not listening yet) leaves the hub running on the others and takes devices once
a relay to the sim opens there.

Waits are for conditions, bounded by a hang guard; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ble.errors import RadioError
from ble.sim import control
from gateway.config import BleSettings, SafetySettings, Settings
from gateway.errors import BluetoothUnavailable
from gateway.programs import Program, ProgramStep
from gateway.runtime import Runtime
from gateway.states import SessionState
from tests.e2e.conftest import wait_until
from tests.e2e.served import Sim, SimFactory, refusing_port

HANG_S = 30.0
"""Upper bound for any one wait: a hang guard, never a measurement."""
NEAR, FAR = -40, -85
AMPLITUDE_UA = 200
PROGRAM = Program(
    slug="multi-radio",
    name="Multi radio",
    steps=(
        ProgramStep.model_validate(
            {"zone": "forehead", "amplitude_ua": AMPLITUDE_UA, "duration_s": 300}
        ),
    ),
)


@pytest.fixture
async def sims(tmp_path: Path) -> AsyncIterator[SimFactory]:
    factory = SimFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
async def hubs() -> AsyncIterator[Callable[..., Runtime]]:
    runtimes: list[Runtime] = []

    def make(
        sim: Sim | None,
        *,
        safety: SafetySettings | None = None,
        mode: str | None = None,
        **ble: Any,
    ) -> Runtime:
        radio = f"hci:tcp-client:127.0.0.1:{sim.hci_port if sim is not None else 0}"
        settings = Settings(
            ble=BleSettings(
                mode=mode or f"{radio},{radio}",
                auto_connect=False,
                reconnect_max_backoff_s=0.5,
                **ble,
            ),
            safety=safety or SafetySettings(),
            mdns=False,
        )
        runtime = Runtime(settings, storage=False)
        runtimes.append(runtime)
        return runtime

    try:
        yield make
    finally:
        for runtime in runtimes:
            if runtime.started:
                await runtime.stop()


class Relay:
    """A TCP port that refuses connections until ``open()``, then forwards every connection
    to the sim's HCI port: a radio whose far end is not listening at start and comes up later."""

    def __init__(self) -> None:
        self._held = contextlib.ExitStack()
        self._sock = self._held.enter_context(refusing_port())
        self.port = int(self._sock.getsockname()[1])
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def open(self, target_port: int) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            far_reader, far_writer = await asyncio.open_connection("127.0.0.1", target_port)
            self._writers += [writer, far_writer]
            await asyncio.gather(
                pipe(reader, far_writer), pipe(far_reader, writer), return_exceptions=True
            )

        self._server = await asyncio.start_server(handle, sock=self._sock)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()
        self._held.close()


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    """Set up before ``hubs`` (list it first), so it closes after the hubs stopped."""
    relay = Relay()
    try:
        yield relay
    finally:
        await relay.close()


def radio_addresses(runtime: Runtime) -> list[str]:
    addresses = [radio.address for radio in runtime.bluetooth_report().radios]
    assert all(addresses), addresses
    return [str(address) for address in addresses]


def placement(runtime: Runtime) -> dict[str, str | None]:
    return {device.address: device.radio for device in runtime.bluetooth_report().devices}


def all_bonded(runtime: Runtime) -> bool:
    return {managed.state for managed in runtime.devices.all()} == {"bonded"}


async def set_signal(sim: Sim, device: str, radio: str, rssi: int) -> None:
    await control.request(
        sim.control_port, "POST", f"/devices/{device}/set_signal", {"radio": radio, "rssi": rssi}
    )


async def sim_radios(sim: Sim) -> dict[str, dict[str, Any]]:
    reply = await control.request(sim.control_port, "GET", "/radios")
    return {entry["address"]: entry for entry in reply["radios"]}


async def adopt(runtime: Runtime, sim: Sim) -> None:
    """Scan on every radio and look after the sim's devices (what auto-connect does)."""
    wanted = set(sim.addresses) - set(runtime.devices.addresses())
    async with asyncio.timeout(HANG_S):
        while wanted - {d.address.upper() for d in await runtime.devices.scan(timeout_s=0.3)}:
            pass
    for address in wanted:
        runtime.devices.manage(runtime.devices.seen(address))


async def check_slots(runtime: Runtime, sim: Sim) -> None:
    """The slot counts are the truth: each radio's count equals the devices holding it, and
    for a radio that is up, the links the sim sees on it equal the bonded devices on it."""
    report = runtime.bluetooth_report()
    assert {r.name: r.slots_used for r in report.radios} == runtime.devices.slots_held()
    seen = await sim_radios(sim)
    for radio in report.radios:
        on_it = [d for d in report.devices if d.radio == radio.name]
        assert radio.slots_used == len(on_it), (radio, on_it)
        if radio.state == "up":
            bonded = [d for d in on_it if d.state == "bonded"]
            assert seen[str(radio.address)]["connections"] == len(bonded), (radio, seen)


async def test_devices_are_placed_by_signal_and_by_free_slots(
    sims: SimFactory, hubs: Callable[..., Runtime]
) -> None:
    sim = await sims.start(devices=3)
    runtime = hubs(sim, radio_slots="1,7")
    await runtime.start()
    a, b = radio_addresses(runtime)
    assert set(await sim_radios(sim)) == {a, b}  # the gateway names its radios as the sim does
    first, second, third = sim.addresses
    # first and second hear radio0 best; third hears radio1 best. radio0 has one slot.
    for device, near in ((first, a), (second, a), (third, b)):
        await set_signal(sim, device, near, NEAR)
        await set_signal(sim, device, b if near == a else a, FAR)
    await adopt(runtime, sim)
    await wait_until(lambda: all_bonded(runtime), "every device bonded")

    placed = placement(runtime)
    assert placed[third] == "radio1"
    # radio0 holds one link: one of first/second; the other overflowed to radio1.
    assert sorted([placed[first], placed[second]]) == ["radio0", "radio1"]
    report = {r.name: r for r in runtime.bluetooth_report().radios}
    assert (report["radio0"].slots_used, report["radio0"].slots_free) == (1, 0)
    assert report["radio1"].slots_used == 2
    assert report["radio0"].adverts_per_s > 0
    signals = {d.address: d.signal_dbm for d in runtime.bluetooth_report().devices}
    assert signals[third] == NEAR
    await check_slots(runtime, sim)
    state = runtime.radio_state
    assert state is not None
    assert state.up
    assert state.detail.startswith("radio0: tcp-client:")


async def test_a_dropped_radio_moves_its_devices_and_the_session_resumes_with_a_ramp(
    sims: SimFactory, hubs: Callable[..., Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim = await sims.start(devices=2)
    runtime = hubs(sim, safety=SafetySettings(soft_start_ms=3000, link_resume_window_s=60))
    await runtime.start()
    a, b = radio_addresses(runtime)
    first, second = sim.addresses
    await set_signal(sim, first, a, NEAR)
    await set_signal(sim, first, b, FAR)
    await set_signal(sim, second, a, FAR)
    await set_signal(sim, second, b, NEAR)
    await adopt(runtime, sim)
    await wait_until(lambda: all_bonded(runtime), "every device bonded")
    assert placement(runtime) == {first: "radio0", second: "radio1"}

    session = await runtime.sessions.start(
        owner="u1", address=first, program=PROGRAM, level=5, consented=True
    )
    await wait_until(lambda: session.state is SessionState.RUNNING, "the session running")

    await control.request(sim.control_port, "POST", f"/radios/{a}/drop", {})
    await wait_until(lambda: placement(runtime)[first] == "radio1", "the device on radio1")
    await wait_until(lambda: all_bonded(runtime), "every device bonded again")
    await wait_until(lambda: session.state is SessionState.RUNNING, "the session resumed")
    assert session.reason == "link restored; resumed"
    assert placement(runtime) == {first: "radio1", second: "radio1"}

    # S2: the output ramps up from zero on the new link, never a step.
    samples: list[int] = []
    async with asyncio.timeout(HANG_S):
        while not samples or samples[-1] < AMPLITUDE_UA:
            snapshot = await control.request(sim.control_port, "GET", f"/devices/{first}")
            samples.append(int(snapshot["output_ua"]))
            await asyncio.sleep(0.01)
    assert len({ua for ua in samples if 0 < ua < AMPLITUDE_UA}) >= 3, f"no ramp: {samples}"

    # radio0 comes back by itself (its supervisor reopens it) under the same address.
    await wait_until(lambda: runtime.bluetooth_report().radios[0].state == "up", "radio0 reopened")
    radio0 = runtime.bluetooth_report().radios[0]
    assert (radio0.address, radio0.reopens) == (a, 1)
    assert radio0.last_error is not None
    await wait_until(lambda: a in sim_radio_addresses(sim), "the sim sees radio0 again")
    await check_slots(runtime, sim)
    moved = {d.address: d for d in runtime.bluetooth_report().devices}[first]
    assert moved.reconnects == 1
    assert moved.last_disconnect_reason is not None


def sim_radio_addresses(sim: Sim) -> set[str]:
    """The sim's radio addresses, read synchronously (for ``wait_until``)."""
    import json
    import urllib.request

    url = f"http://127.0.0.1:{sim.control_port}/radios"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as reply:
        return {entry["address"] for entry in json.load(reply)["radios"]}


async def test_no_slot_leaks_whatever_state_a_link_is_killed_in(
    sims: SimFactory, hubs: Callable[..., Runtime]
) -> None:
    sim = await sims.start(devices=3)
    runtime = hubs(sim, safety=SafetySettings(link_resume_window_s=60))
    await runtime.start()
    a, b = radio_addresses(runtime)
    first, second, third = sim.addresses
    for device in sim.addresses:
        await set_signal(sim, device, a, NEAR)
        await set_signal(sim, device, b, FAR)
    await adopt(runtime, sim)
    await wait_until(lambda: all_bonded(runtime), "every device bonded")
    await check_slots(runtime, sim)

    def act(address: str, action: str) -> Any:
        return control.request(sim.control_port, "POST", f"/devices/{address}/{action}", {})

    # Connected: the link is dropped; it reconnects.
    await act(first, "drop_link")
    await wait_until(lambda: runtime.devices.get(first).reconnects == 1, "first lost")
    await wait_until(lambda: all_bonded(runtime), "every device bonded again")
    await check_slots(runtime, sim)

    # During a session: the link is dropped; the session resumes.
    session = await runtime.sessions.start(
        owner="u1", address=second, program=PROGRAM, level=5, consented=True
    )
    await wait_until(lambda: session.state is SessionState.RUNNING, "the session running")
    await act(second, "drop_link")
    await wait_until(lambda: runtime.devices.get(second).reconnects == 1, "second lost")
    await wait_until(lambda: session.state is SessionState.RUNNING, "the session resumed")
    await wait_until(lambda: all_bonded(runtime), "every device bonded again")
    await check_slots(runtime, sim)
    await runtime.sessions.stop(session.id, actor="u1", is_admin=True, reason="test")

    # Device vanished, then forgotten during a connect attempt (the task is cancelled).
    await act(third, "vanish")
    await wait_until(lambda: runtime.devices.get(third).state == "connecting", "third trying")
    assert runtime.devices.get(third).radio is not None  # an attempt holds a slot
    await runtime.devices.forget(third)
    # Its slot is back once the cancelled attempt is torn down.
    await wait_until(lambda: sum(r.used for r in runtime.devices.radios) == 2, "slot back")
    await check_slots(runtime, sim)
    await act(third, "reappear")

    # Radio dropped during a connect attempt: first vanishes, tries radio0 (it hears it best),
    # radio0 is dropped mid-attempt; first moves to radio1 when it comes back in range.
    await act(first, "vanish")
    await wait_until(
        lambda: (
            runtime.devices.get(first).state == "connecting"
            and placement(runtime)[first] == "radio0"
        ),
        "first trying radio0",
    )
    await control.request(sim.control_port, "POST", f"/radios/{a}/drop", {})
    await wait_until(lambda: placement(runtime)[first] == "radio1", "first trying radio1")
    await act(first, "reappear")
    await wait_until(lambda: all_bonded(runtime), "every device bonded again")
    await wait_until(lambda: runtime.bluetooth_report().radios[0].state == "up", "radio0 up")
    await wait_until(lambda: a in sim_radio_addresses(sim), "the sim sees radio0 again")

    # Back where it all started: the forgotten device comes back through a scan.
    await adopt(runtime, sim)
    await wait_until(lambda: all_bonded(runtime), "every device bonded again")
    await check_slots(runtime, sim)
    report = runtime.bluetooth_report()
    assert sum(r.slots_used for r in report.radios) == len(sim.addresses)
    assert sum(r.connect_failures for r in report.radios) >= 1


async def test_a_radio_that_cannot_open_at_start_is_down_until_it_opens_then_takes_devices(
    sims: SimFactory, relay: Relay, hubs: Callable[..., Runtime]
) -> None:
    sim = await sims.start(devices=2)
    mode = f"{sim.ble},hci:tcp-client:127.0.0.1:{relay.port}"
    runtime = hubs(sim, mode=mode, radio_slots="1,7")
    await runtime.start()  # radio1's port is not listening yet: the hub starts on radio0
    radio0, radio1 = runtime.bluetooth_report().radios
    assert (radio0.state, radio1.state, radio1.address) == ("up", "down", None)
    assert radio1.last_error is not None
    assert "cannot open bumble transport" in radio1.last_error
    state = runtime.radio_state
    assert state is not None
    assert state.up  # ready: one radio reaches devices
    assert "radio1: tcp-client:" in state.detail
    assert "down" in state.detail

    await adopt(runtime, sim)
    # radio0 has one slot: one device bonds on it, the other waits for a slot.
    await wait_until(
        lambda: sorted(map(str, placement(runtime).values())) == ["None", "radio0"],
        "one device on radio0, the other waiting",
    )
    await wait_until(
        lambda: any(m.state == "bonded" for m in runtime.devices.all()), "one device bonded"
    )

    await relay.open(sim.hci_port)
    await wait_until(lambda: runtime.bluetooth_report().radios[1].state == "up", "radio1 up")
    await wait_until(lambda: all_bonded(runtime), "every device bonded")
    assert sorted(map(str, placement(runtime).values())) == ["radio0", "radio1"]
    radio1 = runtime.bluetooth_report().radios[1]
    assert radio1.reopens == 0  # opened late, never lost
    assert radio1.address in await sim_radios(sim)
    await check_slots(runtime, sim)


async def test_the_hub_refuses_to_start_only_when_no_radio_opens(
    hubs: Callable[..., Runtime],
) -> None:
    with refusing_port() as one, refusing_port() as other:
        nobody, nobody_either = one.getsockname()[1], other.getsockname()[1]
        both = f"hci:tcp-client:127.0.0.1:{nobody},hci:tcp-client:127.0.0.1:{nobody_either}"
        runtime = hubs(None, mode=both)
        with pytest.raises(BluetoothUnavailable) as refused:
            await runtime.start()
        await runtime.stop()
        message = str(refused.value)
        assert f"radio0 (hci:tcp-client:127.0.0.1:{nobody}): cannot open" in message
        assert f"radio1 (hci:tcp-client:127.0.0.1:{nobody_either}): cannot open" in message

        # One radio keeps failing fast with the transport's own error.
        single = hubs(None, mode=f"hci:tcp-client:127.0.0.1:{nobody}")
        with pytest.raises(RadioError, match="cannot open bumble transport"):
            await single.start()
        await single.stop()


async def test_a_radio_that_went_deaf_is_not_preferred_after_the_next_scan(
    sims: SimFactory, hubs: Callable[..., Runtime]
) -> None:
    sim = await sims.start(devices=1)
    runtime = hubs(sim)
    await runtime.start()
    a, b = radio_addresses(runtime)
    (device,) = sim.addresses
    await set_signal(sim, device, a, NEAR)
    await set_signal(sim, device, b, FAR)
    await runtime.devices.scan(timeout_s=0.3)
    radio0 = runtime.devices.radios[0]
    assert device in radio0.heard

    await control.request(sim.control_port, "POST", f"/radios/{a}/deaf", {"deaf": True})
    async with asyncio.timeout(HANG_S):
        while device not in {d.address.upper() for d in await runtime.devices.scan(0.3)}:
            pass
    assert device not in radio0.heard  # what it heard before it went deaf is gone
    runtime.devices.manage(runtime.devices.seen(device))
    await wait_until(lambda: all_bonded(runtime), "the device bonded")
    assert placement(runtime) == {device: "radio1"}
    assert radio0.connect_attempts == 0  # no attempt wasted on the deaf radio
    await check_slots(runtime, sim)
