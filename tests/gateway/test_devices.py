"""The device manager: discovery, supervised connections, reconnects, slots, telemetry routing.

Everything runs over bleak's public API on the bumble virtual radio against simulated devices.
Assertions are on states, events and counts, never on how long something took.
"""

from __future__ import annotations

import asyncio
import itertools
from functools import partial

import pytest

from ble import protocol as p
from gateway.devices import Discovered, ManagedDevice
from gateway.errors import DeviceUnavailable, NotFound
from gateway.events import DeviceStateChanged
from gateway.states import SessionState
from gateway.telemetry import TelemetryFrame
from tests.gateway.conftest import (
    Hub,
    StartHub,
    output_log,
    program,
    state,
    steepest_rise_ok,
    step,
    wait_done,
    wait_output,
    wait_state,
    wait_until,
)


def reconnected(managed: ManagedDevice, times: int) -> bool:
    return managed.reconnects == times and managed.link is not None


def device_states(hub: Hub, address: str) -> list[str]:
    return [
        e.state
        for e in hub.events.events
        if isinstance(e, DeviceStateChanged) and e.address == address
    ]


async def test_a_scan_finds_the_devices_with_their_advertised_state(hub: Hub) -> None:
    devices = hub.runtime.devices
    # The runtime's start-up scan found both; connected, they no longer advertise.
    assert sorted(devices.discovered) == [hub.address(0), hub.address(1)]
    for index in range(2):
        device = devices.discovered[hub.address(index)]
        assert (device.name, device.battery_pct, device.state) == (
            f"MC-SIM-{index + 1}",
            100,
            "idle",
        )
    assert await devices.scan(timeout_s=0.1) == []

    await devices.forget(hub.address(1))
    hub.sim(1).set_battery(57)
    await wait_until(lambda: hub.sim(1).device.is_advertising)
    found: list[Discovered] = []
    while not found or found[0].battery_pct != 57:
        found = await devices.scan(timeout_s=0.1)
    assert [(d.address, d.name, d.state) for d in found] == [(hub.address(1), "MC-SIM-2", "idle")]
    assert devices.seen(hub.address(1).lower()).address == hub.address(1)


async def test_unknown_devices_are_not_found_with_advice(hub: Hub) -> None:
    devices = hub.runtime.devices
    with pytest.raises(NotFound, match="scan and claim it first"):
        devices.get("AA:BB:CC:DD:EE:FF")
    with pytest.raises(NotFound, match="scan first"):
        devices.seen("AA:BB:CC:DD:EE:FF")
    with pytest.raises(NotFound):
        await devices.forget("AA:BB:CC:DD:EE:FF")
    with pytest.raises(NotFound):
        await hub.runtime.sessions.start(
            owner="u1", address="AA:BB:CC:DD:EE:FF", program=program(), level=1, consented=True
        )


async def test_every_managed_device_connects_bonds_and_reads_its_limits(hub: Hub) -> None:
    for index in range(2):
        managed = hub.runtime.devices.get(hub.address(index))
        assert managed.state == "bonded"
        assert managed.name == f"MC-SIM-{index + 1}"
        link = managed.require_link()
        assert link.limits is not None
        assert link.limits.hard_cap_ua == 500
        assert hub.sim(index).is_connected
        assert device_states(hub, hub.address(index)) == [
            "discovered",
            "connecting",
            "connected",
            "bonded",
        ]
    # Telemetry flows from connect on, whether or not a session runs (at the idle rate while
    # nobody watches: a few frames from the two devices are enough to show it).
    await wait_until(lambda: hub.runtime.hub.counters.frames_in > 4)
    assert hub.runtime.devices.get(hub.address(0)).contact_quality == 100
    assert hub.runtime.devices.get(hub.address(0)).battery_pct == 100


async def test_a_dropped_link_is_reconnected(hub: Hub) -> None:
    managed = hub.runtime.devices.get(hub.address(0))
    sent: list[int] = []
    for round_ in range(1, 3):
        sent.append(managed.link_totals().commands_sent)
        assert hub.sim(0).drop_link() == 1
        await wait_until(partial(reconnected, managed, round_))
        await asyncio.wait_for(managed.connected.wait(), 10)
    # Counters (exported as Prometheus counters) keep counting across reconnects.
    assert 0 < sent[0] < sent[1] < managed.link_totals().commands_sent
    states = device_states(hub, hub.address(0))
    assert states[4:] == ["lost", "connecting", "connected", "bonded"] * 2
    assert hub.runtime.devices.get(hub.address(1)).reconnects == 0


async def test_a_vanished_device_is_reconnected_when_it_returns_and_its_session_resumes(
    hub: Hub,
) -> None:
    sim = hub.sim(0)
    managed = hub.runtime.devices.get(hub.address(0))
    session = await hub.start(0, program(step("forehead", 300, 10)))
    await wait_until(lambda: hub.firmware(0).output_ua == 300)
    sim.vanish()
    await wait_state(session, SessionState.PAUSED, "link lost")
    assert hub.firmware(0).output_ua == 0  # the device stops on link loss
    with pytest.raises(DeviceUnavailable, match="not connected"):
        managed.require_link()
    with pytest.raises(DeviceUnavailable):
        await hub.runtime.sessions.set_level(session.id, 2, actor="u1")
    await asyncio.sleep(0.5)  # out of range for a while; the manager keeps trying
    assert managed.state == "connecting"
    sim.reappear()
    await wait_state(session, SessionState.RUNNING, "link restored; resumed")
    await wait_until(lambda: hub.firmware(0).output_ua == 300)
    assert managed.reconnects == 1
    assert steepest_rise_ok(output_log(sim), 300)
    await hub.runtime.sessions.stop(session.id, actor="u1")


async def test_a_device_back_after_its_session_was_interrupted_can_run_again(
    start_hub: StartHub,
) -> None:
    hub = await start_hub(1, link_resume_window_s=0.2)
    session = await hub.start(0, program(step("forehead", 300, 10)))
    await wait_output(hub.sim(0))
    hub.sim(0).vanish()
    await wait_done(session)
    assert session.state is SessionState.INTERRUPTED
    hub.sim(0).reappear()
    managed = hub.runtime.devices.get(hub.address(0))
    await wait_until(lambda: managed.link is not None and managed.link.is_connected)
    again = await hub.start(0)
    assert again.state is SessionState.RUNNING
    await hub.runtime.sessions.stop(again.id, actor="u1")


async def test_connection_slots_limit_the_links_and_a_forgotten_device_frees_one(
    start_hub: StartHub,
) -> None:
    hub = await start_hub(2, ble={"connection_slots": 1}, wait=False)
    devices = hub.runtime.devices
    first, second = devices.get(hub.address(0)), devices.get(hub.address(1))
    await wait_until(lambda: first.link is not None or second.link is not None)
    connected, waiting = (first, second) if first.link is not None else (second, first)
    await asyncio.sleep(0.3)  # the other one is still waiting for a slot
    assert waiting.link is None
    assert sum(sim.is_connected for sim in hub.sims) == 1

    await devices.forget(connected.address)
    assert devices.find(connected.address) is None
    assert connected.state == "forgotten"
    await asyncio.wait_for(waiting.connected.wait(), 10)
    await wait_until(lambda: sum(sim.is_connected for sim in hub.sims) == 1)
    with pytest.raises(NotFound):
        devices.get(connected.address)
    # Seen in a scan, it can be managed again.
    await devices.scan(timeout_s=0.2)
    assert devices.manage(devices.seen(connected.address)).address == connected.address


async def test_malformed_notifications_are_counted_and_dropped(hub: Hub) -> None:
    session = await hub.start(0, program(step("cheeks", 300, 10)))
    await wait_output(hub.sim(0))
    link = hub.runtime.devices.get(hub.address(0)).require_link()
    # Garble only after good frames arrived: a hole needs a frame on each side to be seen.
    await wait_until(lambda: link.counters.telemetry_frames >= 5)
    before = link.counters.telemetry_frames
    hub.sim(0).send_malformed(25)
    await wait_until(lambda: link.counters.malformed_frames == 25)
    await wait_until(lambda: link.counters.telemetry_frames > before + 25)
    assert hub.sim(0).transmitter.counters.garbled == 25
    assert session.state is SessionState.RUNNING
    lost = hub.runtime.hub.counters.device_frames_lost_by_device[hub.address(0)]
    assert 0 < lost <= 25  # garbled telemetry shows as frames the device lost
    await hub.runtime.sessions.set_level(session.id, 3, actor="u1")  # still under control
    await hub.runtime.sessions.stop(session.id, actor="u1")
    assert state(session) is SessionState.STOPPED
    assert hub.firmware(0).output_ua == 0


async def test_telemetry_carries_the_session_while_one_holds_the_device(hub: Hub) -> None:
    frames: list[TelemetryFrame] = []
    hub.runtime.hub.add_listener(frames.append)
    session = await hub.start(0, program(step("cheeks", 300, 10)))
    await wait_output(hub.sim(0))
    await wait_until(lambda: sum(f.session_id == session.id for f in frames) >= 10)
    await hub.runtime.sessions.stop(session.id, actor="u1")
    mark = len(frames)
    await wait_until(lambda: len(frames) > mark + 10)
    ours = [f for f in frames if f.device == hub.address(0)]
    other = [f for f in frames if f.device == hub.address(1)]
    assert {f.session_id for f in other} == {None}
    assert {f.session_id for f in ours[-5:]} == {None}
    tagged = [f for f in ours if f.session_id == session.id]
    assert {f.zone for f in tagged if f.sample.state is p.DeviceState.RUNNING} == {p.Zone.CHEEKS}
    seqs = [f.seq for f in ours]
    assert seqs == sorted(seqs)


async def test_the_telemetry_rate_follows_who_watches_and_a_session_raises_it_first(
    hub: Hub,
) -> None:
    devices, telemetry = hub.runtime.devices, hub.runtime.hub
    idle, full = devices.settings.idle_telemetry_hz, devices.settings.telemetry_hz
    assert idle < full
    # Connected and idle, nobody watching: the devices were set to the idle rate over GATT.
    await wait_until(lambda: hub.firmware(0).telemetry_hz == hub.firmware(1).telemetry_hz == idle)

    with (
        telemetry.subscribe(device=hub.address(0)),
        telemetry.subscribe(device=hub.address(1), rate_hz=10),
    ):
        # Every frame wanted on device 0, ten a second on device 1: each gets what it needs.
        await wait_until(lambda: hub.firmware(0).telemetry_hz == full)
        await wait_until(lambda: hub.firmware(1).telemetry_hz == 10)
    await wait_until(lambda: hub.firmware(0).telemetry_hz == hub.firmware(1).telemetry_hz == idle)

    frames: list[TelemetryFrame] = []
    hub.runtime.hub.add_listener(frames.append)
    mark = hub.spies[0].mark()
    session = await hub.start(0, program(step("cheeks", 300, 10)))
    sent = hub.spies[0].since(mark)
    # The rate went up before the first pulse was queued or started, not after.
    rates = [i for i, c in enumerate(sent) if isinstance(c, p.SetTelemetryRate)]
    pulses = [i for i, c in enumerate(sent) if isinstance(c, p.QueueSegment | p.Start)]
    assert rates
    assert pulses
    assert rates[0] < pulses[0]
    assert sent[rates[0]].rate_hz == full
    raised_ms = hub.spies[0].commands[mark + rates[0]][0]

    def session_times() -> list[int]:
        return [
            f.sample.device_time_ms
            for f in frames
            if f.session_id == session.id and f.sample.device_time_ms >= raised_ms
        ]

    await wait_until(lambda: len(session_times()) >= 10)
    # The session's first frames are at the full rate: one sample period apart on the device.
    ours = session_times()[:10]
    assert {b - a for a, b in itertools.pairwise(ours)} == {1000 // full}
    assert hub.firmware(1).telemetry_hz == idle  # the other device stays idle

    await hub.runtime.sessions.stop(session.id, actor="u1")
    await wait_until(lambda: hub.firmware(0).telemetry_hz == idle)


async def test_a_session_that_reconnects_streams_at_the_full_rate_again(hub: Hub) -> None:
    full = hub.runtime.devices.settings.telemetry_hz
    session = await hub.start(0, program(step("cheeks", 300, 20)))
    await wait_output(hub.sim(0))
    managed = hub.runtime.devices.get(hub.address(0))
    assert hub.sim(0).drop_link() == 1
    await wait_until(partial(reconnected, managed, 1))
    await wait_until(lambda: session.state is SessionState.RUNNING)
    assert hub.firmware(0).telemetry_hz == full
    await hub.runtime.sessions.stop(session.id, actor="u1")
