"""MQTT: the hub on a broker (state, Home Assistant discovery, commands) and the fleet view.

``bridge`` supervises the connection and publishes; ``topics`` names topics and parses
commands (pure); ``state`` and ``discovery`` build payloads; ``commands`` decides and runs
commands; ``fleet`` reads every hub's retained state back; ``plans`` publishes each user's
treatment plan state and Home Assistant sensors. docs/mqtt.md describes the topics.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from gateway.mqtt.bridge import MqttBridge, MqttStatus

__all__ = ["MqttBridge", "MqttStatus", "hub_version"]


def hub_version() -> str:
    """The installed mcgw version (the discovery origin's ``sw``)."""
    try:
        return version("mcgw")
    except PackageNotFoundError:
        return "0+unknown"
