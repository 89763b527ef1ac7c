"""The simulated microcurrent device: the reference implementation of the firmware behaviour.

Modules, from the inside out:

- ``physics``: skin, gel, compliance limit, battery, temperature, seeded noise (pure);
- ``output``: the output set point with its ramps and the output log (pure);
- ``playback``: the play queue and position (pure);
- ``faults``: fault latching and clearing (pure);
- ``telemetry``: the sample clock and notification packing (pure);
- ``firmware``: the state machine tying them together, driven by explicit milliseconds (pure);
- ``peripheral``: a bumble GATT peripheral on a :class:`~ble.bumble.radio.VirtualRadio` that carries
  bytes between the radio and the firmware, with the scenario API for tests;
- ``control``: a local JSON-over-HTTP endpoint exposing the scenario API to other processes.
- ``bluez_dbus`` (with ``bluez_gatt``, ``bluez_serving``): the same air served as BlueZ on a D-Bus
  bus, so bleak's own BlueZ backend reaches the simulated devices (``mcgw sim --bluez-bus``).

Behaviour a gateway can rely on (docs/protocol.md states it for firmware authors):

- States IDLE, RUNNING, PAUSED, FAULT, CHARGING. START needs IDLE and a non-empty queue and plays
  the queue from the start of its first segment; PAUSE needs RUNNING; RESUME needs PAUSED;
  anything else is NACKed BAD_STATE. In FAULT or CHARGING, QUEUE_SEGMENT, START, PAUSE and RESUME
  are NACKed FAULT_ACTIVE or CHARGING.
- STOP is accepted in every state: output off at once, queue cleared, RUNNING/PAUSED -> IDLE.
- Control-point writes need an encrypted link (ATT error 0x0F otherwise), except a well-formed
  STOP, which is executed on any link; the firmware's own check NACKs REFUSED any other
  unencrypted command that reaches it.
- QUEUE_SEGMENT checks, in order: amplitude above the hard cap -> ABOVE_HARD_CAP; segment id
  0xFFFF, frequency, pulse width or duration (1..max_segment_ms) outside the limits ->
  OUT_OF_RANGE; a segment id already queued -> DUPLICATE_SEGMENT; queue full -> QUEUE_FULL. The
  queue depth counts the playing segment, which leaves the queue when it ends. When the queue runs
  dry while RUNNING the program is complete: the device goes IDLE.
- Lease: while RUNNING or PAUSED, if more than ``lease_ms`` pass without a decodable command
  (KEEPALIVE or any other, ACKed or NACKed; malformed and unencrypted ones do not count), output
  goes off, the queue is cleared, the state goes to IDLE and LEASE_EXPIRED is raised until the
  next START. The lease is not enforced in IDLE, where there is no output to stop.
- Ramps: output never steps up. Every increase ramps linearly from the present level, never
  faster than 0 -> target in 100 ms (``output.MIN_RAMP_MS``), whatever ``ramp_ms`` says; decreases
  are immediate. START, contact restored and a change to a louder segment use the segment's
  ``ramp_ms``; RESUME and SET_INTENSITY use their own. SET_INTENSITY scales every amplitude by
  ``percent`` with an integer floor.
- Contact gating: no output without skin contact (impedance open or above 200 kΩ). While contact
  is absent the playback position does not advance, so the gateway's program is never consumed
  silently; when contact returns the device ramps up again by itself. The gateway may still
  PAUSE/RESUME around a contact loss, as S5 asks.
- Faults: sensed current above hard cap + 10 %, temperature above 41 °C or a hardware fault
  latch FAULT (output off, queue cleared). CLEAR_FAULT returns to IDLE once the causes are gone
  (below 40 °C, hardware fault removed; an over-current is a transient) and is an idempotent ACK
  outside FAULT. Charging holds the device in CHARGING, leaving by itself when unplugged.
- On disconnect: output off at once, queue cleared, RUNNING/PAUSED -> IDLE, intensity back to
  100 %, telemetry back to min(50, telemetry_max_hz) Hz with one sample per notification.
- Telemetry and status report the segment at the head of the queue, and its position, while
  RUNNING or PAUSED (a paused segment is still reported); NO_SEGMENT otherwise.
- Telemetry is sampled on an absolute grid (sample ``k`` at ``k * 1000 // rate_hz`` ms after the
  last SET_TELEMETRY_RATE), in every state, and sent ``samples_per_notification`` per
  notification; rate 0 turns it off. A setting whose notifications would not fit the link's ATT
  MTU is NACKed OUT_OF_RANGE; a notification is never truncated (one that does not fit, e.g.
  before the MTU exchange, is dropped; the frame counter shows the gap). An ACK is indicated after
  every notification produced before its command. The status characteristic is notified
  whenever its value changes (state, faults, battery, queue length, intensity, current segment).
"""
