"""Settings: what load_settings refuses, how it says so, and what `config show` may print."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import (
    DEFAULT_ZONE_CAPS_UA,
    InvalidSettings,
    SafetySettings,
    Settings,
    default_database_url,
    env_variable,
    load_settings,
    mask_url,
    public_settings,
    setting_fields,
)
from gateway.errors import GatewayError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MCGW_* variable from the developer's shell; the user data dir inside tmp_path."""
    for name in [name for name in os.environ if name.upper().startswith("MCGW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettings) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- 1. zone caps can only be lowered -------------------------------------------------------------


def test_a_zone_cap_above_its_default_is_refused_with_the_setting_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refused(monkeypatch, MCGW_SAFETY__ZONE_CAPS_UA='{"eye_area": 400}')
    assert "MCGW_SAFETY__ZONE_CAPS_UA" in message
    assert "safety.zone_caps_ua" in message
    assert "zone caps can only be lowered" in message
    assert "400" in message
    assert "200" in message


def test_zone_caps_may_be_lowered_or_kept_and_unnamed_zones_keep_their_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MCGW_SAFETY__ZONE_CAPS_UA", '{"eye_area": 150, "NECK": 300}')
    caps = load_settings().safety.zone_caps_ua
    assert caps == {**DEFAULT_ZONE_CAPS_UA, "eye_area": 150, "neck": 300}


@pytest.mark.parametrize("zone", sorted(DEFAULT_ZONE_CAPS_UA))
def test_no_zone_cap_can_be_raised_on_the_model_either(zone: str) -> None:
    with pytest.raises(ValidationError, match="can only be lowered"):
        SafetySettings(zone_caps_ua={zone: DEFAULT_ZONE_CAPS_UA[zone] + 1})


def test_the_hub_cap_keeps_its_absolute_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCGW_SAFETY__HUB_CAP_UA", "500")
    assert load_settings().safety.hub_cap_ua == 500
    message = refused(monkeypatch, MCGW_SAFETY__HUB_CAP_UA="501")
    assert "MCGW_SAFETY__HUB_CAP_UA (safety.hub_cap_ua)" in message
    assert "500" in message


# --- 2. MCGW_CONFIG_FILE must name a readable TOML file ------------------------------------------


def test_a_missing_config_file_is_an_error_naming_the_file_and_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "mcgw.toml"
    message = refused(monkeypatch, MCGW_CONFIG_FILE=str(missing))
    assert f"MCGW_CONFIG_FILE={missing}" in message
    assert "no such file" in message


def test_an_unreadable_config_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A directory: unreadable as a file whoever runs the test (root reads a chmod 000 file).
    message = refused(monkeypatch, MCGW_CONFIG_FILE=str(tmp_path))
    assert f"MCGW_CONFIG_FILE={tmp_path}" in message
    assert "cannot read" in message


@pytest.mark.parametrize("content", [b"[safety\nhub_cap_ua = 300\n", b"hub_id = \xff\n"])
def test_a_config_file_that_is_not_toml_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "mcgw.toml"
    path.write_bytes(content)
    message = refused(monkeypatch, MCGW_CONFIG_FILE=str(path))
    assert f"MCGW_CONFIG_FILE={path}" in message
    assert "not a valid TOML file" in message


def test_the_config_file_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "mcgw.toml"
    path.write_text('hub_id = "from-file"\n[safety]\nhub_cap_ua = 300\nmax_session_min = 15\n')
    monkeypatch.setenv("MCGW_CONFIG_FILE", str(path))
    monkeypatch.setenv("MCGW_SAFETY__HUB_CAP_UA", "250")
    settings = load_settings()
    assert settings.hub_id == "from-file"
    assert settings.safety.hub_cap_ua == 250
    assert settings.safety.max_session_min == 15


def test_a_misspelt_key_in_the_config_file_is_refused_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "mcgw.toml"
    path.write_text("[safety]\nhub_cap = 300\n")
    message = refused(monkeypatch, MCGW_CONFIG_FILE=str(path))
    assert f"unknown setting safety.hub_cap in MCGW_CONFIG_FILE={path}" in message
    assert "did you mean safety.hub_cap_ua?" in message


def test_a_bad_value_in_the_config_file_names_its_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "mcgw.toml"
    path.write_text("[safety.zone_caps_ua]\nbrow = 300\n")
    message = refused(monkeypatch, MCGW_CONFIG_FILE=str(path))
    assert "safety.zone_caps_ua" in message
    assert "can only be lowered" in message


# --- 3. unknown MCGW_* variables ------------------------------------------------------------------


def test_a_misspelt_variable_is_refused_with_the_closest_valid_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refused(monkeypatch, MCGW_SAFETY__HUB_CAP="300")
    assert message == (
        "invalid settings: unknown setting MCGW_SAFETY__HUB_CAP; "
        "did you mean MCGW_SAFETY__HUB_CAP_UA?"
    )


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("MCGW_SAFETY_HUB_CAP_UA", "MCGW_SAFETY__HUB_CAP_UA"),
        ("MCGW_LOGLEVEL", "MCGW_LOG_LEVEL"),
        ("MCGW_DB_URL", "MCGW_DB__URL"),
        ("MCGW_SAFETY__ZONE_CAPS_UA__EYE_AREA", "MCGW_SAFETY__ZONE_CAPS_UA"),
        ("MCGW_CONFIGFILE", "MCGW_CONFIG_FILE"),
    ],
)
def test_suggestions(monkeypatch: pytest.MonkeyPatch, typo: str, meant: str) -> None:
    message = refused(monkeypatch, **{typo: "1"})
    assert f"unknown setting {typo}; did you mean {meant}?" in message


def test_a_name_close_to_nothing_points_at_the_settings_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refused(monkeypatch, MCGW_WHATEVER="1")
    assert "unknown setting MCGW_WHATEVER; README.md lists every setting" in message


def test_every_setting_of_the_model_is_a_valid_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [env_variable(path) for path, _field in setting_fields()]
    assert "MCGW_SAFETY__HUB_CAP_UA" in names
    assert "MCGW_API__TRUSTED_PROXIES" in names
    defaults = Settings().model_dump(mode="json")
    for path, _field in setting_fields():
        value = defaults
        for part in path:
            value = value[part]
        if value is None:
            continue  # an unset optional setting has no environment form
        monkeypatch.setenv(
            env_variable(path), value if isinstance(value, str) else json.dumps(value)
        )
    assert load_settings().model_dump(mode="json") == defaults


def test_names_are_matched_case_insensitively_like_pydantic_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("mcgw_safety__hub_cap_ua", "300")
    assert load_settings().safety.hub_cap_ua == 300
    message = refused(monkeypatch, mcgw_safety__hub_cap="300")
    assert "unknown setting mcgw_safety__hub_cap; did you mean MCGW_SAFETY__HUB_CAP_UA?" in message


def test_the_projects_tooling_variables_are_not_settings_and_not_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MCGW_BENCH_GC", "off")
    monkeypatch.setenv("MCGW_PG_PASSWORD", "compose-only")
    load_settings()


def test_variables_of_other_programs_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_POSTGRES_URL", "postgresql+psycopg://x@h/db")
    monkeypatch.setenv("XMCGW_THING", "1")
    load_settings()


# --- 4. every invalid value names its setting -----------------------------------------------------


def test_json_that_does_not_parse_names_the_variable_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refused(monkeypatch, MCGW_SAFETY__ZONE_CAPS_UA="notjson")
    assert "MCGW_SAFETY__ZONE_CAPS_UA (safety.zone_caps_ua) is not valid JSON" in message
    assert 'e.g. MCGW_SAFETY__ZONE_CAPS_UA=\'{"eye_area": 150' in message


def test_a_list_setting_with_bad_json_shows_a_list_example(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refused(monkeypatch, MCGW_API__TRUSTED_PROXIES="127.0.0.1")
    assert "MCGW_API__TRUSTED_PROXIES (api.trusted_proxies) is not valid JSON" in message
    assert "'[\"127.0.0.1\"]'" in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "MCGW_SAFETY__MAX_SESSION_MIN",
            "31",
            "MCGW_SAFETY__MAX_SESSION_MIN (safety.max_session_min)",
        ),
        ("MCGW_LOG_LEVEL", "loud", "MCGW_LOG_LEVEL (log_level): log_level must be"),
        ("MCGW_BLE__MODE", "bogus", "MCGW_BLE__MODE (ble.mode): unknown BLE mode 'bogus'"),
        ("MCGW_DB__URL", "mysql://x", "MCGW_DB__URL (db.url): database url must start"),
        ("MCGW_API__CORS_ORIGINS", "[1]", "MCGW_API__CORS_ORIGINS (api.cors_origins[0])"),
        (
            "MCGW_SAFETY__ZONE_CAPS_UA",
            '{"brow": "x"}',
            "MCGW_SAFETY__ZONE_CAPS_UA (safety.zone_caps_ua['brow'])",
        ),
        ("MCGW_API__TRUSTED_PROXIES", '["10.0.0.1/8"]', "not an IP address or CIDR network"),
        ("MCGW_API__TRUSTED_PROXIES", '["proxy.lan"]', "not an IP address or CIDR network"),
        ("MCGW_API__WS_MAX_CONNECTIONS", "0", "MCGW_API__WS_MAX_CONNECTIONS (api.ws_max_"),
        ("MCGW_API__WS_MAX_PER_TOKEN", "1001", "MCGW_API__WS_MAX_PER_TOKEN (api.ws_max_per"),
    ],
)
def test_invalid_values_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    assert expected in refused(monkeypatch, **{name: value})


def test_every_problem_is_listed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, MCGW_SAFETY__HUB_CAP_UA="900", MCGW_BLE__MODE="bogus")
    assert "MCGW_SAFETY__HUB_CAP_UA" in message
    assert "MCGW_BLE__MODE" in message


def test_command_line_overrides_are_named_as_such_and_win(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MCGW_BLE__MODE", "sim:3")
    with pytest.raises(InvalidSettings, match=r"ble\.mode \(command line\): unknown BLE mode"):
        load_settings(**{"ble.mode": "bogus"})
    url = f"sqlite:///{tmp_path / 'x.db'}"
    settings = load_settings(**{"ble.mode": None, "db.url": url})
    assert str(settings.ble.mode) == "sim:3"
    assert settings.db.url == url


def test_invalid_settings_is_a_gateway_error() -> None:
    assert issubclass(InvalidSettings, GatewayError)


# --- 5. secrets never shown -----------------------------------------------------------------------


def test_public_settings_mask_secret_strings_and_url_passwords(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MCGW_TOKEN_PEPPER", "very-secret-pepper")
    monkeypatch.setenv("MCGW_DB__URL", "postgresql+psycopg://u:SECRET@h/db")
    monkeypatch.setenv("MCGW_API__CORS_ORIGINS", '["https://app:OTHER@example.org"]')
    shown = public_settings(load_settings())
    text = repr(shown)
    assert "very-secret-pepper" not in text
    assert "SECRET" not in text
    assert "OTHER" not in text
    assert shown["token_pepper"] == "***"
    assert shown["db"]["url"] == "postgresql+psycopg://u:***@h/db"
    assert shown["api"]["cors_origins"] == ["https://app:***@example.org"]
    assert shown["safety"]["zone_caps_ua"] == DEFAULT_ZONE_CAPS_UA


def test_an_unset_secret_shows_as_empty() -> None:
    assert public_settings(Settings())["token_pepper"] == ""


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:SECRET@h/db", "postgresql+psycopg://u:***@h/db"),
        (
            "postgresql://u:SECRET@h:5432/db?sslmode=require",
            "postgresql://u:***@h:5432/db?sslmode=require",
        ),
        ("mqtt://user:p%40ss@broker:1883", "mqtt://user:***@broker:1883"),
        ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db"),
        ("mqtts://:token@broker", "mqtts://:***@broker"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("http://host:8420/path", "http://host:8420/path"),
        ("sqlite:////var/lib/mcgw/mcgw.db", "sqlite:////var/lib/mcgw/mcgw.db"),
        ("not a url: at all@", "not a url: at all@"),
        ("postgresql://u:my pass@h/db", "postgresql://u:***@h/db"),
        (
            'connection to "postgresql://u:pw@h/db" failed; retry mqtt://a:b@c',
            'connection to "postgresql://u:***@h/db" failed; retry mqtt://a:***@c',
        ),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


# --- the default database and the new API settings ---------------------------------------------


def test_the_default_database_is_in_the_user_data_dir_whatever_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    expected = f"sqlite:///{tmp_path / 'xdg' / 'mcgw' / 'mcgw.db'}"
    assert default_database_url() == expected
    monkeypatch.chdir(tmp_path)
    assert load_settings().db.url == expected
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_settings().db.url == expected
    assert not (tmp_path / "xdg").exists(), "loading settings creates nothing"


def test_api_defaults_trust_no_proxy_and_cap_websockets() -> None:
    api = Settings().api
    assert api.trusted_proxies == []
    assert api.ws_max_connections == 256
    assert api.ws_max_per_token == 8


def test_trusted_proxies_take_addresses_and_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCGW_API__TRUSTED_PROXIES", '["127.0.0.1", "10.0.0.0/24", " ::1 "]')
    assert load_settings().api.trusted_proxies == ["127.0.0.1", "10.0.0.0/24", "::1"]


def test_per_radio_slots_are_written_as_a_plain_list_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``MCGW_BLE__RADIO_SLOTS=7,2`` as the docs write it: a NoDecode setting is not JSON."""
    monkeypatch.setenv("MCGW_BLE__MODE", "bluez:hci0,bluez:hci1")
    monkeypatch.setenv("MCGW_BLE__RADIO_SLOTS", "7,2")
    assert load_settings().ble.radio_slots == [7, 2]
    assert "radio_slots takes whole numbers" in refused(monkeypatch, MCGW_BLE__RADIO_SLOTS="7,x")
