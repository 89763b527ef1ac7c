"""Typed settings: ``MCGW_*`` environment variables, an optional TOML config file, defaults.

Every setting has a default that makes ``mcgw serve`` work on a laptop; the default database is
a per-user file (``<user data dir>/mcgw.db``), so the hub and the admin commands find the same
one from any working directory. Nested groups use ``__`` in environment variables
(``MCGW_SAFETY__HUB_CAP_UA=300``). A config file is read from ``MCGW_CONFIG_FILE`` when set;
environment variables win over the file.

``load_settings()`` is how a process reads its configuration, and the one place where anything
wrong with it becomes ``InvalidSettings``: a message naming each bad setting by its environment
variable and saying why, never a traceback. It fails fast (never a half-configured hub) on an
invalid value, a safety limit raised above its default where only lowering is allowed, an
``MCGW_CONFIG_FILE`` that is missing, unreadable or not TOML, and an ``MCGW_*`` variable that
names no setting (a misspelt safety cap silently ignored is a safety problem), with the closest
valid name as a suggestion. Building ``Settings()`` directly (tests, benchmarks) validates values
and the config file but does not look for unknown variables.

``public_settings()`` is the settings as an operator may see them: secrets masked, including
the password inside any URL.

This module builds no engine, radio or app: it only describes and validates configuration.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import os
import re
import socket
import tomllib
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Self

import platformdirs
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from ble.mode import BleMode, BleModeKind, BleModes
from ble.protocol import Zone
from gateway.errors import GatewayError

DEFAULT_PORT = 8420
ABSOLUTE_MAX_SESSION_MIN = 30
"""S10: the hub setting can lower the session cap but never raise it above this."""
ABSOLUTE_MAX_AMPLITUDE_UA = 500
"""Microcurrent devices stay at or below 500 µA; no setting may allow more."""

ENV_PREFIX = "MCGW_"
CONFIG_FILE_VARIABLE = "MCGW_CONFIG_FILE"
NOT_SETTINGS = frozenset(
    {
        # Read by docker compose and the Dockerfile, never by the hub.
        "MCGW_IMAGE",
        "MCGW_SIM_PORT",
        "MCGW_PG_PASSWORD",
        "MCGW_PG_BIND",
        "MCGW_MQTT_BIND",
        "MCGW_UID",
        # Read by bench/, which passes its environment on to the `mcgw serve` it measures.
        "MCGW_BENCH_GC",
        "MCGW_BENCH_HELPER_LOG",
        "MCGW_BENCH_POSTGRES_URL",
    }
)
"""``MCGW_*`` variables that belong to the project's tooling, not to the hub: never reported."""
MASK = "***"
_URL_USER = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*:")
"""The start of a URL up to and including ``user:`` (the password follows)."""
_WORD = re.compile(r"\S+")

DEFAULT_ZONE_CAPS_UA: dict[str, int] = {
    Zone.FOREHEAD.name.lower(): 400,
    Zone.CHEEKS.name.lower(): 400,
    Zone.JAWLINE.name.lower(): 400,
    Zone.NECK.name.lower(): 300,
    Zone.BROW.name.lower(): 250,
    Zone.EYE_AREA.name.lower(): 200,
}


class InvalidSettings(GatewayError):
    """The configuration cannot start a hub. ``problems`` lists one sentence per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings: " + "; ".join(problems))


def default_database_url() -> str:
    """SQLite in the per-user data directory (Linux: ``$XDG_DATA_HOME/mcgw`` or
    ``~/.local/share/mcgw``), whatever the working directory."""
    return f"sqlite:///{Path(platformdirs.user_data_dir('mcgw', appauthor=False)) / 'mcgw.db'}"


def _ble_mode(value: object) -> object:
    """Radios given as text (settings file, environment, command line) parsed by ``BleModes``;
    a single ``BleMode`` is a list of one."""
    if isinstance(value, str):
        return BleModes.parse(value)
    if isinstance(value, BleMode):
        return BleModes.of(value)
    return value


def _slot_list(value: object) -> object:
    """Per-radio slots given as text: ``"7,3"`` or ``"[7, 3]"`` (empty: every radio has
    ``connection_slots``)."""
    if isinstance(value, str):
        text = value.strip().removeprefix("[").removesuffix("]")
        pieces = [piece.strip() for piece in text.split(",") if piece.strip()]
        if not all(piece.isdigit() for piece in pieces):
            raise ValueError(f"radio_slots takes whole numbers separated by commas, got {value!r}")
        return [int(piece) for piece in pieces]
    return value


class BleSettings(BaseModel):
    """How the hub reaches its devices."""

    model_config = ConfigDict(extra="forbid")

    mode: Annotated[
        BleModes,
        NoDecode,  # given as text in the environment, not as JSON
        BeforeValidator(_ble_mode),
        PlainSerializer(str, return_type=str),
    ] = Field(
        default=BleModes((BleMode(BleModeKind.AUTO),)),
        description="one radio or a comma-separated list of them, each auto | bluez[:hciN] | "
        "sim[:N] (in-process simulated devices) | hci:<bumble transport> (e.g. "
        "hci:tcp-client:127.0.0.1:9100, hci:usb:0)",
    )
    connection_slots: Annotated[int, Field(ge=1, le=20)] = 7
    """Most devices connected at once through each radio (a radio's practical limit)."""
    radio_slots: Annotated[
        list[Annotated[int, Field(ge=1, le=20)]], NoDecode, BeforeValidator(_slot_list)
    ] = Field(default_factory=list, examples=["7,3"])
    """Per-radio override of ``connection_slots``, in ``mode`` list order
    (``MCGW_BLE__RADIO_SLOTS=7,3``); empty: every radio has ``connection_slots``. Give one
    number per radio."""
    telemetry_hz: Annotated[int, Field(ge=1, le=100)] = 50
    """Telemetry rate while a session runs or a client watches every frame."""
    idle_telemetry_hz: Annotated[int, Field(ge=0, le=100)] = 1
    """Telemetry rate of a connected device with no session and nobody watching it faster
    (0: none; state changes still come as status notifications). Raised to ``telemetry_hz``
    before a session's first pulse."""
    scan_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    reconnect_max_backoff_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    auto_connect: bool = True
    """Look after every microcurrent device found in a scan (ownership is claimed separately)."""
    discovery_interval_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    sim_control_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """``sim`` modes: serve the simulated devices' scenario control endpoint (docs of
    ``ble.sim.control``: skin contact, gel, faults) on 127.0.0.1 at this port, as ``mcgw sim``
    does; off by default. For tests and demos only: it has no authentication."""

    @model_validator(mode="after")
    def _one_slot_count_per_radio(self) -> Self:
        if self.radio_slots and len(self.radio_slots) != len(self.mode):
            raise ValueError(
                f"radio_slots gives {len(self.radio_slots)} number(s) for {len(self.mode)} "
                f"radio(s) ({self.mode}); give one per radio, or none to use connection_slots"
            )
        return self

    def slots_for(self, index: int) -> int:
        """Connection slots of the radio at ``index`` in the ``mode`` list."""
        return self.radio_slots[index] if self.radio_slots else self.connection_slots


class SafetySettings(BaseModel):
    """Hub-wide safety limits (BRIEF S1-S10). Lower is always allowed; higher is refused."""

    model_config = ConfigDict(extra="forbid")

    hub_cap_ua: Annotated[int, Field(ge=10, le=ABSOLUTE_MAX_AMPLITUDE_UA)] = 400
    zone_caps_ua: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_ZONE_CAPS_UA),
        examples=[{"eye_area": 150, "neck": 250}],
    )
    """Per-zone caps; a zone not named keeps its default, and no cap may exceed its default."""
    soft_start_ms: Annotated[int, Field(ge=500, le=10_000)] = 1000
    max_session_min: Annotated[int, Field(ge=1, le=ABSOLUTE_MAX_SESSION_MIN)] = 20
    contact_resume_window_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    link_resume_window_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    over_current_margin: Annotated[float, Field(ge=0, le=0.5)] = 0.10
    over_temperature_c: Annotated[float, Field(ge=30, le=45)] = 41.0
    min_start_battery_pct: Annotated[int, Field(ge=0, le=50)] = 15
    """A session does not start on a device whose battery is below this (it would not last)."""
    empty_battery_pct: Annotated[int, Field(ge=0, le=10)] = 2
    """At or below this a running session ends: the device can no longer deliver."""

    @field_validator("zone_caps_ua")
    @classmethod
    def _zone_caps(cls, value: dict[str, int]) -> dict[str, int]:
        merged = dict(DEFAULT_ZONE_CAPS_UA)
        for zone, cap in value.items():
            key = zone.lower()
            if key not in DEFAULT_ZONE_CAPS_UA:
                raise ValueError(f"unknown zone {zone!r}; zones: {', '.join(DEFAULT_ZONE_CAPS_UA)}")
            if cap < 1:
                raise ValueError(f"zone cap for {zone} must be at least 1 µA, got {cap}")
            if cap > DEFAULT_ZONE_CAPS_UA[key]:
                raise ValueError(
                    f"zone caps can only be lowered: {key} {cap} µA is above its default "
                    f"{DEFAULT_ZONE_CAPS_UA[key]} µA"
                )
            merged[key] = cap
        return merged

    def zone_cap(self, zone: Zone) -> int:
        return min(self.hub_cap_ua, self.zone_caps_ua[zone.name.lower()])


class DatabaseSettings(BaseModel):
    """Where history lives."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(default_factory=default_database_url)
    """The hub, ``mcgw db upgrade`` and the admin commands all use this one database."""
    telemetry_flush_s: Annotated[float, Field(gt=0, le=10)] = 1.0
    telemetry_retention_days: Annotated[int, Field(ge=0)] = 90
    """Raw telemetry older than this is deleted (0 keeps it forever); summaries are kept."""
    lock_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    """How long a write waits for another connection's lock before it fails and is retried."""
    journal_path: Path | None = None
    """The session journal (records kept durable while the database is away); default: next
    to a SQLite file, else ``journal-<hub_id>-<digest>.jsonl`` in the per-user data directory."""
    journal_max_mb: Annotated[int, Field(ge=1, le=4096)] = 16
    """Unapplied journal size at which new sessions are refused (the database has been away
    for a very long time); running sessions keep recording."""

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("database url must start with sqlite:// or postgresql+<driver>://")
        return value

    def journal_file(self, hub_id: str) -> Path:
        """Where this hub's session journal lives (see ``journal_path``).

        A journal belongs to one database: its default name carries a digest of the database
        URL (password left out), so pointing a hub at another database never replays the first
        one's records into it.
        """
        if self.journal_path is not None:
            return self.journal_path.expanduser()
        prefix = "sqlite:///"
        database = self.url[len(prefix) :].partition("?")[0] if self.url.startswith(prefix) else ""
        if database and database != ":memory:" and not database.startswith("file:"):
            return Path(database).expanduser().with_suffix(".journal")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in hub_id)
        digest = hashlib.sha256(mask_url(self.url).encode()).hexdigest()[:12]
        name = f"journal-{safe}-{digest}.jsonl"
        return Path(platformdirs.user_data_dir("mcgw", appauthor=False)) / name


class ApiSettings(BaseModel):
    """The HTTP side."""

    model_config = ConfigDict(extra="forbid")

    host: str = "0.0.0.0"  # noqa: S104 - phones on the LAN must reach the hub
    port: Annotated[int, Field(ge=1, le=65535)] = DEFAULT_PORT
    cors_origins: list[str] = Field(default_factory=list, examples=[["https://app.example"]])
    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    pairing_code_ttl_s: Annotated[int, Field(ge=30, le=3600)] = 300
    trusted_proxies: list[str] = Field(default_factory=list, examples=[["127.0.0.1"]])
    """Addresses or CIDR networks of reverse proxies whose X-Forwarded-For/-Proto headers are
    believed; empty: no forwarded header is believed from anyone (not even 127.0.0.1)."""
    ws_max_connections: Annotated[int, Field(ge=1, le=10_000)] = 256
    """WebSocket connections the hub accepts at once."""
    ws_max_per_token: Annotated[int, Field(ge=1, le=1000)] = 8
    """WebSocket connections one token may hold at once."""

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        checked = []
        for entry in value:
            text = entry.strip()
            try:
                parsed = ipaddress.ip_network(text) if "/" in text else ipaddress.ip_address(text)
            except ValueError as exc:
                raise ValueError(
                    f"{entry!r} is not an IP address or CIDR network ({exc}); list the "
                    'addresses of your reverse proxies, e.g. ["127.0.0.1", "10.0.0.0/24"]'
                ) from None
            checked.append(str(parsed))
        return checked


class RemindersSettings(BaseModel):
    """Reminders of due plan sessions through apprise (docs/plans.md); off with no URL."""

    model_config = ConfigDict(extra="forbid")

    apprise_urls: list[SecretStr] = Field(
        default_factory=list, examples=[["ntfy://ntfy.sh/my-topic"]]
    )
    """apprise URLs every reminder goes to (any apprise service); they may hold secrets."""
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    """How long one reminder may take to send before it counts as failed."""


class MqttSettings(BaseModel):
    """The MQTT bridge (docs/mqtt.md): off until ``url`` is set."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, examples=["mqtt://user:pass@127.0.0.1:1883"])
    """``mqtt://[user:password@]host[:port]`` or ``mqtts://`` (TLS); unset: no MQTT at all."""
    topic_prefix: str = "mcgw"
    """Topics are ``<topic_prefix>/<hub_id>/...``."""
    ha_discovery: bool = True
    """Publish Home Assistant device-based discovery."""
    discovery_prefix: str = "homeassistant"
    telemetry_hz: Annotated[float, Field(ge=0, le=10)] = 1.0
    """Down-sampled telemetry per device per second (0: none; state is still published)."""
    allow_start: bool = False
    """Sessions may be started over MQTT (as ``user_id``, who must have consented)."""
    user_id: Annotated[int | None, Field(ge=1)] = None
    """The hub user MQTT starts act as; if an admin, MQTT may also pause, resume and change
    the level of any session (otherwise only of sessions started over MQTT)."""
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    reconnect_max_backoff_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    keepalive_s: Annotated[int, Field(ge=1, le=300)] = 15
    """MQTT keepalive: a broker silent for 1.5x this is taken as lost."""

    @field_validator("url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme, sep, rest = value.partition("://")
        host = rest.rpartition("@")[2].partition("/")[0]
        if not sep or scheme not in ("mqtt", "mqtts") or not host:
            raise ValueError(
                "the broker URL must look like mqtt://[user:password@]host[:port] "
                "(or mqtts:// for TLS)"
            )
        return value

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _topic_level(cls, value: str) -> str:
        if (
            not value
            or any(c in value for c in "+#\x00")
            or value.startswith("/")
            or value.endswith("/")
        ):
            raise ValueError(
                f"{value!r} is not a usable topic prefix: no wildcards (+ #), no leading or "
                "trailing /, not empty"
            )
        return value


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
    reminders: RemindersSettings = Field(default_factory=RemindersSettings)

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    log_level: str = "INFO"
    log_json: bool = False
    mdns: bool = True
    """Advertise the hub as _mcgw._tcp on the LAN (DNS-SD) so phone apps find it."""
    mdns_interfaces: list[str] = Field(default_factory=list, examples=[["eth0"]])
    """Interface names or IPv4 addresses to advertise on; empty means all."""
    token_pepper: SecretStr = SecretStr("")
    """Extra secret mixed into token hashes; set it on shared databases."""

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {value!r}")
        return value.upper()

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
        config_file = os.environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            # pydantic-settings skips a missing file silently; a hub must not start on defaults
            # because its settings file was misnamed.
            _check_config_file(Path(config_file))
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def load_settings(**overrides: object) -> Settings:
    """The process's settings: environment, config file, defaults, then ``overrides``.

    ``overrides`` are keyed by dotted setting (``**{"db.url": url}``, what a command-line option
    sets); ``None`` means "not given" and is skipped. Raises ``InvalidSettings`` naming every bad
    setting (by its environment variable, or as ``(command line)`` for an override) and why.
    """
    problems = list(_environment_problems(os.environ))
    if problems:
        raise InvalidSettings(problems)
    given = {dotted: value for dotted, value in overrides.items() if value is not None}
    nested: dict[str, Any] = {}
    for dotted, value in given.items():
        target = nested
        *parents, leaf = dotted.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    try:
        return Settings(**nested)
    except ValidationError as exc:
        raise InvalidSettings([_describe(error, given) for error in exc.errors()]) from exc
    except SettingsError as exc:
        # Only reached for a value pydantic-settings cannot decode that the checks above let by.
        raise InvalidSettings(
            [f"{exc}; check the {ENV_PREFIX}* variables of that group (`mcgw config show`)"]
        ) from exc


def env_variable(path: tuple[str, ...]) -> str:
    """The environment variable of a setting: ``("safety", "hub_cap_ua")`` ->
    ``MCGW_SAFETY__HUB_CAP_UA``."""
    return ENV_PREFIX + "__".join(part.upper() for part in path)


def setting_fields(
    model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """Every leaf setting as (path, pydantic FieldInfo); groups are walked, not listed."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from setting_fields(annotation, (*prefix, name))
        else:
            yield (*prefix, name), field


def _environment_problems(environ: Mapping[str, str]) -> Iterator[str]:
    """Unknown ``MCGW_*`` names (with the closest valid one) and JSON that does not parse."""
    fields = {env_variable(path): (path, field) for path, field in setting_fields()}
    valid = sorted([*fields, CONFIG_FILE_VARIABLE])
    for raw_name, value in sorted(environ.items()):
        # pydantic-settings matches names case-insensitively, so the check does too.
        name = raw_name.upper()
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        if name not in fields:
            if name == CONFIG_FILE_VARIABLE:
                continue
            yield f"unknown setting {raw_name}; {_suggest(name, valid, ENV_PREFIX)}"
            continue
        path, field = fields[name]
        if value and _decoded_as_json(field):
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                example = (
                    f"e.g. {raw_name}='{json.dumps(field.examples[0])}'"
                    if field.examples
                    else "a JSON list or object"
                )
                yield (
                    f"{raw_name} ({'.'.join(path)}) is not valid JSON ({exc.msg} at character "
                    f"{exc.pos}); write it as JSON, {example}"
                )


def _decoded_as_json(field: FieldInfo) -> bool:
    """True for a setting pydantic-settings reads from the environment as JSON: a list, dict,
    set or tuple not marked ``NoDecode`` (those take their own text form, e.g. ``7,3``)."""
    collection = typing.get_origin(field.annotation) in (list, dict, set, tuple)
    return collection and NoDecode not in field.metadata


def _describe(error: Any, overrides: Mapping[str, object]) -> str:
    """One sentence for one pydantic error: which setting, where it came from, what is wrong."""
    loc = tuple(error["loc"])
    reason = str(error["msg"]).removeprefix("Value error, ")
    path: list[str] = []
    model: type[BaseModel] | None = Settings
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            break
        path.append(part)
        annotation = model.model_fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            model = None
    rest = "".join(f"[{part!r}]" for part in loc[len(path) :])
    dotted = ".".join(path)
    if error["type"] == "extra_forbidden":
        unknown = ".".join(str(part) for part in loc)
        known = [".".join(p) for p, _ in setting_fields()]
        hint = _suggest(unknown, known)
        source = os.environ.get(CONFIG_FILE_VARIABLE)
        where = f" in {CONFIG_FILE_VARIABLE}={source}" if source else ""
        return f"unknown setting {unknown}{where}; {hint}"
    if model is not None or not path:
        return f"{'.'.join(str(part) for part in loc) or 'settings'}: {reason}"
    if dotted in overrides:
        return f"{dotted}{rest} (command line): {reason}"
    return f"{env_variable(tuple(path))} ({dotted}{rest}): {reason}"


def _suggest(name: str, valid: list[str], prefix: str = "") -> str:
    """``did you mean X?`` for the closest valid name (compared without the common prefix)."""
    bare = {candidate.removeprefix(prefix): candidate for candidate in valid}
    close = difflib.get_close_matches(name.removeprefix(prefix), list(bare), n=1)
    if close:
        return f"did you mean {bare[close[0]]}?"
    return "README.md lists every setting; `mcgw config show` shows their values"


def _check_config_file(path: Path) -> None:
    """Raise ``InvalidSettings`` unless ``path`` is a readable TOML file."""
    where = f"{CONFIG_FILE_VARIABLE}={path}"
    try:
        with path.open("rb") as file:
            tomllib.load(file)
    except FileNotFoundError as exc:
        raise InvalidSettings(
            [f"{where}: no such file; create it, or unset {CONFIG_FILE_VARIABLE}"]
        ) from exc
    except OSError as exc:
        raise InvalidSettings(
            [f"{where}: cannot read it ({exc.strerror}); make it a file the hub's user can read"]
        ) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidSettings([f"{where}: not a valid TOML file ({exc}); fix it"]) from exc


def mask_url(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL in it replaced by
    ``***``; anything else comes back unchanged.

    A value that is one URL is masked up to its last ``@``, so a password with an unencoded
    ``/``, ``?``, ``#`` or space never shows; in free text (a driver's error) each word is
    looked at on its own.
    """
    if _URL_USER.match(text):
        return _mask_password(text)
    return _WORD.sub(lambda word: _mask_password(word.group(0)), text)


def _mask_password(text: str) -> str:
    match = _URL_USER.search(text)
    if match is None:
        return text
    after = text[match.end() :]
    end = min((i for i in (after.find(c) for c in "/?#") if i >= 0), default=len(after))
    if "@" in after[:end]:
        cut = after[:end].rindex("@")
    elif "@" in after:
        cut = after.rindex("@")
    else:
        return text  # scheme://host:port/..., no password
    return f"{text[: match.end()]}{MASK}{after[cut:]}"


def public_settings(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-ready data that may be shown: every ``SecretStr`` is masked (empty
    when unset) and so is the password of any URL in any setting."""
    shown = _public(settings)
    assert isinstance(shown, dict)
    return shown


def _public(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, BleMode | BleModes):
        return str(value)
    if isinstance(value, BaseModel):
        return {name: _public(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Mapping):
        return {str(key): _public(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_public(inner) for inner in value]
    return to_jsonable_python(value)
