"""Typed settings: ``MCGW_*`` environment variables, an optional TOML config file, defaults.

Every setting has a default that makes ``mcgw serve`` work on a laptop. Nested groups use ``__``
in environment variables (``MCGW_SAFETY__HUB_CAP_UA=300``). A config file is read from
``MCGW_CONFIG_FILE`` when set; environment variables win over the file. Invalid values stop
start-up with a message naming the setting (fail fast, never a half-configured hub).

This module builds no engine, radio or app: it only describes and validates configuration.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ble.protocol import Zone

DEFAULT_PORT = 8420
ABSOLUTE_MAX_SESSION_MIN = 30
"""S10: the hub setting can lower the session cap but never raise it above this."""
ABSOLUTE_MAX_AMPLITUDE_UA = 500
"""Microcurrent devices stay at or below 500 µA; no setting may allow more."""

DEFAULT_ZONE_CAPS_UA: dict[str, int] = {
    Zone.FOREHEAD.name.lower(): 400,
    Zone.CHEEKS.name.lower(): 400,
    Zone.JAWLINE.name.lower(): 400,
    Zone.NECK.name.lower(): 300,
    Zone.BROW.name.lower(): 250,
    Zone.EYE_AREA.name.lower(): 200,
}


class BleSettings(BaseModel):
    """How the hub reaches its devices."""

    mode: str = Field(
        default="auto",
        description="auto | bluez | sim[:N] (in-process simulated devices) | "
        "hci:<bumble transport> (e.g. hci:tcp-client:127.0.0.1:9100, hci:usb:0)",
    )
    connection_slots: Annotated[int, Field(ge=1, le=20)] = 7
    """Most devices connected at once (a radio's practical limit)."""
    telemetry_hz: Annotated[int, Field(ge=1, le=100)] = 50
    scan_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    reconnect_max_backoff_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    auto_connect: bool = True
    """Look after every microcurrent device found in a scan (ownership is claimed separately)."""
    discovery_interval_s: Annotated[float, Field(ge=1, le=3600)] = 30.0

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value in ("auto", "bluez"):
            return value
        if value == "sim" or value.startswith("sim:"):
            count = value.partition(":")[2] or "2"
            if not count.isdigit() or not 1 <= int(count) <= 50:
                raise ValueError(f"sim:N needs N between 1 and 50, got {count!r}")
            return value
        if value.startswith("hci:") and len(value) > 4:
            return value
        raise ValueError(
            f"unknown BLE mode {value!r}: use auto, bluez, sim[:N] or hci:<bumble transport>"
        )

    @property
    def sim_devices(self) -> int:
        """Number of in-process simulated devices (0 unless mode is sim[:N])."""
        if self.mode == "sim":
            return 2
        if self.mode.startswith("sim:"):
            return int(self.mode[4:])
        return 0


class SafetySettings(BaseModel):
    """Hub-wide safety limits (BRIEF S1-S10). Lower is always allowed; higher is refused."""

    hub_cap_ua: Annotated[int, Field(ge=10, le=ABSOLUTE_MAX_AMPLITUDE_UA)] = 400
    zone_caps_ua: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_ZONE_CAPS_UA))
    soft_start_ms: Annotated[int, Field(ge=500, le=10_000)] = 1000
    max_session_min: Annotated[int, Field(ge=1, le=ABSOLUTE_MAX_SESSION_MIN)] = 20
    contact_resume_window_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    link_resume_window_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    over_current_margin: Annotated[float, Field(ge=0, le=0.5)] = 0.10
    over_temperature_c: Annotated[float, Field(ge=30, le=45)] = 41.0

    @field_validator("zone_caps_ua")
    @classmethod
    def _zone_caps(cls, value: dict[str, int]) -> dict[str, int]:
        merged = dict(DEFAULT_ZONE_CAPS_UA)
        for zone, cap in value.items():
            key = zone.lower()
            if key not in DEFAULT_ZONE_CAPS_UA:
                raise ValueError(f"unknown zone {zone!r}; zones: {', '.join(DEFAULT_ZONE_CAPS_UA)}")
            if not 0 < cap <= ABSOLUTE_MAX_AMPLITUDE_UA:
                raise ValueError(f"zone cap for {zone} must be 1-{ABSOLUTE_MAX_AMPLITUDE_UA} µA")
            merged[key] = cap
        return merged

    def zone_cap(self, zone: Zone) -> int:
        return min(self.hub_cap_ua, self.zone_caps_ua[zone.name.lower()])


class DatabaseSettings(BaseModel):
    """Where history lives."""

    url: str = "sqlite:///./data/mcgw.db"
    telemetry_flush_s: Annotated[float, Field(gt=0, le=10)] = 1.0
    telemetry_retention_days: Annotated[int, Field(ge=0)] = 90
    """Raw telemetry older than this is deleted (0 keeps it forever); summaries are kept."""

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("database url must start with sqlite:// or postgresql+<driver>://")
        return value


class ApiSettings(BaseModel):
    """The HTTP side."""

    host: str = "0.0.0.0"  # noqa: S104 - phones on the LAN must reach the hub
    port: Annotated[int, Field(ge=1, le=65535)] = DEFAULT_PORT
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    pairing_code_ttl_s: Annotated[int, Field(ge=30, le=3600)] = 300


class Settings(BaseSettings):
    """All of mcgw's settings. Build one per process (or per test); nothing is global."""

    model_config = SettingsConfigDict(
        env_prefix="MCGW_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    hub_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=64)
    """Names this hub in a shared database; unique per hub."""
    ble: BleSettings = Field(default_factory=BleSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    log_level: str = "INFO"
    log_json: bool = False
    mdns: bool = True
    """Advertise the hub as _mcgw._tcp on the LAN (DNS-SD) so phone apps find it."""
    mdns_interfaces: list[str] = Field(default_factory=list)
    """Interface names or IPv4 addresses to advertise on; empty means all."""
    token_pepper: SecretStr = SecretStr("")
    """Extra secret mixed into token hashes; set it on shared databases."""

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("log_level must be DEBUG, INFO, WARNING or ERROR")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("MCGW_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, the config file and explicit overrides."""
    return Settings(**overrides)
