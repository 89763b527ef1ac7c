"""The radio transport supervisor against real `mcgw sim` processes.

A gateway ``Runtime`` in this process reaches a `mcgw sim` subprocess over HCI-over-TCP
(``--ble hci:tcp-client:...``), exactly as `mcgw serve` does. The sim is then killed (SIGKILL)
and started again on the same port, or stopped and resumed (SIGSTOP/SIGCONT), and the tests
check what a person would: the radio state says down and then up, every device is bonded again
with no gateway restart, a session resumes with a soft start or ends ``interrupted`` when the
radio stays away past the link-resume window, and nothing is logged at ERROR or with a
traceback on either side. Device output is read through the sim's control endpoint.

Waits are for conditions, bounded by a generous hang guard; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from ble.bumble.adapter import CONTROLLER_STALL_S
from ble.bumble.host import HCI_COMMAND_TIMEOUT_S
from ble.sim import control
from ble.supervisor import RadioStatus
from gateway.config import BleSettings, SafetySettings, Settings
from gateway.programs import Program, ProgramStep
from gateway.runtime import Runtime
from gateway.session import Session
from gateway.states import SessionState
from tests.e2e.conftest import wait_until
from tests.e2e.served import Sim, SimFactory

HANG_S = 30.0
"""Upper bound for any one wait: a hang guard, never a measurement."""
AMPLITUDE_UA = 200
SOFT_START_MS = 3000
"""Long enough that polling the control endpoint sees the ramp's middle even on a busy host."""
PROGRAM = Program(
    slug="radio-recovery",
    name="Radio recovery",
    steps=(
        ProgramStep.model_validate(
            {"zone": "forehead", "amplitude_ua": AMPLITUDE_UA, "duration_s": 300}
        ),
    ),
)


class MakeGateway(Protocol):
    def __call__(self, sim: Sim, safety: SafetySettings, **ble: Any) -> Runtime: ...


@pytest.fixture
async def sims(tmp_path: Path) -> AsyncIterator[SimFactory]:
    factory = SimFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
async def gateways() -> AsyncIterator[MakeGateway]:
    runtimes: list[Runtime] = []

    def make(sim: Sim, safety: SafetySettings, **ble: Any) -> Runtime:
        settings = Settings(
            ble=BleSettings(mode=f"hci:tcp-client:127.0.0.1:{sim.hci_port}", **ble),
            safety=safety,
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


def device_states(runtime: Runtime) -> set[str]:
    return {managed.state for managed in runtime.devices.all()}


def radio_status(runtime: Runtime) -> RadioStatus:
    state = runtime.radio_state
    assert state is not None
    return state.status


async def start_hub(runtime: Runtime, sim: Sim) -> None:
    await runtime.start()
    await wait_until(
        lambda: (
            set(runtime.devices.addresses()) == set(sim.addresses)
            and device_states(runtime) == {"bonded"}
        ),
        "every device bonded",
    )


async def start_session(runtime: Runtime, sim: Sim) -> Session:
    session = await runtime.sessions.start(
        owner="u1", address=sim.addresses[0], program=PROGRAM, level=5, consented=True
    )
    await wait_until(lambda: session.state is SessionState.RUNNING, "the session running")
    return session


async def output_ua(sim: Sim, address: str) -> int:
    snapshot = await control.request(sim.control_port, "GET", f"/devices/{address}")
    return int(snapshot["output_ua"])


async def ramp(sim: Sim, address: str) -> list[int]:
    """Poll the device's output until it reaches the program's amplitude; return the samples."""
    samples: list[int] = []
    async with asyncio.timeout(HANG_S):
        while not samples or samples[-1] < AMPLITUDE_UA:
            samples.append(await output_ua(sim, address))
            await asyncio.sleep(0.01)
    return samples


def problems(records: list[logging.LogRecord], sims: list[Sim]) -> list[str]:
    """ERROR lines and tracebacks logged by the gateway (this process) and by the sims."""
    gc.collect()  # "Future exception was never retrieved" is logged when the future is collected
    found = [
        f"{record.levelname} {record.name}: {record.getMessage()}"
        for record in records
        if record.levelno >= logging.ERROR or record.exc_info
    ]
    for sim in sims:
        found += [
            f"{sim.log.name}: {line}"
            for line in sim.log.read_text().splitlines()
            if line.startswith(("ERROR", "CRITICAL")) or "Traceback" in line
        ]
    return found


async def test_a_killed_sim_comes_back_and_devices_and_a_session_resume(
    sims: SimFactory,
    gateways: MakeGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sim = await sims.start()
    runtime = gateways(sim, SafetySettings(soft_start_ms=SOFT_START_MS, link_resume_window_s=60))
    await start_hub(runtime, sim)
    assert radio_status(runtime) is RadioStatus.UP
    session = await start_session(runtime, sim)

    sim.kill()
    await wait_until(lambda: radio_status(runtime) is not RadioStatus.UP, "the radio down")
    down = runtime.radio_state
    assert down is not None
    assert down.down_since is not None
    assert down.last_error is not None
    assert "closed" in down.last_error
    await wait_until(lambda: device_states(runtime) <= {"lost", "connecting"}, "devices lost")
    await wait_until(lambda: session.state is SessionState.PAUSED, "the session paused")
    assert session.reason == "link lost; reconnecting"

    again = await sims.start(hci_port=sim.hci_port, control_port=sim.control_port)
    await wait_until(lambda: radio_status(runtime) is RadioStatus.UP, "the radio back")
    up = runtime.radio_state
    assert up is not None
    assert (up.reopens, up.down_since, up.failed_attempts) == (1, None, 0)
    await wait_until(lambda: device_states(runtime) == {"bonded"}, "every device bonded again")
    await wait_until(lambda: session.state is SessionState.RUNNING, "the session resumed")
    assert session.reason == "link restored; resumed"

    # S2 on the new device process: its output ramps up from zero, never a step.
    samples = await ramp(again, sim.addresses[0])
    rising = [ua for ua in samples if 0 < ua < AMPLITUDE_UA]
    assert len(set(rising)) >= 3, f"no ramp seen: {samples}"
    assert samples == sorted(samples), f"the output fell during the ramp: {samples}"

    supervisor = [r for r in caplog.records if r.name == "ble.supervisor"]
    assert [r.levelname for r in supervisor if "lost" in r.getMessage()] == ["WARNING"]
    assert [r.levelname for r in supervisor if "back after" in r.getMessage()] == ["INFO"]
    await runtime.stop()
    assert problems(caplog.records, sims.started) == []


async def test_a_session_whose_radio_stays_away_past_the_window_ends_interrupted(
    sims: SimFactory,
    gateways: MakeGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sim = await sims.start()
    runtime = gateways(sim, SafetySettings(link_resume_window_s=1.0))
    await start_hub(runtime, sim)
    session = await start_session(runtime, sim)

    sim.kill()
    await wait_until(lambda: session.state is SessionState.INTERRUPTED, "the session ended")
    assert session.reason == "link lost for more than 1 s"
    assert radio_status(runtime) is not RadioStatus.UP  # nothing listens on the port

    # The radio and the devices come back; the ended session stays ended, output stays off.
    again = await sims.start(hci_port=sim.hci_port, control_port=sim.control_port)
    await wait_until(lambda: device_states(runtime) == {"bonded"}, "every device bonded again")
    assert session.state is SessionState.INTERRUPTED
    assert await output_ua(again, sim.addresses[0]) == 0
    await runtime.stop()
    assert problems(caplog.records, sims.started) == []


async def test_stopped_and_resumed_processes_log_no_error_or_traceback(
    sims: SimFactory,
    gateways: MakeGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sim = await sims.start()
    runtime = gateways(sim, SafetySettings(), discovery_interval_s=1)  # scans go on throughout
    await start_hub(runtime, sim)
    await start_session(runtime, sim)

    # The sim stops (SIGSTOP) for longer than an HCI command may take, yet not so long that the
    # controller counts as hung: writes time out, links are dropped, HCI commands wait, and the
    # controller answers all of them late, in one burst, once it runs again.
    sim.process.send_signal(signal.SIGSTOP)
    await asyncio.sleep((HCI_COMMAND_TIMEOUT_S + CONTROLLER_STALL_S) / 2)
    sim.process.send_signal(signal.SIGCONT)
    await wait_until(lambda: device_states(runtime) == {"bonded"}, "every device bonded again")

    # The gateway stops for a few seconds: its event loop stands still (as under SIGSTOP) while
    # the sim's answers and the device's telemetry pile up in the socket.
    if runtime.sessions.active_on(sim.addresses[0]) is None:
        await start_session(runtime, sim)
    time.sleep(3)  # blocking on purpose: this event loop must stand still
    await wait_until(lambda: device_states(runtime) == {"bonded"}, "every device bonded again")
    await asyncio.sleep(0.5)  # let late packets arrive
    assert radio_status(runtime) is RadioStatus.UP
    await runtime.stop()
    assert problems(caplog.records, sims.started) == []
