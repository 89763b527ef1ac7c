"""Treatment plans on MQTT: each user's "session due" and "adherence this week" for Home Assistant.

For every user with a plan, :class:`PlanSensors` keeps a retained state topic
``<prefix>/<hub_id>/user/<user_id>/plan`` holding ``plan_payload`` of the user's summary
(``gateway.plans.service.Summary``: due now, this week's done / expected / ratio, the plan id)
and adds two components to the hub's Home Assistant device (``plan_components``): a binary sensor
"Session due (<name>)" and a sensor "Adherence this week (<name>)" in percent, with ``done`` and
``expected`` as attributes. Both read that one state topic.

It is fed in two ways:

* at start, once: the users who have plans and each one's summary, read from storage by an owned
  task (``run``) that never delays the start; while storage is down it retries with capped
  backoff, or sooner when the planner's next ``AdherenceChanged`` shows storage is back;
* then ``AdherenceChanged`` events on the bus (the planner publishes one whenever a user's
  summary changes, and one with ``plan_id`` None when the user's last plan was deleted: the
  state topic is then cleared and the components removed). An event seen after the start read
  began wins over what that read returns for the same user.

The listener only writes into the bridge's outbox (``MqttBridge.publish_retained`` and
``add_hub_components``); nothing here waits on the broker, and nothing on a session's or a stop's
path waits on this. It decides no schedule (``gateway.plans``) and holds no connection
(``gateway.mqtt.bridge``). ``plan_payload`` and ``plan_components`` are pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from gateway.errors import GatewayError
from gateway.events import AdherenceChanged, Event, EventBus
from gateway.mqtt.topics import Topics
from gateway.plans.service import Summary
from gateway.storage import plans as store

log = logging.getLogger(__name__)

RETRY_START_S = 1.0
RETRY_MAX_S = 60.0
"""The start read is retried after 1 s, doubling up to this, while storage is down."""


def plan_suffix(user_id: int) -> str:
    """The state topic of a user's plan, under the hub's base topic."""
    return f"user/{user_id}/plan"


def plan_payload(summary: Summary) -> dict[str, Any]:
    """The retained state of a user's plan (see docs/mqtt.md)."""
    return {
        "plan_id": summary.plan_id,
        "due": summary.due,
        "week_done": summary.week_done,
        "week_expected": summary.week_expected,
        "week_credit": summary.week_credit,
        "week_ratio": summary.week_ratio,
    }


def component_ids(topics: Topics, user_id: int) -> tuple[str, str]:
    """The unique ids of a user's two components: (session due, adherence this week)."""
    unique = f"{topics.hub_node}_user_{user_id}"
    return f"{unique}_plan_due", f"{unique}_plan_adherence"


def plan_components(topics: Topics, *, user_id: int, user_name: str) -> dict[str, dict[str, Any]]:
    """A user's components for the hub's discovery config (``{unique_id: component}``)."""
    state_topic = topics.under(plan_suffix(user_id))
    due_id, adherence_id = component_ids(topics, user_id)
    due = {
        "p": "binary_sensor",
        "name": f"Session due ({user_name})",
        "unique_id": due_id,
        "default_entity_id": f"binary_sensor.{due_id}",
        "state_topic": state_topic,
        "value_template": "{{ 'ON' if value_json.due else 'OFF' }}",
    }
    adherence = {
        "p": "sensor",
        "name": f"Adherence this week ({user_name})",
        "unique_id": adherence_id,
        "default_entity_id": f"sensor.{adherence_id}",
        "state_topic": state_topic,
        # Nothing expected this week: no ratio, so the sensor is unknown (HA's "None").
        "value_template": (
            "{{ (value_json.week_ratio * 100) | round(0) | int "
            "if value_json.week_ratio is not none else 'None' }}"
        ),
        "unit_of_measurement": "%",
        "state_class": "measurement",
        "json_attributes_topic": state_topic,
        "json_attributes_template": (
            "{{ {'done': value_json.week_done, 'expected': value_json.week_expected} | tojson }}"
        ),
    }
    return {due_id: due, adherence_id: adherence}


class Sink(Protocol):
    """What this module needs of ``MqttBridge``."""

    topics: Topics

    def publish_retained(self, suffix: str, payload: dict[str, Any] | None) -> None: ...

    def add_hub_components(self, components: dict[str, dict[str, Any]]) -> None: ...

    def remove_hub_components(self, unique_ids: Iterable[str]) -> None: ...


class Named(Protocol):
    """A user as the access policy knows them (``Principal``): only the name is read."""

    @property
    def name(self) -> str: ...


class SummarySource(Protocol):
    """What this module needs of ``Planner``."""

    async def summary(self, user_id: int) -> Summary: ...


Db = Callable[..., Awaitable[Any]]


class PlanSensors:
    """See the module docstring. ``tasks.spawn(sensors.run())``; cancelling it detaches it."""

    def __init__(
        self,
        bridge: Sink,
        *,
        bus: EventBus,
        planner: SummarySource,
        db: Db,
        user: Callable[[int], Named | None],
        retry_start_s: float = RETRY_START_S,
    ) -> None:
        self.bridge = bridge
        self._bus = bus
        self._planner = planner
        self._db = db
        self._user = user
        self._retry_start_s = retry_start_s
        self._named: dict[int, str] = {}
        """Users whose components are on the hub's config, with the name they carry."""
        self._fresh: set[int] = set()
        """Users an event updated since the start read began (the read must not undo it)."""
        self._wake = asyncio.Event()
        self.started = asyncio.Event()
        """Set once the start read has published every user's state (tests wait on it)."""

    @property
    def users(self) -> set[int]:
        """Users whose sensors are published now."""
        return set(self._named)

    async def run(self) -> None:
        """Listen to the bus, publish every user's state once, then keep listening."""
        unlisten = self._bus.add_listener(self.on_event)
        try:
            await self._start_read()
            self.started.set()
            await asyncio.Event().wait()  # the listener does the rest until cancelled
        finally:
            unlisten()

    async def _start_read(self) -> None:
        delay = self._retry_start_s
        failed = False
        while True:
            try:
                owners: list[int] = await self._db(store.plan_owners)
                for user_id in owners:
                    summary = await self._planner.summary(user_id)
                    if user_id not in self._fresh:
                        self.publish(summary)
            except GatewayError as exc:
                if not failed:
                    log.warning("MQTT plan sensors: could not read plans (retrying): %s", exc)
                failed = True
            else:
                if failed:
                    log.info("MQTT plan sensors: plans read, sensors published")
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            delay = min(delay * 2, RETRY_MAX_S)

    def on_event(self, event: Event) -> None:
        """The bus listener (synchronous, never waiting)."""
        if not isinstance(event, AdherenceChanged):
            return
        self._fresh.add(event.user_id)
        self._wake.set()  # the planner read storage: a start read still failing may retry now
        self.publish(
            Summary(
                user_id=event.user_id,
                plan_id=event.plan_id,
                due=event.due,
                week_done=event.week_done,
                week_expected=event.week_expected,
                week_credit=event.week_credit,
            )
        )

    def publish(self, summary: Summary) -> None:
        """A user's state and components; cleared and removed when they have no plan."""
        user_id = summary.user_id
        if summary.plan_id is None:
            self.bridge.publish_retained(plan_suffix(user_id), None)
            if self._named.pop(user_id, None) is not None:
                self.bridge.remove_hub_components(component_ids(self.bridge.topics, user_id))
            return
        self.bridge.publish_retained(plan_suffix(user_id), plan_payload(summary))
        known = self._user(user_id)
        name = known.name if known is not None else f"user {user_id}"
        if self._named.get(user_id) != name:
            self._named[user_id] = name
            self.bridge.add_hub_components(
                plan_components(self.bridge.topics, user_id=user_id, user_name=name)
            )
