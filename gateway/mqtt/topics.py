"""MQTT topics and payloads of one hub: pure functions and value types, no socket, no asyncio.

Every topic of a hub sits under ``<prefix>/<hub_id>/`` (docs/mqtt.md lists them with their
payloads):

* ``availability``: ``online`` / ``offline``, retained; ``offline`` is also the last will;
* ``hub``: the hub's summary (devices, live sessions), retained; ``mcgw fleet`` reads it;
* ``device/<node>/state``: one device's state, retained;
* ``device/<node>/telemetry``: its down-sampled telemetry, not retained;
* ``events``: session and device events, not retained;
* ``command`` (in) and ``ack`` (out): JSON commands with ids, and their answers.

``<node>`` is a device's address without separators, lower case (``c04d43000001``): topic-safe
and the same on every hub. ``parse_command`` turns a command message into a :class:`Command`
or raises :class:`CommandRefused` naming the field and why; it decides nothing about who may
do what (``gateway.mqtt.commands`` does, through the access policy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

MAX_COMMAND_BYTES = 4096
COMMANDS = frozenset({"stop", "pause", "resume", "level", "start"})
_UNSAFE = re.compile(r"[+#/\x00]")
_ID = re.compile(r"^[\x21-\x7e]{1,100}$")
_ADDRESS = re.compile(r"^[0-9A-Za-z][0-9A-Za-z:_-]{0,63}$")
_SESSION_ID = re.compile(r"^[0-9a-fA-F-]{1,36}$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def node_id(address: str) -> str:
    """A device's topic level and Home Assistant object id: ``C0:4D:..`` -> ``c04d..``."""
    return re.sub(r"[^0-9a-z]", "", address.lower())


def topic_level(text: str) -> str:
    """``text`` safe as one topic level (wildcards, ``/`` and NUL become ``_``)."""
    return _UNSAFE.sub("_", text) or "_"


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names of one hub."""

    prefix: str
    hub_id: str
    discovery_prefix: str = "homeassistant"

    @property
    def base(self) -> str:
        return f"{self.prefix}/{topic_level(self.hub_id)}"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def hub(self) -> str:
        return f"{self.base}/hub"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def command(self) -> str:
        return f"{self.base}/command"

    @property
    def ack(self) -> str:
        return f"{self.base}/ack"

    @property
    def ha_status(self) -> str:
        """Home Assistant's birth and last-will topic."""
        return f"{self.discovery_prefix}/status"

    @property
    def hub_node(self) -> str:
        return f"mcgw_hub_{node_id(self.hub_id) or 'hub'}"

    def state(self, node: str) -> str:
        return f"{self.base}/device/{node}/state"

    def telemetry(self, node: str) -> str:
        return f"{self.base}/device/{node}/telemetry"

    def under(self, suffix: str) -> str:
        """A topic another module publishes under this hub (``user/3/plan``)."""
        return f"{self.base}/{suffix.strip('/')}"

    def discovery(self, object_id: str) -> str:
        """Home Assistant device-based discovery: ``<discovery_prefix>/device/<id>/config``."""
        return f"{self.discovery_prefix}/device/{object_id}/config"


def fleet_filters(prefix: str) -> tuple[str, ...]:
    """What a fleet reader subscribes to: every hub's availability, summary and device states."""
    return (f"{prefix}/+/availability", f"{prefix}/+/hub", f"{prefix}/+/device/+/state")


def dumps(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


# --- commands ------------------------------------------------------------------------------------


class CommandRefused(Exception):
    """A command that changes nothing; ``kind`` and ``field`` go into the error ack."""

    def __init__(self, kind: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.field = field
        self.command_id: str | None = None
        """The id of the command refused, when it had a valid one."""


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed command. A session is named by ``session_id`` or by its ``device``."""

    command: str
    id: str | None = None
    device: str | None = None
    session_id: str | None = None
    level: int | None = None
    program: str | None = None


def parse_command(payload: bytes) -> Command:
    """The command in ``payload`` (a JSON object), or ``CommandRefused`` (kind ``invalid``)."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandRefused("invalid", f"a command is at most {MAX_COMMAND_BYTES} bytes")
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise CommandRefused("invalid", f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandRefused("invalid", "a command is a JSON object")
    command_id = _text(data, "id", _ID, "1-100 printable ASCII characters")
    try:
        return _command(data, command_id)
    except CommandRefused as exc:
        exc.command_id = command_id
        raise


def _command(data: dict[str, Any], command_id: str | None) -> Command:
    name = data.get("command")
    if not isinstance(name, str) or name not in COMMANDS:
        raise CommandRefused(
            "invalid", f"unknown command {name!r}; one of {sorted(COMMANDS)}", "command"
        )
    unknown = set(data) - {"id", "command", "device", "session_id", "level", "program"}
    if unknown:
        raise CommandRefused("invalid", f"unknown field(s) {sorted(unknown)}", min(unknown))
    device = _text(data, "device", _ADDRESS, "a device address")
    session_id = _text(data, "session_id", _SESSION_ID, "a session id")
    program = _text(data, "program", _SLUG, "a program slug")
    level = data.get("level")
    if level is not None and (type(level) is not int or not 1 <= level <= 5):
        raise CommandRefused("invalid", "level must be an integer 1-5", "level")
    if name == "start" and (device is None or program is None):
        missing = "device" if device is None else "program"
        raise CommandRefused("invalid", "start needs device and program", missing)
    if name != "start" and device is None and session_id is None:
        raise CommandRefused("invalid", f"{name} needs session_id or device", "session_id")
    if name == "level" and level is None:
        raise CommandRefused("invalid", "level needs level (1-5)", "level")
    return Command(
        command=name,
        id=command_id,
        device=device.upper() if device else None,
        session_id=session_id.lower() if session_id else None,
        level=level,
        program=program,
    )


def _text(data: dict[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise CommandRefused("invalid", f"{name} must be {what}", name)
    return value


def ack(
    command: str | None,
    command_id: str | None,
    *,
    session: dict[str, Any] | None = None,
    error: CommandRefused | None = None,
) -> dict[str, Any]:
    """The ack message: ``ok`` with the session it acted on, or the error."""
    answer: dict[str, Any] = {"id": command_id, "command": command, "ok": error is None}
    if error is None:
        answer["session"] = session
    else:
        answer["error"] = {"kind": error.kind, "field": error.field, "detail": error.detail}
    return answer
