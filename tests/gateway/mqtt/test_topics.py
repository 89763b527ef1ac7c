"""The bridge's pure parts: topics, command parsing, discovery payloads, the MQTT settings."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from gateway.config import MqttSettings, Settings, public_settings
from gateway.mqtt.discovery import device_config, hub_config
from gateway.mqtt.topics import Command, CommandRefused, Topics, ack, node_id, parse_command

TOPICS = Topics("mcgw", "spa/one+", "homeassistant")


def test_topics_sit_under_prefix_and_a_topic_safe_hub_id() -> None:
    assert TOPICS.availability == "mcgw/spa_one_/availability"
    assert TOPICS.state(node_id("C0:4D:43:00:00:01")) == "mcgw/spa_one_/device/c04d43000001/state"
    assert TOPICS.discovery("mcgw_c04d43000001") == (
        "homeassistant/device/mcgw_c04d43000001/config"
    )
    assert TOPICS.ha_status == "homeassistant/status"
    assert TOPICS.under("/user/3/plan/") == "mcgw/spa_one_/user/3/plan"


def test_a_valid_command_parses() -> None:
    parsed = parse_command(
        b'{"id": "a1", "command": "level", "device": "c0:4d:43:00:00:01", "level": 3}'
    )
    assert parsed == Command("level", id="a1", device="C0:4D:43:00:00:01", level=3)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"{nope", None),
        (b"[1, 2]", None),
        (b'{"command": "explode", "device": "AA"}', "command"),
        (b'{"command": "stop"}', "session_id"),
        (b'{"command": "stop", "device": "AA", "extra": 1}', "extra"),
        (b'{"command": "level", "device": "AA", "level": 9}', "level"),
        (b'{"command": "level", "device": "AA", "level": true}', "level"),
        (b'{"command": "start", "device": "AA"}', "program"),
        (b'{"command": "stop", "device": "AA/#"}', "device"),
        (b'{"id": 5, "command": "stop", "device": "AA"}', "id"),
        (b'{"command": "stop", "device": "' + b"A" * 5000 + b'"}', None),
    ],
)
def test_a_bad_command_is_refused_naming_the_field(payload: bytes, field: str | None) -> None:
    with pytest.raises(CommandRefused) as refused:
        parse_command(payload)
    assert (refused.value.kind, refused.value.field) == ("invalid", field)


def test_a_refusal_keeps_the_command_id_for_its_ack() -> None:
    with pytest.raises(CommandRefused) as refused:
        parse_command(b'{"id": "k", "command": "pause"}')
    assert refused.value.command_id == "k"
    body = ack("pause", "k", error=refused.value)
    assert body["ok"] is False
    assert body["error"]["field"] == "session_id"


def test_device_discovery_is_device_based_with_origin_and_default_entity_ids() -> None:
    config = device_config(
        TOPICS,
        address="C0:4D:43:00:00:01",
        node="c04d43000001",
        name="MC-1",
        version="1.2.3",
        programs=["quick-lift", "full-face"],
    )
    assert config["o"] == {"name": "mcgw", "sw": "1.2.3", "url": config["o"]["url"]}
    assert config["dev"]["via_device"] == TOPICS.hub_node
    text = orjson.dumps(config).decode()
    assert "object_id" not in text
    for unique_id, component in config["cmps"].items():
        assert component["default_entity_id"] == f"{component['p']}.{unique_id}"
    select = config["cmps"]["mcgw_c04d43000001_program"]
    assert select["options"] == ["full-face", "quick-lift"]
    pressed = orjson.loads(config["cmps"]["mcgw_c04d43000001_stop"]["payload_press"])
    assert parse_command(orjson.dumps(pressed)).command == "stop"


def test_other_modules_can_add_components_to_the_hub_device() -> None:
    extra = {"mcgw_user_3_due": {"p": "binary_sensor", "state_topic": TOPICS.under("user/3")}}
    config = hub_config(TOPICS, version="1", extra=extra)
    assert "mcgw_user_3_due" in config["cmps"]
    assert config["dev"]["ids"] == [TOPICS.hub_node]


def test_mqtt_is_off_by_default_and_the_url_password_is_masked() -> None:
    assert Settings().mqtt.url is None
    settings = Settings(mqtt={"url": "mqtts://hub:s3cret@broker.lan:8883"})
    shown = public_settings(settings)["mqtt"]
    assert shown["url"] == "mqtts://hub:***@broker.lan:8883"
    assert shown["topic_prefix"] == "mcgw"
    assert shown["discovery_prefix"] == "homeassistant"
    assert (shown["telemetry_hz"], shown["allow_start"], shown["ha_discovery"]) == (
        1.0,
        False,
        True,
    )


@pytest.mark.parametrize(
    "values",
    [
        {"url": "http://broker"},
        {"url": "mqtt://"},
        {"topic_prefix": "mc/#"},
        {"discovery_prefix": "/ha"},
        {"telemetry_hz": 50},
    ],
)
def test_bad_mqtt_settings_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MqttSettings(**values)  # type: ignore[arg-type]
