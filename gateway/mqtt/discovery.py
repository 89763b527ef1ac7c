"""Home Assistant device-based discovery payloads: one retained config per device.

``device_config`` is the payload of ``<discovery_prefix>/device/mcgw_<node>/config`` for one
microcurrent device: the device block (``via_device`` the hub), the origin block (``o``), the
hub's availability, the device's state topic shared by every component, and the components
(``cmps``): battery, temperature, contact quality, current, impedance, signal (diagnostic),
time left; the connected / in-session / skin-contact binary sensors; a Stop button, a program
select and an intensity number, which publish JSON commands on the hub's command topic (so HA's
commands go through the same checks as any other, ``gateway.mqtt.commands``). Every component
has a ``unique_id`` and a ``default_entity_id`` (not the deprecated ``object_id``).

``hub_config`` is the hub's own device (what ``via_device`` points at) with its summary sensors
and any extra components other modules registered (``MqttBridge.add_hub_components``).

Pure functions: no socket, no settings object; an empty payload (``b""``) published retained
on the same topic removes a device from Home Assistant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.mqtt.topics import Topics

ORIGIN_URL = "https://github.com/mcgw/mcgw"
MANUFACTURER = "mcgw"


def origin(version: str) -> dict[str, str]:
    return {"name": "mcgw", "sw": version, "url": ORIGIN_URL}


def _sensor(
    unique: str,
    key: str,
    name: str,
    *,
    suffix: str | None = None,
    unit: str | None = None,
    device_class: str | None = None,
    diagnostic: bool = False,
    measurement: bool = True,
) -> dict[str, Any]:
    component: dict[str, Any] = {
        "p": "sensor",
        "name": name,
        "unique_id": f"{unique}_{suffix or key}",
        "default_entity_id": f"sensor.{unique}_{suffix or key}",
        "value_template": f"{{{{ value_json.{key} }}}}",
    }
    if unit is not None:
        component["unit_of_measurement"] = unit
    if device_class is not None:
        component["device_class"] = device_class
    if measurement:
        component["state_class"] = "measurement"
    if diagnostic:
        component["entity_category"] = "diagnostic"
    return component


def _binary(unique: str, key: str, name: str, device_class: str | None) -> dict[str, Any]:
    component: dict[str, Any] = {
        "p": "binary_sensor",
        "name": name,
        "unique_id": f"{unique}_{key}",
        "default_entity_id": f"binary_sensor.{unique}_{key}",
        "value_template": (
            f"{{{{ 'ON' if value_json.{key} else ('OFF' if value_json.{key} is false "
            "else 'None') }}"
        ),
    }
    if device_class is not None:
        component["device_class"] = device_class
    return component


def device_config(
    topics: Topics,
    *,
    address: str,
    node: str,
    name: str,
    version: str,
    programs: Iterable[str],
) -> dict[str, Any]:
    """The discovery payload of one device (see the module docstring)."""
    unique = f"mcgw_{node}"
    command = f'"device":"{address}"'
    time_left = _sensor(unique, "time_left", "Time left", unit="s", device_class="duration")
    time_left["value_template"] = (
        "{{ value_json.session.time_left_s if value_json.session else 0 }}"
    )
    components: dict[str, dict[str, Any]] = {
        "battery": _sensor(
            unique, "battery_pct", "Battery", suffix="battery", unit="%", device_class="battery"
        ),
        "temperature": _sensor(
            unique,
            "temperature_c",
            "Temperature",
            suffix="temperature",
            unit="°C",
            device_class="temperature",
        ),
        "contact": _sensor(
            unique, "contact_quality", "Contact quality", suffix="contact", unit="%"
        ),
        "current": _sensor(unique, "current_ua", "Current", suffix="current", unit="µA"),
        "impedance": _sensor(unique, "impedance_ohm", "Impedance", suffix="impedance", unit="Ω"),
        "signal": _sensor(
            unique,
            "signal_dbm",
            "Signal",
            suffix="signal",
            unit="dBm",
            device_class="signal_strength",
            diagnostic=True,
        ),
        "time_left": time_left,
        "connected": _binary(unique, "connected", "Connected", "connectivity"),
        "in_session": _binary(unique, "in_session", "In session", "running"),
        "skin_contact": _binary(unique, "skin_contact", "Skin contact", None),
        "stop": {
            "p": "button",
            "name": "Stop",
            "unique_id": f"{unique}_stop",
            "default_entity_id": f"button.{unique}_stop",
            "command_topic": topics.command,
            "payload_press": '{"command":"stop",' + command + "}",
        },
        "program": {
            "p": "select",
            "name": "Program",
            "unique_id": f"{unique}_program",
            "default_entity_id": f"select.{unique}_program",
            "command_topic": topics.command,
            "command_template": '{"command":"start",' + command + ',"program":"{{ value }}"}',
            "options": sorted(programs),
            "value_template": "{{ value_json.session.program if value_json.session else None }}",
        },
        "intensity": {
            "p": "number",
            "name": "Intensity",
            "unique_id": f"{unique}_intensity",
            "default_entity_id": f"number.{unique}_intensity",
            "command_topic": topics.command,
            "command_template": '{"command":"level",' + command + ',"level":{{ value | int }}}',
            "min": 1,
            "max": 5,
            "step": 1,
            "mode": "slider",
            "value_template": "{{ value_json.session.level if value_json.session else None }}",
        },
    }
    return {
        "dev": {
            "ids": [unique],
            "name": name,
            "mf": MANUFACTURER,
            "mdl": "microcurrent device",
            "via_device": topics.hub_node,
        },
        "o": origin(version),
        "avty_t": topics.availability,
        "stat_t": topics.state(node),
        "qos": 1,
        "cmps": {component["unique_id"]: component for component in components.values()},
    }


def hub_config(
    topics: Topics,
    *,
    version: str,
    extra: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The hub's own device: devices and live sessions, plus components registered by other
    modules (each carries its own ``state_topic``)."""
    unique = topics.hub_node
    devices = _sensor(unique, "devices", "Devices", measurement=True)
    devices["value_template"] = "{{ value_json.devices | count }}"
    sessions = _sensor(unique, "sessions", "Live sessions", measurement=True)
    sessions["value_template"] = "{{ value_json.sessions | count }}"
    components = {f"{unique}_devices": devices, f"{unique}_sessions": sessions, **(extra or {})}
    return {
        "dev": {
            "ids": [unique],
            "name": f"mcgw hub {topics.hub_id}",
            "mf": MANUFACTURER,
            "mdl": "mcgw hub",
            "sw": version,
        },
        "o": origin(version),
        "avty_t": topics.availability,
        "stat_t": topics.hub,
        "qos": 1,
        "cmps": components,
    }
