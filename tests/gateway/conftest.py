"""Fixtures of the gateway core suite: a real runtime on the virtual radio, and device observers.

``start_hub`` builds a :class:`~gateway.runtime.Runtime` with N in-process simulated devices
(bleak's public API over the bumble backend, never a mock), waits until every device is
connected and installs a :class:`CommandSpy` on each device's firmware, so a test can see every
command the device decoded. Every runtime is stopped after its test.

The helpers here observe the *device*: its output log (the current it drove, in firmware
milliseconds), the commands it decoded, its state. Tests assert on those outcomes and on counts;
time appears only in hang guards (``HANG_S``) and never in an assertion.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import pytest

from ble import protocol as p
from ble.errors import ProtocolError
from ble.sim.firmware import Firmware
from ble.sim.fleet import sim_address
from ble.sim.peripheral import SimulatedDevice
from gateway.config import BleSettings, DatabaseSettings, SafetySettings, Settings
from gateway.events import Event, SessionNotice, SessionStateChanged
from gateway.programs import Program, ProgramStep
from gateway.runtime import Runtime
from gateway.session import Session
from gateway.states import SessionState

HANG_S = 20.0
"""Upper bound for any one wait in this suite: a hang guard, never a measurement."""
HUB_ID = "hub-core-test"
SOFT_START_MS = 1000


# --- programs ------------------------------------------------------------------------------------


def step(
    zone: str = "cheeks", amplitude_ua: int = 300, duration_s: int = 5, **kw: Any
) -> ProgramStep:
    return ProgramStep.model_validate(
        {"zone": zone, "amplitude_ua": amplitude_ua, "duration_s": duration_s, "move_cue_s": 2} | kw
    )


def program(*steps: ProgramStep, slug: str = "test-program") -> Program:
    return Program(slug=slug, name="Test program", steps=steps or (step(),))


# --- the device side -----------------------------------------------------------------------------


class CommandSpy:
    """Records every command a simulated device's firmware decoded, with its firmware time.

    It wraps ``Firmware.handle`` (the simulated firmware is ours; bleak and bumble are untouched),
    so it shows exactly what reached the device over the radio, after the gateway's write guard.
    """

    def __init__(self, firmware: Firmware) -> None:
        self.commands: list[tuple[int, p.Command]] = []
        self.undecodable = 0
        original = firmware.handle

        def handle(data: bytes, *, encrypted: bool, now_ms: int) -> p.Response | None:
            try:
                self.commands.append((now_ms, p.decode_command(bytes(data))))
            except ProtocolError:
                self.undecodable += 1
            return original(data, encrypted=encrypted, now_ms=now_ms)

        firmware.handle = handle  # type: ignore[method-assign]

    def of(self, kind: type[p.Command]) -> list[Any]:
        return [command for _, command in self.commands if isinstance(command, kind)]

    def times_of(self, kind: type[p.Command]) -> list[int]:
        return [ms for ms, command in self.commands if isinstance(command, kind)]

    def max_amplitude(self) -> int:
        return max((s.amplitude_ua for s in self.of(p.QueueSegment)), default=0)

    def mark(self) -> int:
        return len(self.commands)

    def since(self, mark: int, kind: type[p.Command] | None = None) -> list[Any]:
        commands = [command for _, command in self.commands[mark:]]
        return commands if kind is None else [c for c in commands if isinstance(c, kind)]


async def set_device_limits(hub: Hub, index: int, **changes: int) -> p.DeviceLimits:
    """Give a simulated device new limits and reconnect it, so the hub reads them again.

    Only what the device *reports* changes (the limits characteristic): the gateway must act
    on that. The simulated firmware's own checks keep their original limits.
    """
    device = hub.sim(index)
    limits = replace(device.firmware.limits, **changes)
    device.firmware.limits = limits
    managed = hub.runtime.devices.get(hub.address(index))
    reconnects = managed.reconnects
    device.drop_link()
    await wait_until(lambda: managed.reconnects > reconnects and managed.link is not None)
    assert managed.link is not None
    assert managed.link.limits == limits
    return limits


def output_log(device: SimulatedDevice) -> list[tuple[int, int]]:
    """The device's output trace up to now: (firmware ms, µA) at every change of level."""
    return list(device.sync().output_log)


def output_after(log: Iterable[tuple[int, int]], since_ms: int) -> list[tuple[int, int]]:
    points = list(log)
    before = [pt for pt in points if pt[0] < since_ms]
    after = [pt for pt in points if pt[0] >= since_ms]
    return ([(since_ms, before[-1][1])] if before else []) + after


def steepest_rise_ok(
    log: Iterable[tuple[int, int]], top_ua: float, ramp_ms: int = SOFT_START_MS
) -> bool:
    """True if no rise in ``log`` is steeper than 0 -> ``top_ua`` over ``ramp_ms`` (S2).

    Every pair of points i < j must satisfy ``u_j - u_i <= slope * (t_j - t_i) + slack``: the
    output never climbed faster than the soft start allows, over any interval. The slack covers
    the trace's integer truncation; a 100 ms firmware-floor ramp would break it tenfold.
    """
    slope = top_ua / ramp_ms * 1.05
    slack = 2.0
    lowest: float | None = None
    for t, ua in log:
        value = ua - slope * t
        if lowest is not None and value > lowest + slack:
            return False
        lowest = value if lowest is None else min(lowest, value)
    return True


def has_gap(log: Iterable[tuple[int, int]]) -> bool:
    """True if output fell to zero between its first rise and its final fall."""
    levels = [ua for _, ua in log]
    on = [i for i, ua in enumerate(levels) if ua > 0]
    if not on:
        return False
    return any(ua == 0 for ua in levels[on[0] : on[-1] + 1])


# --- waiting -------------------------------------------------------------------------------------


async def wait_until(predicate: Callable[[], bool], timeout_s: float = HANG_S) -> None:
    """Poll ``predicate`` until it holds (a hang guard bounds the wait)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


def state(session: Session) -> SessionState:
    """The session's state now (a call, so a type checker does not carry an earlier narrowing
    across the awaits that change it)."""
    return session.state


async def wait_done(session: Session, timeout_s: float = HANG_S) -> Session:
    async with asyncio.timeout(timeout_s):
        await session.done.wait()
    return session


async def wait_state(
    session: Session, state: SessionState, reason: str | None = None, timeout_s: float = HANG_S
) -> None:
    def reached() -> bool:
        return session.state is state and (reason is None or reason in session.reason)

    await wait_until(reached, timeout_s)


async def wait_output(device: SimulatedDevice, above_ua: int = 0) -> None:
    """Until the device drives more than ``above_ua``."""
    await wait_until(lambda: device.sync().output_ua > above_ua)


async def wait_position(session: Session, seconds: float) -> None:
    await wait_until(lambda: session.position_s >= seconds)


# --- the hub -------------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Every event the bus published, in order."""

    events: list[Event] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def notices(self, session: Session | None = None, notice: str | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, SessionNotice)
            and (session is None or e.session_id == session.id)
            and (notice is None or e.notice == notice)
        ]

    def states(self, session: Session) -> list[tuple[str, str]]:
        return [
            (e.state, e.reason)
            for e in self.events
            if isinstance(e, SessionStateChanged) and e.session_id == session.id
        ]


@dataclass
class Hub:
    """A started runtime plus handles on its simulated devices."""

    runtime: Runtime
    spies: list[CommandSpy]
    events: Recorder

    @property
    def sims(self) -> list[SimulatedDevice]:
        return self.runtime.sim_devices

    def address(self, index: int = 0) -> str:
        return sim_address(index)

    def sim(self, index: int = 0) -> SimulatedDevice:
        return self.sims[index]

    def firmware(self, index: int = 0) -> Firmware:
        return self.sims[index].sync()

    async def start(
        self,
        index: int = 0,
        prog: Program | None = None,
        *,
        level: int = 5,
        owner: str = "u1",
        **kw: Any,
    ) -> Session:
        kw.setdefault("consented", True)
        return await self.runtime.sessions.start(
            owner=owner, address=self.address(index), program=prog or program(), level=level, **kw
        )


class StartHub(Protocol):
    def __call__(
        self,
        devices: int = 2,
        *,
        storage: bool = False,
        ble: dict[str, Any] | None = None,
        wait: bool = True,
        **safety: Any,
    ) -> Awaitable[Hub]: ...


@pytest.fixture
async def start_hub(tmp_path: Path) -> AsyncIterator[StartHub]:
    """Start a hub with ``devices`` simulated devices and ``safety`` settings overrides."""
    runtimes: list[Runtime] = []

    async def start(
        devices: int = 2,
        *,
        storage: bool = False,
        ble: dict[str, Any] | None = None,
        wait: bool = True,
        **safety: Any,
    ) -> Hub:
        settings = Settings(
            hub_id=HUB_ID,
            ble=BleSettings(mode=f"sim:{devices}", **(ble or {})),
            safety=SafetySettings(**safety),
            db=DatabaseSettings(url=f"sqlite:///{tmp_path / 'mcgw.db'}", telemetry_flush_s=0.2),
            mdns=False,
        )
        runtime = Runtime(settings, storage=storage)
        runtimes.append(runtime)
        events = Recorder()
        runtime.bus.add_listener(events)
        await runtime.start()
        spies = [CommandSpy(device.firmware) for device in runtime.sim_devices]
        if wait:
            await runtime.wait_connected(HANG_S)
        return Hub(runtime, spies, events)

    yield start
    for runtime in reversed(runtimes):
        if runtime.started:
            await runtime.stop()


@pytest.fixture
async def hub(start_hub: StartHub) -> Hub:
    """Two simulated devices, default safety settings, no storage."""
    return await start_hub()


ACTIVE = (p.DeviceState.RUNNING, p.DeviceState.PAUSED)
