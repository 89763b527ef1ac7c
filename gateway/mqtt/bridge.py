"""The MQTT bridge: a supervised broker connection that mirrors the hub and takes commands.

``MqttBridge.run`` is one long-lived task (owned by the runtime). It connects with the hub's
last will (``offline``, retained), publishes ``online`` once the broker has accepted the
connection, subscribes to the command topic and Home Assistant's status topic, then publishes
every retained topic it holds (discovery, device states, the hub summary). A lost, refused or
silent connection is retried with capped exponential backoff and jitter; each loss is logged
once and each recovery once, and ``status`` (for /api/v1/health and /metrics) says where it is.

Nothing of the hub ever waits for the broker. The mirror (``gateway.mqtt.mirror``) listens to
the event bus and the telemetry hub and only writes into the outbox (``gateway.mqtt.outbox``):
the latest payload per retained topic, and a bounded queue of transient messages that drops
its oldest, counted, when the broker is slow or away. One publisher task drains the outbox
while connected; every publish has a timeout, and a publish that times out ends the connection
(retried like any loss; on every reconnect every retained topic is published again, so a
broker that lost its retained messages gets them back). Commands run in their own tasks, so a
slow pause never delays a stop, and the stop path itself (``gateway.mqtt.commands``) never
touches the broker.

Extension points for other modules (a plans feature publishing per-user entities):

* ``publish_retained(suffix, payload)`` publishes JSON retained at ``<prefix>/<hub_id>/<suffix>``
  (the latest value is kept and re-published on every reconnect); ``payload=None`` clears it;
* ``add_hub_components(components)`` adds Home Assistant components (``{unique_id: component}``
  each with its own ``state_topic``, e.g. ``bridge.topics.under("user/3/plan")``) to the hub's
  discovery config; ``remove_hub_components(ids)`` takes them away again.

This module does not decide who may command what (``gateway.mqtt.commands``), what is published
(``gateway.mqtt.mirror``) nor build payload bodies (``gateway.mqtt.state``, ``.discovery``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import aiomqtt

from gateway.access import AccessPolicy
from gateway.config import MqttSettings
from gateway.devices import DeviceManager
from gateway.events import EventBus
from gateway.mqtt.commands import CommandHandler
from gateway.mqtt.connect import CONNECT_TIMEOUT_S, broker_address, make_client
from gateway.mqtt.mirror import HubMirror
from gateway.mqtt.outbox import Outbox
from gateway.mqtt.topics import Topics, dumps, node_id
from gateway.programs import Program
from gateway.sessions import SessionManager
from gateway.tasks import TaskOwner
from gateway.telemetry import TelemetryHub

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 5.0
DISCONNECT_TIMEOUT_S = 1.0
BACKOFF_START_S = 0.5
TRANSIENT_LIMIT = 1000
"""Events, acks and telemetry waiting for the broker beyond which the oldest are dropped."""
HA_BIRTH_DELAY_S = (0.5, 2.0)
"""Republish discovery this long (uniform) after Home Assistant says ``online``: HA asks for
it, and every integration answering at once would flood it."""
COMMANDS_IN_FLIGHT = 32
"""Commands running at once beyond which new ones (stop excepted) are refused as busy."""


MqttState = Literal["connecting", "up", "down"]


@dataclass
class MqttStatus:
    """Where the bridge is; read by health and metrics, never waited on."""

    state: MqttState = "connecting"
    """``connecting`` (first attempt), ``up``, ``down`` (waiting to retry)."""
    detail: str = "not connected yet"
    since: float = field(default_factory=time.time)
    reconnects: int = 0
    failed_attempts: int = 0
    published: int = 0
    dropped: int = 0
    """Transient messages (telemetry, events, acks) dropped while the broker was slow or away."""

    @property
    def up(self) -> bool:
        return self.state == "up"


class MqttBridge:
    """See the module docstring. Build it, ``tasks.spawn(bridge.run())``, ``await close()``."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        hub_id: str,
        version: str,
        devices: DeviceManager,
        sessions: SessionManager,
        access: AccessPolicy,
        programs: dict[str, Program],
        bus: EventBus,
        hub: TelemetryHub,
        tasks: TaskOwner,
        backoff_start_s: float = BACKOFF_START_S,
        ha_birth_delay_s: tuple[float, float] = HA_BIRTH_DELAY_S,
    ) -> None:
        assert settings.url is not None
        self.settings = settings
        self.topics = Topics(settings.topic_prefix, hub_id, settings.discovery_prefix)
        self.version = version
        self.devices = devices
        self.sessions = sessions
        self.programs = programs
        self.tasks = tasks
        self.backoff_start_s = backoff_start_s
        self.ha_birth_delay_s = ha_birth_delay_s
        self.commands = CommandHandler(
            settings, sessions=sessions, access=access, programs=programs
        )
        self._status = MqttStatus()
        self._rng = random.Random()  # noqa: S311 - jitter, not a secret
        self.outbox = Outbox(TRANSIENT_LIMIT)
        self.mirror = HubMirror(
            settings,
            self.topics,
            version=version,
            devices=devices,
            sessions=sessions,
            programs=programs,
            outbox=self.outbox,
            connected=lambda: self._status.up,
            session_ended=self.commands.started_here.discard,
        )
        self._closing = asyncio.Event()
        self._in_flight = 0
        self._task: asyncio.Task[Any] | None = None
        self._unlisten = [
            bus.add_listener(self.mirror.on_event),
            hub.add_listener(self.mirror.on_frame),
        ]

    # --- the public face ------------------------------------------------------------------------

    def publish_retained(self, suffix: str, payload: dict[str, Any] | None) -> None:
        """Publish ``payload`` retained at ``<prefix>/<hub_id>/<suffix>``; None clears it."""
        self.outbox.set(self.topics.under(suffix), b"" if payload is None else dumps(payload))

    def add_hub_components(self, components: dict[str, dict[str, Any]]) -> None:
        """Add Home Assistant components to the hub's discovery config (see the docstring)."""
        self.mirror.hub_components.update(components)
        self.mirror.hub_config_changed()

    def remove_hub_components(self, unique_ids: Iterable[str]) -> None:
        for unique_id in unique_ids:
            self.mirror.hub_components.pop(unique_id, None)
        self.mirror.hub_config_changed()

    @property
    def status(self) -> MqttStatus:
        """Where the connection is, with the outbox's counters (for health and metrics)."""
        self._status.published = self.outbox.published
        self._status.dropped = self.outbox.dropped
        return self._status

    @property
    def backlog(self) -> int:
        """Messages waiting for the broker: retained topics not yet confirmed, and transient."""
        return len(self.outbox)

    # --- the supervisor -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, and reconnect with capped backoff and jitter until closed."""
        self.mirror.publish_all()
        self._task = asyncio.current_task()
        ticker = asyncio.create_task(self._ticker(), name="mqtt:ticker")
        try:
            await self._supervise()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _supervise(self) -> None:
        backoff = self.backoff_start_s
        while not self._closing.is_set():
            try:
                await self._connect_and_serve()
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                if self._status.up:
                    backoff = self.backoff_start_s
                    log.warning("MQTT broker connection lost: %s; reconnecting", reason)
                elif self._status.failed_attempts == 0:
                    log.warning(
                        "MQTT broker %s not reachable: %s; retrying with backoff",
                        self._where(),
                        reason,
                    )
                self._status.failed_attempts += 1
                self._set_status("down", reason)
            if self._closing.is_set():
                break
            delay = backoff * (0.5 + self._rng.random())
            backoff = min(backoff * 2, self.settings.reconnect_max_backoff_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()

    async def close(self) -> None:
        """Publish what is pending and ``offline`` (bounded in time), then disconnect."""
        self.outbox.set(self.topics.availability, b"offline")
        self._closing.set()
        for unlisten in self._unlisten:
            unlisten()
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=2 * DISCONNECT_TIMEOUT_S)

    def _where(self) -> str:
        return broker_address(self.settings)

    async def _connect_and_serve(self) -> None:
        client = make_client(
            self.settings,
            identifier=f"mcgw-{node_id(self.topics.hub_id)}-{os.getpid():x}",
            will=aiomqtt.Will(self.topics.availability, b"offline", qos=1, retain=True),
        )
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await client.__aenter__()
        try:
            await client.subscribe(self.topics.command, qos=1)
            if self.settings.ha_discovery:
                await client.subscribe(self.topics.ha_status, qos=1)
            if self._status.failed_attempts or self._status.reconnects:
                log.info("MQTT broker connection back (%s)", self._where())
            else:
                log.info("MQTT broker connected (%s)", self._where())
            self._status.reconnects += 1
            self._status.failed_attempts = 0
            self._set_status("up", f"connected to {self._where()}")
            self.outbox.set(self.topics.availability, b"online")
            self.mirror.publish_all()
            # Availability first: retained state published before it would read as stale.
            self.outbox.first(self.topics.availability)
            await self._serve(client)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                    await client.__aexit__(None, None, None)

    async def _serve(self, client: aiomqtt.Client) -> None:
        jobs = [
            asyncio.create_task(
                self.outbox.drain(partial(_publish, client)), name="mqtt:publisher"
            ),
            asyncio.create_task(self._receiver(client), name="mqtt:receiver"),
        ]
        closing = asyncio.create_task(self._closing.wait(), name="mqtt:closing")
        try:
            done, _ = await asyncio.wait([*jobs, closing], return_when=asyncio.FIRST_COMPLETED)
        finally:
            # The publisher stops before the flush drains the outbox itself (one drain at a
            # time); a publish it was in the middle of stays queued and goes out again.
            for task in [*jobs, closing]:
                task.cancel()
            await asyncio.gather(*jobs, closing, return_exceptions=True)
        if closing in done:
            await self._flush(client)
            return
        for job in done:
            job.result()  # raises what ended the connection
        raise aiomqtt.MqttError("the broker connection ended")

    async def _flush(self, client: aiomqtt.Client) -> None:
        """On close: what is pending, ``offline`` last, within a second."""
        self.outbox.hold(self.topics.availability)
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await self.outbox.drain(partial(_publish, client), forever=False)
                await client.publish(self.topics.availability, b"offline", qos=1, retain=True)

    def _set_status(self, state: MqttState, detail: str) -> None:
        if state != self._status.state:
            self._status.since = time.time()
        self._status.state = state
        self._status.detail = detail

    async def _ticker(self) -> None:
        """The mirror's tick, ``MCGW_MQTT__TELEMETRY_HZ`` times a second (at least once);
        it runs connected or not: telemetry while the broker is away is dropped and counted."""
        hz = self.settings.telemetry_hz
        period = 1.0 / max(hz, 1.0)
        # Below 1 Hz, telemetry goes out every n-th tick (the states still refresh each second).
        every = max(1, round(1.0 / (hz * period))) if hz > 0 else 0
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        ticks = 0
        while True:
            deadline = max(deadline + period, loop.time())  # no catch-up burst after a stall
            await asyncio.sleep(deadline - loop.time())
            ticks += 1
            self.mirror.tick(telemetry=every > 0 and ticks % every == 0)

    # --- what comes in ----------------------------------------------------------------------

    async def _receiver(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if topic == self.topics.ha_status:
                if payload.strip().lower() == b"online":
                    self.tasks.spawn(self._ha_birth(), name="mqtt:ha-birth")
            elif topic == self.topics.command:
                self._command(payload)

    def _command(self, payload: bytes) -> None:
        stop = b'"stop"' in payload  # a stop is never refused as busy (parsed properly later)
        if self._in_flight >= COMMANDS_IN_FLIGHT and not stop:
            self.mirror.send(
                self.topics.ack,
                dumps(
                    {
                        "id": None,
                        "command": None,
                        "ok": False,
                        "error": {
                            "kind": "busy",
                            "field": None,
                            "detail": "too many commands at once",
                        },
                    }
                ),
            )
            return
        self._in_flight += 1
        self.tasks.spawn(self._run_command(payload), name="mqtt:command")

    async def _run_command(self, payload: bytes) -> None:
        try:
            answer = await self.commands.handle(payload)
        finally:
            self._in_flight -= 1
        self.mirror.send(self.topics.ack, dumps(answer))

    async def _ha_birth(self) -> None:
        low, high = self.ha_birth_delay_s
        await asyncio.sleep(self._rng.uniform(low, high))
        log.info("Home Assistant is back online: publishing discovery again")
        self.mirror.publish_all()


async def _publish(client: aiomqtt.Client, topic: str, payload: bytes, retain: bool) -> None:
    """Retained state at QoS 1 (it must arrive), transient messages at QoS 0."""
    await client.publish(
        topic, payload, qos=1 if retain else 0, retain=retain, timeout=PUBLISH_TIMEOUT_S
    )
