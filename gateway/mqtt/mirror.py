"""The hub as the broker should see it: turns events and telemetry into outbox entries.

:class:`HubMirror` listens (synchronously, never waiting) to the event bus and the telemetry
hub and keeps the outbox (``gateway.mqtt.outbox``) up to date: each device's discovery config
(once, when first seen) and retained state, the hub summary and the hub's discovery config
(with components other modules added), session and device events. ``tick`` (the bridge runs it
``MCGW_MQTT__TELEMETRY_HZ`` times a second, at least once a second) refreshes the states (time
left, measurements) and queues the latest telemetry frame per device. A forgotten device gets
empty retained payloads, which removes it from the broker and from Home Assistant.

It holds no connection and decides nothing about commands; the bridge owns both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.config import MqttSettings
from gateway.devices import DeviceManager
from gateway.events import DeviceStateChanged, Event, SessionStateChanged
from gateway.mqtt import discovery
from gateway.mqtt.outbox import Outbox
from gateway.mqtt.state import device_state, event_body, hub_summary, telemetry_body
from gateway.mqtt.topics import Topics, dumps, node_id
from gateway.programs import Program
from gateway.sessions import SessionManager
from gateway.states import TERMINAL_STATES, DeviceState
from gateway.telemetry import TelemetryFrame


class HubMirror:
    """See the module docstring."""

    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        *,
        version: str,
        devices: DeviceManager,
        sessions: SessionManager,
        programs: dict[str, Program],
        outbox: Outbox,
        connected: Callable[[], bool],
        session_ended: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.version = version
        self.devices = devices
        self.sessions = sessions
        self.programs = programs
        self.outbox = outbox
        self._connected = connected
        self._session_ended = session_ended
        self.hub_components: dict[str, dict[str, Any]] = {}
        self._frames: dict[str, TelemetryFrame] = {}
        self._sent: dict[str, int] = {}
        self._known: set[str] = set()

    def send(self, topic: str, payload: bytes) -> None:
        """Queue a transient message; drop (and count) it when the broker is not there."""
        if self._connected():
            self.outbox.send(topic, payload)
        else:
            self.outbox.drop()

    def publish_all(self) -> None:
        """Every retained topic again (a reconnect, Home Assistant's birth)."""
        for address in self.devices.addresses():
            self.device_changed(address)
        self.hub_changed()
        self.hub_config_changed()
        self.outbox.resend_all()

    # --- listeners (synchronous, never waiting) ---------------------------------------------------

    def on_event(self, event: Event) -> None:
        body = event_body(event)
        if body is None:
            return
        if isinstance(event, DeviceStateChanged) and event.state is DeviceState.FORGOTTEN:
            self.forget(event.address)
        elif isinstance(event, DeviceStateChanged | SessionStateChanged):
            self.device_changed(event.address)
            if isinstance(event, SessionStateChanged) and event.state in TERMINAL_STATES:
                self._session_ended(event.session_id)
            self.hub_changed()
        else:
            self.device_changed(getattr(event, "address", ""))
        self.send(self.topics.events, dumps(body))

    def on_frame(self, frame: TelemetryFrame) -> None:
        self._frames[frame.device] = frame  # the tick publishes the latest

    def tick(self, *, telemetry: bool = True) -> None:
        """Refreshed states and, with ``telemetry``, each device's latest frame if it is new."""
        for address in self.devices.addresses():
            self.device_changed(address)
            frame = self._frames.get(address)
            new = frame is not None and self._sent.get(address) != frame.seq
            if telemetry and frame is not None and new:
                self._sent[address] = frame.seq
                self.send(self.topics.telemetry(node_id(address)), dumps(telemetry_body(frame)))

    # --- what is published ------------------------------------------------------------------------

    def device_changed(self, address: str) -> None:
        managed = self.devices.find(address) if address else None
        if managed is None:
            return
        node = node_id(managed.address)
        if managed.address not in self._known:
            self._known.add(managed.address)
            if self.settings.ha_discovery:
                config = discovery.device_config(
                    self.topics,
                    address=managed.address,
                    node=node,
                    name=managed.name,
                    version=self.version,
                    programs=self.programs,
                )
                self.outbox.set(self.topics.discovery(f"mcgw_{node}"), dumps(config))
        state = device_state(
            managed,
            self.sessions.active_on(managed.address),
            self._frames.get(managed.address),
            cap_s=self.sessions.session_cap_s,
        )
        self.outbox.set(self.topics.state(node), dumps(state))

    def forget(self, address: str) -> None:
        """A forgotten device: its retained config and state are cleared (HA removes it)."""
        node = node_id(address)
        self._known.discard(address.upper())
        self._frames.pop(address.upper(), None)
        if self.settings.ha_discovery:
            self.outbox.set(self.topics.discovery(f"mcgw_{node}"), b"")
        self.outbox.set(self.topics.state(node), b"")
        self.hub_changed()

    def hub_changed(self) -> None:
        summary = hub_summary(
            self.topics.hub_id, self.version, self.devices.all(), self.sessions.all()
        )
        summary.pop("ts")  # a timestamp alone is no change
        self.outbox.set(self.topics.hub, dumps(summary))

    def hub_config_changed(self) -> None:
        if self.settings.ha_discovery:
            config = discovery.hub_config(
                self.topics, version=self.version, extra=self.hub_components
            )
            self.outbox.set(self.topics.discovery(self.topics.hub_node), dumps(config))
