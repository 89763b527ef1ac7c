"""The reference firmware of a microcurrent device, as a pure state machine.

:class:`Firmware` is what a real device runs, minus the radio: control-point writes go in through
:meth:`Firmware.handle` (which returns the ACK/NACK to indicate), time goes in through
:meth:`Firmware.tick`, and telemetry and status notifications come out of
:meth:`Firmware.drain_outbox`. Time is an explicit millisecond count, so tests drive it
step by step and the same seed with the same calls gives the same bytes.

The rules it implements are listed in ble/sim/__init__.py (and docs/protocol.md). It
deliberately does not know about bumble, asyncio or the link: ble/sim/peripheral.py carries
bytes between this state machine and the radio, and enforces encryption at the ATT level too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ble import protocol as p
from ble.errors import ProtocolError
from ble.sim.faults import FaultMonitor
from ble.sim.output import OutputStage
from ble.sim.physics import Physics, PhysicsConfig
from ble.sim.playback import PlayQueue
from ble.sim.telemetry import TelemetrySampler

DEFAULT_LIMITS = p.DeviceLimits(
    protocol_version=p.PROTOCOL_VERSION,
    hard_cap_ua=500,
    frequency_min_dhz=1,
    frequency_max_dhz=10_000,
    pulse_width_min_us=20,
    pulse_width_max_us=10_000,
    queue_depth=8,
    lease_ms=1_000,
    max_segment_ms=60_000,
    telemetry_max_hz=100,
)
"""What the simulated device accepts unless told otherwise."""

STEP_MS = 5
"""Longest internal time step; ticks further apart are cut into steps of at most this."""
QUIET_STEP_MS = 100
"""Longest step while the device is quiet (no session, no output): the physics is exact for
any step length, and what happens at a precise time (samples) still cuts the step."""
COMMAND_LOG_LIMIT = 10_000
DEFAULT_NOTIFICATION_BYTES = 244

_ACTIVE = (p.DeviceState.RUNNING, p.DeviceState.PAUSED)
_KNOWN_OPCODES = frozenset(op for op in p.Opcode if op < p.Opcode.RESPONSE)

Notification = p.Telemetry | p.DeviceStatus


@dataclass(slots=True)
class FirmwareCounters:
    """What the firmware saw and did, for tests and the health view."""

    commands: int = 0
    acks: int = 0
    nacks: int = 0
    malformed: int = 0
    unencrypted: int = 0
    lease_expiries: int = 0
    faults: int = 0
    samples: int = 0
    notifications: int = 0


class Firmware:
    """One device's firmware. Feed it commands and time; read its outbox and observables."""

    def __init__(
        self,
        limits: p.DeviceLimits = DEFAULT_LIMITS,
        seed: int = 0,
        *,
        physics_config: PhysicsConfig | None = None,
        start_ms: int = 0,
    ) -> None:
        self.limits = limits
        self.physics = Physics(seed, physics_config)
        self.output = OutputStage()
        self.counters = FirmwareCounters()
        self.state = p.DeviceState.IDLE
        self.intensity_pct = 100
        self.command_log: deque[tuple[int, int, p.Status]] = deque(maxlen=COMMAND_LOG_LIMIT)
        self._now = start_ms
        self._queue = PlayQueue(limits)
        self._faults = FaultMonitor(self.physics, limits.hard_cap_ua)
        self._last_command_ms = start_ms
        self._contact = self.physics.contact
        self._refuse_left = 0
        self._refuse_opcodes: frozenset[int] | None = None
        self._outbox: list[Notification] = []
        self._sampler = TelemetrySampler(self.physics, start_ms, max_hz=limits.telemetry_max_hz)
        # Largest notification value (ATT MTU - 3), kept up to date by the peripheral.
        self.max_notification_bytes = DEFAULT_NOTIFICATION_BYTES
        self._last_status = self.status()

    # -- observables ---------------------------------------------------------------------------

    @property
    def output_ua(self) -> int:
        return self.output.output_ua

    @property
    def quiet(self) -> bool:
        """No session state and no output: nothing needs time finer than the next sample."""
        return self.state not in _ACTIVE and self.output.output_ua == 0

    @property
    def next_sample_ms(self) -> int:
        """Firmware time of the next telemetry sample (far in the future while it is off)."""
        return self._sampler.next_due_ms

    @property
    def output_log(self) -> deque[tuple[int, int]]:
        return self.output.output_log

    @property
    def max_output_ua(self) -> int:
        return self.output.max_output_ua

    @property
    def queue(self) -> tuple[p.QueueSegment, ...]:
        """Queued segments, the playing one first while RUNNING or PAUSED."""
        return self._queue.segments

    @property
    def current_segment(self) -> p.QueueSegment | None:
        return self._queue.head if self.state in _ACTIVE else None

    @property
    def segment_elapsed_ms(self) -> int:
        return self._queue.elapsed_ms if self.state in _ACTIVE else 0

    @property
    def contact(self) -> bool:
        return self._contact

    @property
    def faults(self) -> p.FaultFlags:
        return self._faults.flags

    @property
    def telemetry_hz(self) -> int:
        return self._sampler.rate_hz

    @property
    def samples_per_notification(self) -> int:
        return self._sampler.per_notification

    def status(self) -> p.DeviceStatus:
        current = self.current_segment
        return p.DeviceStatus(
            state=self.state,
            faults=self.faults,
            battery_pct=self.physics.battery_level,
            queue_length=len(self._queue),
            intensity_pct=self.intensity_pct,
            current_segment=p.NO_SEGMENT if current is None else current.segment_id,
        )

    def drain_outbox(self) -> list[Notification]:
        """Notifications produced since the last call, in order (telemetry and status)."""
        out, self._outbox = self._outbox, []
        return out

    # -- commands ------------------------------------------------------------------------------

    def handle(self, data: bytes, *, encrypted: bool, now_ms: int) -> p.Response | None:
        """Process one control-point write at ``now_ms``; return the response to indicate.

        Returns None only when the frame is too short to carry a sequence number to answer.
        """
        self.tick(now_ms)
        self.counters.commands += 1
        data = bytes(data)
        header = p.command_header(data)
        if header is None:
            self.counters.malformed += 1
            return None
        opcode, seq = header
        try:
            command = p.decode_command(data)
        except ProtocolError:
            self.counters.malformed += 1
            if data[0] != p.PROTOCOL_VERSION:
                return self._respond(seq, opcode, p.Status.UNSUPPORTED_VERSION)
            if opcode not in _KNOWN_OPCODES:
                return self._respond(seq, opcode, p.Status.UNKNOWN_OPCODE)
            return self._respond(seq, opcode, p.Status.MALFORMED)
        # The ATT layer already refuses unencrypted writes; this is the firmware's own check.
        # STOP is exempt: stopping output can never be an attack.
        if not encrypted and not isinstance(command, p.Stop):
            self.counters.unencrypted += 1
            return self._respond(seq, opcode, p.Status.REFUSED)
        self._last_command_ms = self._now
        if self._refuse_left > 0 and (
            self._refuse_opcodes is None or opcode in self._refuse_opcodes
        ):
            self._refuse_left -= 1
            return self._respond(seq, opcode, p.Status.REFUSED)
        status = self._execute(command)
        self._check_status()
        return self._respond(seq, opcode, status)

    def _respond(self, seq: int, opcode: int, status: p.Status) -> p.Response:
        self.counters.acks += status is p.Status.OK
        self.counters.nacks += status is not p.Status.OK
        self.command_log.append((self._now, opcode, status))
        return p.Response(seq, opcode, status, min(self._queue.free, 0xFF))

    def _execute(self, command: p.Command) -> p.Status:
        match command:
            case p.Stop():
                self._halt(self.state if self.state not in _ACTIVE else p.DeviceState.IDLE)
                return p.Status.OK
            case p.Hello(max_version=version) if version < p.PROTOCOL_VERSION:
                return p.Status.UNSUPPORTED_VERSION
            case p.Keepalive() | p.Hello():
                return p.Status.OK
            case p.SetTelemetryRate(rate_hz=hz, samples_per_notification=n):
                if hz > self.limits.telemetry_max_hz:
                    return p.Status.OUT_OF_RANGE
                size = p.TELEMETRY_HEADER_SIZE + n * p.TELEMETRY_SAMPLE_SIZE
                if (
                    not 1 <= n <= p.MAX_SAMPLES_PER_NOTIFICATION
                    or size > self.max_notification_bytes
                ):
                    return p.Status.OUT_OF_RANGE  # never truncate a notification: refuse instead
                self._outbox.extend(self._sampler.configure(self._now, hz, n))
                return p.Status.OK
            case p.SetIntensity(percent=percent, ramp_ms=ramp_ms):
                if percent > 100:
                    return p.Status.OUT_OF_RANGE
                self.intensity_pct = percent
                self._retarget(ramp_ms)
                return p.Status.OK
            case p.ClearFault():
                return self._clear_fault()
        # Whatever could lead to output is refused while a fault or the charger holds it off.
        if self.state is p.DeviceState.FAULT:
            return p.Status.FAULT_ACTIVE
        if self.state is p.DeviceState.CHARGING:
            return p.Status.CHARGING
        match command:
            case p.QueueSegment():
                status = self._queue.check(command)
                if status is p.Status.OK:
                    self._queue.append(command)
                return status
            case p.Start():
                head = self._queue.head
                if self.state is not p.DeviceState.IDLE or head is None:
                    return p.Status.BAD_STATE
                self._faults.lease_expired = False
                self._queue.rewind()
                self.state = p.DeviceState.RUNNING
                self._retarget(head.ramp_ms)
                return p.Status.OK
            case p.Pause():
                if self.state is not p.DeviceState.RUNNING:
                    return p.Status.BAD_STATE
                self.state = p.DeviceState.PAUSED
                self._retarget(0)
                return p.Status.OK
            case p.Resume(ramp_ms=ramp_ms):
                if self.state is not p.DeviceState.PAUSED:
                    return p.Status.BAD_STATE
                self.state = p.DeviceState.RUNNING
                self._retarget(ramp_ms)
                return p.Status.OK
        return p.Status.UNKNOWN_OPCODE  # a new Command subclass nobody taught the firmware

    def _clear_fault(self) -> p.Status:
        if self.state is p.DeviceState.CHARGING:
            return p.Status.CHARGING
        if self.state is not p.DeviceState.FAULT:
            return p.Status.OK  # nothing to clear: idempotent, so a retry is harmless
        if self._faults.try_clear():
            return p.Status.FAULT_ACTIVE
        charging = self.physics.charging
        self.state = p.DeviceState.CHARGING if charging else p.DeviceState.IDLE
        return p.Status.OK

    # -- scenario hooks and link events --------------------------------------------------------

    def refuse_commands(self, n: int, opcodes: Iterable[int] | None = None) -> None:
        """NACK the next ``n`` decodable commands (of ``opcodes`` only, if given) with REFUSED.

        A fault injection: a refused command is not executed, not even STOP.
        """
        self._refuse_left = max(0, n)
        self._refuse_opcodes = None if opcodes is None else frozenset(int(o) for o in opcodes)

    def on_disconnect(self, now_ms: int) -> None:
        """The link is gone: output off at once, queue cleared, per-link settings reset."""
        self.tick(now_ms)
        self._halt(self.state if self.state not in _ACTIVE else p.DeviceState.IDLE)
        self.intensity_pct = 100
        self._sampler.configure(self._now)  # samples not yet sent are lost with the link
        self._outbox.clear()
        self._check_status()

    # -- time ----------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        """Advance to ``now_ms`` in steps of at most STEP_MS; earlier times are ignored.

        Steps are also cut at every sample time, lease deadline and segment end, so those
        happen at their exact millisecond whatever the caller's tick pattern.
        """
        while self._now < now_ms:
            step = QUIET_STEP_MS if self.quiet else STEP_MS
            t = min(now_ms, self._now + step, self._sampler.next_due_ms)
            if self.state in _ACTIVE:
                t = min(t, self._last_command_ms + self.limits.lease_ms + 1)
            if self._playing():
                t = min(t, self._now + self._queue.remaining_ms)
            self._step(max(t, self._now + 1))

    def _step(self, t: int) -> None:
        # A scenario change (contact, charging...) made between ticks takes effect at the start
        # of the step, i.e. at the time of the last tick, not up to STEP_MS later.
        self._check_contact()
        dt = t - self._now
        delivered = self.physics.delivered_ua(self.output.level_ua)
        self.physics.step(dt, delivered)
        sensed = self.physics.sense_current(delivered)
        self._sampler.accumulate(sensed, dt)
        ended = self._playing() and self._queue.play(dt)
        self._now = t
        self.output.advance(t)
        if ended:
            self._next_segment()
        self._check_lease()
        self._check_faults(sensed)
        if t >= self._sampler.next_due_ms:
            current = self.current_segment
            frame = self._sampler.sample(
                t,
                state=self.state,
                segment_id=p.NO_SEGMENT if current is None else current.segment_id,
                elapsed_ms=self.segment_elapsed_ms,
                contact=self._contact,
                faults=self.faults,
            )
            self.counters.samples += 1
            if frame is not None:
                self.counters.notifications += 1
                self._outbox.append(frame)
        self._check_status()

    def _playing(self) -> bool:
        return self.state is p.DeviceState.RUNNING and self._contact and len(self._queue) > 0

    def _target_ua(self) -> float:
        head = self._queue.head
        if head is None or not self._playing():
            return 0.0
        # Integer floor: intensity scaling can never round an amplitude up past its cap.
        return head.amplitude_ua * self.intensity_pct // 100

    def _retarget(self, ramp_ms: int) -> None:
        self.output.drive(self._now, self._target_ua(), ramp_ms)

    def _next_segment(self) -> None:
        head = self._queue.head
        if head is not None:
            self._retarget(head.ramp_ms)
        else:
            self.state = p.DeviceState.IDLE  # the queue ran dry: the program is complete
            self.output.off(self._now)

    def _check_contact(self) -> None:
        contact = self.physics.contact
        if contact != self._contact:
            self._contact = contact
            head = self._queue.head
            self._retarget(0 if head is None else head.ramp_ms)

    def _check_lease(self) -> None:
        if self.state in _ACTIVE and self._now - self._last_command_ms > self.limits.lease_ms:
            self.counters.lease_expiries += 1
            self._faults.lease_expired = True
            self._halt(p.DeviceState.IDLE)

    def _check_faults(self, sensed_ua: float) -> None:
        if self._faults.check(sensed_ua):
            self.counters.faults += 1
        if self._faults.latched:
            if self.state is not p.DeviceState.FAULT:
                self._halt(p.DeviceState.FAULT)
        elif self.physics.charging:
            if self.state is not p.DeviceState.CHARGING:
                self._halt(p.DeviceState.CHARGING)
        elif self.state is p.DeviceState.CHARGING:
            self.state = p.DeviceState.IDLE

    def _halt(self, state: p.DeviceState) -> None:
        """Output off at once, queue cleared, then ``state``."""
        self.output.off(self._now)
        self._queue.clear()
        self.state = state

    def _check_status(self) -> None:
        status = self.status()
        if status != self._last_status:
            self._last_status = status
            self._outbox.append(status)
