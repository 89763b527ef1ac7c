"""The deployment files: docker-compose.yml, Dockerfile, .dockerignore and deploy/.

None of this needs a Docker engine or a running systemd. The compose file is validated against
the Compose Specification schema (vendored in tests/data, see its NOTICE) and then checked for
what the schema cannot know: which services each profile starts, that the simulator's HCI port
is the one the gateway dials, that every command uses only documented CLI options. The
Dockerfile is read with BuildKit's own parser (the ``dockerfile`` package). The systemd unit
goes through ``systemd-analyze verify`` where that tool exists, and is always checked key by
key. Health probes are executed for real against a throwaway HTTP server on loopback.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import http.server
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dockerfile
import jsonschema
import pytest
import yaml

from gateway.config import BleSettings, DatabaseSettings, MqttSettings, Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UNIT_FILE = ROOT / "deploy" / "mcgw.service"
ENV_TEMPLATE = ROOT / "deploy" / "mcgw.env"
SCHEMA_FILE = Path(__file__).parent / "data" / "compose-spec.json"
SCHEMA_NOTICE = Path(__file__).parent / "data" / "compose-spec.NOTICE.md"

HEALTH_PATH = "/api/v1/health"
BASE_IMAGE = "python:3.11-slim"
DATA_DIR = "/data"
DBUS_MOUNT = "/run/dbus:/run/dbus:ro"

CLI_OPTIONS = {
    "serve": {"--ble", "--db", "--host", "--port"},
    "sim": {"--devices", "--hci-port", "--control-port", "--host"},
}
"""The documented options of `mcgw serve` / `mcgw sim`: the only ones deploy files may use."""

PROFILES = {
    "pi": {"gateway"},
    "sim": {"sim", "gateway-sim"},
    "fleet": {"postgres", "mosquitto", "gateway-fleet"},
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


# ---- helpers -----------------------------------------------------------------------------


def interpolate(text: str) -> str:
    """``${VAR:-default}`` as compose resolves it with nothing set: the default."""
    return _VARIABLE.sub(lambda m: m.group(2) or "", text)


def parse_command(command: list[str]) -> tuple[str, dict[str, str]]:
    """(subcommand, {option: value}) of an ``mcgw`` argument list; every option takes a value."""
    subcommand, *rest = command
    assert len(rest) % 2 == 0, f"{command}: every option needs exactly one value"
    options = dict(zip(rest[::2], rest[1::2], strict=True))
    assert all(option.startswith("--") for option in options), f"{command}: stray argument"
    return subcommand, options


def host_port(mapping: str) -> int:
    """The host side of a short-syntax port mapping ``[ip:]host:container``."""
    parts = interpolate(mapping).split(":")
    return int(parts[-2])


def container_port(mapping: str) -> int:
    return int(interpolate(mapping).split(":")[-1])


def services_in(compose: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if profile in service.get("profiles", [])
    }


def mcgw_services(compose: dict[str, Any], subcommand: str) -> dict[str, dict[str, Any]]:
    """Services that run the mcgw image with the given subcommand."""
    return {
        name: service
        for name, service in compose["services"].items()
        if "build" in service and service["command"][0] == subcommand
    }


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves ``path`` out: the last pattern matching the path or one
    of its parent directories wins, ``!`` re-includes (Docker's rules, without ``**`` subtleties
    beyond what fnmatch gives)."""
    parents = Path(path).parts
    candidates = ["/".join(parents[: i + 1]) for i in range(len(parents))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.removeprefix("!").removeprefix("**/")
        for candidate in candidates:
            names = (
                [candidate, candidate.rsplit("/", 1)[-1]]
                if pattern.startswith("**/")
                else [candidate]
            )
            if any(fnmatch.fnmatchcase(name, glob) for name in names):
                excluded = not negate
                break
    return excluded


def run_probe(argv: list[str], env: dict[str, str]) -> int:
    """Run a healthcheck's exec-form command the way the container would (``CMD`` dropped)."""
    assert argv[0] == "CMD"
    assert argv[1] == "python", "probes run with the image's python"
    result = subprocess.run(
        [sys.executable, *argv[2:]],
        env={**os.environ, **env},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode


# ---- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded = json.loads(SCHEMA_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def docker_instructions() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DOCKERFILE))


@pytest.fixture(scope="module")
def runtime_stage(docker_instructions: tuple[dockerfile.Command, ...]) -> list[dockerfile.Command]:
    last_from = max(i for i, c in enumerate(docker_instructions) if c.cmd == "FROM")
    return list(docker_instructions[last_from:])


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    """The unit file as {section: {key: [values in order]}} (keys may repeat in systemd)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in UNIT_FILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{line!r} before any [Section]"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == HEALTH_PATH else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server(request: pytest.FixtureRequest) -> Iterator[int]:
    """A loopback HTTP server answering /api/v1/health with the parametrized status."""
    handler = type("Handler", (_HealthHandler,), {"status": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ---- docker-compose.yml: schema ----------------------------------------------------------


def test_vendored_schema_is_the_recorded_one() -> None:
    recorded = re.search(r"sha256: ([0-9a-f]{64})", SCHEMA_NOTICE.read_text())
    assert recorded is not None
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == recorded.group(1)


def test_compose_file_follows_the_compose_spec(
    compose: dict[str, Any], schema: dict[str, Any]
) -> None:
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        ("gateway", "restart_policy", "always"),  # a typo'd key
        ("gateway-sim", "depends_on", {"sim": {"condition": "healthy"}}),  # a bad enum
        ("sim", "command", 9100),  # a wrong type
    ],
)
def test_schema_check_is_not_vacuous(
    compose: dict[str, Any], schema: dict[str, Any], where: str, key: str, value: object
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"][where][key] = value
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose (v2) is not installed"
)
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_docker_compose_itself_accepts_each_profile(profile: str) -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "--profile", profile, "config", "--services"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == PROFILES[profile]


# ---- docker-compose.yml: semantics -------------------------------------------------------


def test_each_profile_starts_exactly_its_services(compose: dict[str, Any]) -> None:
    # A service without a profile would start with every profile: the Pi gateway would then
    # crash-loop on a laptop running --profile sim, and fight gateway-sim for port 8420.
    for name, service in compose["services"].items():
        assert len(service.get("profiles", [])) == 1, f"{name} must belong to exactly one profile"
    assert {profile: set(services_in(compose, profile)) for profile in PROFILES} == PROFILES


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_no_port_is_claimed_twice_in_a_profile(compose: dict[str, Any], profile: str) -> None:
    claimed: list[int] = []
    for service in services_in(compose, profile).values():
        if service.get("network_mode") == "host":
            _, options = parse_command(service["command"])
            claimed += [
                int(options[o]) for o in ("--port", "--hci-port", "--control-port") if o in options
            ]
        claimed += [host_port(mapping) for mapping in service.get("ports", [])]
    assert len(claimed) == len(set(claimed)), f"{profile}: {sorted(claimed)}"


@pytest.mark.parametrize("name", ["gateway", "gateway-sim", "gateway-fleet"])
def test_gateways_are_built_to_run_unattended(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["restart"] == "unless-stopped"
    assert service["init"] is True
    assert HEALTH_PATH in " ".join(service["healthcheck"]["test"])
    data_volumes = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == DATA_DIR]
    assert len(data_volumes) == 1, f"{name} needs one volume on {DATA_DIR}"
    assert data_volumes[0] in compose["volumes"], "the data volume must be a named volume"
    assert "MCGW_DB__URL" not in service.get("environment", {}) or name == "gateway-fleet"


def test_every_gateway_is_a_serve_and_every_serve_is_listed(compose: dict[str, Any]) -> None:
    assert set(mcgw_services(compose, "serve")) == {"gateway", "gateway-sim", "gateway-fleet"}
    assert set(mcgw_services(compose, "sim")) == {"sim"}


@pytest.mark.parametrize("name", ["gateway", "gateway-fleet"])
def test_bluez_gateways_reach_the_host_dbus_on_the_host_network(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    _, options = parse_command(service["command"])
    assert options["--ble"] == "bluez"
    assert service["network_mode"] == "host", "phones and mDNS need the LAN"
    assert DBUS_MOUNT in service["volumes"]
    assert "privileged" not in service
    assert "devices" not in service
    assert "ports" not in service, "host networking publishes nothing"


def test_sim_profile_wires_the_simulators_hci_port(compose: dict[str, Any]) -> None:
    sim, gateway = compose["services"]["sim"], compose["services"]["gateway-sim"]
    _, sim_options = parse_command(sim["command"])
    _, gateway_options = parse_command(gateway["command"])
    hci_port, control_port = sim_options["--hci-port"], sim_options["--control-port"]
    sim_host = sim.get("hostname", "sim")

    assert gateway_options["--ble"] == f"hci:tcp-client:{sim_host}:{hci_port}"
    assert hci_port in sim["expose"]
    assert "ports" not in sim, "the virtual radio stays inside the compose network"
    assert gateway["depends_on"] == {"sim": {"condition": "service_healthy"}}
    assert f"http://127.0.0.1:{control_port}/devices" in " ".join(sim["healthcheck"]["test"])
    assert sim_options["--host"] == "0.0.0.0", "gateway-sim dials the sim across the network"

    assert "network_mode" not in gateway, "the sim profile runs on a bridge network"
    assert [container_port(p) for p in gateway["ports"]] == [int(gateway_options["--port"])]
    assert [host_port(p) for p in gateway["ports"]] == [8420]
    assert gateway["environment"]["MCGW_MDNS"] == "false"


def test_fleet_gateway_stores_history_in_the_profiles_postgres(compose: dict[str, Any]) -> None:
    postgres, gateway = compose["services"]["postgres"], compose["services"]["gateway-fleet"]
    url = interpolate(gateway["environment"]["MCGW_DB__URL"])
    DatabaseSettings(url=url)  # the gateway's own validation accepts it
    parts = urlsplit(url)
    pg_env = {key: interpolate(value) for key, value in postgres["environment"].items()}

    assert parts.scheme == "postgresql+psycopg"
    assert parts.hostname == "127.0.0.1", "host networking: the published port is on loopback"
    assert [parts.port] == [host_port(p) for p in postgres["ports"]]
    assert parts.username == pg_env["POSTGRES_USER"]
    assert parts.password == pg_env["POSTGRES_PASSWORD"]
    assert parts.path == f"/{pg_env['POSTGRES_DB']}"
    assert interpolate(postgres["ports"][0]).startswith("127.0.0.1:"), "loopback unless asked"
    assert gateway["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_fleet_gateway_publishes_to_the_profiles_mosquitto(compose: dict[str, Any]) -> None:
    broker, gateway = compose["services"]["mosquitto"], compose["services"]["gateway-fleet"]
    url = interpolate(gateway["environment"]["MCGW_MQTT__URL"])
    MqttSettings(url=url)  # the gateway's own validation accepts it
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1", "host networking: the published port is on loopback"
    assert [parts.port] == [host_port(p) for p in broker["ports"]]
    assert interpolate(broker["ports"][0]).startswith("127.0.0.1:"), "loopback unless asked"
    assert "mosquitto" not in gateway["depends_on"], "a hub serves without its broker"
    config = [v for v in broker["volumes"] if v.endswith(":/mosquitto/config/mosquitto.conf:ro")]
    assert len(config) == 1
    conf_path = ROOT / config[0].split(":")[0]
    lines = [line.split() for line in conf_path.read_text().splitlines() if line.strip()]
    listeners = [int(words[1]) for words in lines if words[0] == "listener"]
    assert listeners == [container_port(broker["ports"][0])]
    assert (ROOT / "deploy" / "mosquitto" / "bridge-to-central.conf").is_file()
    assert (ROOT / "deploy" / "homeassistant" / "configuration.yaml").is_file()
    yaml.safe_load((ROOT / "deploy" / "homeassistant" / "configuration.yaml").read_text())


@pytest.mark.parametrize("name", ["gateway", "sim", "gateway-sim", "gateway-fleet"])
def test_commands_use_only_documented_cli_options(compose: dict[str, Any], name: str) -> None:
    command = compose["services"][name]["command"]
    assert all(isinstance(arg, str) for arg in command), "quote numbers: argv is strings"
    subcommand, options = parse_command(command)
    assert subcommand in CLI_OPTIONS
    assert set(options) <= CLI_OPTIONS[subcommand]
    if subcommand == "serve":
        BleSettings(mode=options["--ble"])
        ipaddress.ip_address(options["--host"])
        assert 1 <= int(options["--port"]) <= 65535
    else:
        assert 1 <= int(options["--devices"]) <= 50
        assert options["--hci-port"] != options["--control-port"]


@pytest.mark.parametrize("subcommand", sorted(CLI_OPTIONS))
def test_the_cli_knows_every_option_the_deploy_files_use(subcommand: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mcgw.cli import main; sys.argv[0] = 'mcgw'; sys.exit(main())",
            subcommand,
            "--help",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for option in CLI_OPTIONS[subcommand]:
        assert option in result.stdout, f"`mcgw {subcommand}` has no {option}"


# ---- health probes -----------------------------------------------------------------------


def test_image_and_compose_probe_the_same_way(
    compose: dict[str, Any], runtime_stage: list[dockerfile.Command]
) -> None:
    (healthcheck,) = [c for c in runtime_stage if c.cmd == "HEALTHCHECK"]
    assert healthcheck.json
    assert list(healthcheck.value) == compose["x-gateway-healthcheck"]["test"]


@pytest.mark.parametrize(
    ("health_server", "healthy"), [(200, True), (503, False)], indirect=["health_server"]
)
def test_gateway_probe_reports_the_health_endpoint(
    compose: dict[str, Any], health_server: int, healthy: bool
) -> None:
    probe = compose["x-gateway-healthcheck"]["test"]
    assert (run_probe(probe, {"MCGW_API__PORT": str(health_server)}) == 0) is healthy


def test_gateway_probe_fails_when_nothing_listens(compose: dict[str, Any]) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _HealthHandler)
    port = server.server_address[1]
    server.server_close()  # a port that was just free and now has no listener
    probe = compose["x-gateway-healthcheck"]["test"]
    assert run_probe(probe, {"MCGW_API__PORT": str(port)}) != 0


def test_sim_probe_is_valid_python(compose: dict[str, Any]) -> None:
    test = compose["services"]["sim"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    compile(test[3], "<sim healthcheck>", "exec")


# ---- Dockerfile --------------------------------------------------------------------------


def test_dockerfile_builds_every_stage_on_python_slim(
    docker_instructions: tuple[dockerfile.Command, ...],
) -> None:
    args = dict(
        c.value[0].split("=", 1)
        for c in docker_instructions
        if c.cmd == "ARG" and "=" in c.value[0]
    )
    images = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], c.value[0])
        for c in docker_instructions
        if c.cmd == "FROM"
    ]
    assert images
    assert set(images) == {BASE_IMAGE}


def test_dockerfile_runs_as_an_unprivileged_user(runtime_stage: list[dockerfile.Command]) -> None:
    users = [c.value[0] for c in runtime_stage if c.cmd == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert any(
        "useradd" in c.value[0] and user in c.value[0] for c in runtime_stage if c.cmd == "RUN"
    )


def test_dockerfile_runtime_contract(runtime_stage: list[dockerfile.Command]) -> None:
    by_cmd: dict[str, list[dockerfile.Command]] = {}
    for command in runtime_stage:
        by_cmd.setdefault(command.cmd, []).append(command)
    env = dict(zip(by_cmd["ENV"][-1].value[::2], by_cmd["ENV"][-1].value[1::2], strict=True))
    (healthcheck,) = by_cmd["HEALTHCHECK"]
    (entrypoint,) = by_cmd["ENTRYPOINT"]
    (cmd,) = by_cmd["CMD"]

    assert env["MCGW_DB__URL"] == f"sqlite:///{DATA_DIR}/mcgw.db"
    assert [c.value for c in by_cmd["VOLUME"]] == [(DATA_DIR,)]
    assert [c.value for c in by_cmd["EXPOSE"]] == [("8420",)]
    assert healthcheck.value[0] == "CMD"
    assert HEALTH_PATH in " ".join(healthcheck.value)
    assert (entrypoint.json, entrypoint.value) == (True, ("mcgw",))
    assert (cmd.json, cmd.value) == (True, ("serve",))


def test_dockerfile_copies_only_what_the_build_context_holds(
    docker_instructions: tuple[dockerfile.Command, ...],
) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for command in docker_instructions:
        if command.cmd != "COPY" or any(f.startswith("--from") for f in command.flags):
            continue
        matched = [path for source in command.value[:-1] for path in ROOT.glob(source)]
        assert matched, f"{command.original}: nothing to copy"
        for source in command.value[:-1]:
            if not any(ch in source for ch in "*?["):
                assert (ROOT / source).exists(), f"{command.original}: no {source}"
        for path in matched:
            relative = path.relative_to(ROOT).as_posix()
            assert not dockerignore_excludes(relative, patterns), f"{relative} is .dockerignored"


@pytest.mark.parametrize(
    "path", [".git/HEAD", ".venv/bin/python", "data/mcgw.db", "tests/test_deploy.py", "x.db"]
)
def test_dockerignore_keeps_local_state_out_of_the_image(path: str) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert dockerignore_excludes(path, patterns)
    assert dockerignore_excludes("gateway/__pycache__/config.cpython-311.pyc", patterns)
    assert not dockerignore_excludes("gateway/config.py", patterns)


def test_dockerfile_dependency_layer_lists_the_project_dependencies(
    docker_instructions: tuple[dockerfile.Command, ...], tmp_path: Path
) -> None:
    (extract,) = [c for c in docker_instructions if c.cmd == "RUN" and "tomllib" in c.value[0]]
    program, flag, code = shlex.split(extract.value[0].partition(" > ")[0])
    assert (program, flag) == ("python", "-c")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    listed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert listed == declared


# ---- systemd unit ------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify insists that ExecStart= exists; the venv is not installed here, so point it at
    # this interpreter and keep every other line as shipped.
    text = re.sub(
        r"^ExecStart=\S+", f"ExecStart={sys.executable}", UNIT_FILE.read_text(), flags=re.M
    )
    unit_path = tmp_path / "mcgw.service"
    unit_path.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "mcgw.service" not in result.stderr, result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_security_exposure_stays_low(tmp_path: Path) -> None:
    unit_path = tmp_path / "mcgw.service"
    unit_path.write_text(UNIT_FILE.read_text())
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=20", str(unit_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in result.stderr or "Unknown command verb" in result.stderr:
        pytest.skip("this systemd-analyze cannot review unit files offline")
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_starts_after_bluetooth_and_network(unit: dict[str, dict[str, list[str]]]) -> None:
    after = " ".join(unit["Unit"]["After"]).split()
    wants = " ".join(unit["Unit"]["Wants"]).split()
    assert {"bluetooth.target", "network-online.target"} <= set(after)
    assert "network-online.target" in wants
    assert "Requires" not in unit["Unit"], "sim and hci: modes run without bluetoothd"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_runs_as_a_dedicated_user_with_its_state_directory(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    service = unit["Service"]
    assert service["User"] == ["mcgw"]
    assert "DynamicUser" not in service, "admin commands need a real user to share the database"
    assert service["StateDirectory"] == ["mcgw"]
    assert service["ExecStart"] == ["/opt/mcgw/bin/mcgw serve"]
    assert service["EnvironmentFile"] == ["-/etc/mcgw/mcgw.env"]
    assert "MCGW_DB__URL=sqlite:////var/lib/mcgw/mcgw.db" in service["Environment"]
    assert service["Restart"] == ["on-failure"]


def test_unit_is_hardened_but_leaves_ble_reachable(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == [value], key
    families = set(" ".join(service["RestrictAddressFamilies"]).split())
    # AF_UNIX is how bleak reaches bluetoothd (D-Bus); the rest serve the API, PostgreSQL, mDNS.
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert "PrivateNetwork" not in service, "phones must reach the API"
    assert "ReadOnlyPaths" not in service
    assert "InaccessiblePaths" not in service


def test_env_template_names_only_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assignments = re.findall(r"^#?(MCGW_\w+)=(.*)$", ENV_TEMPLATE.read_text(), flags=re.M)
    assert assignments
    for name in {name for name, _ in assignments}:
        path = name.removeprefix("MCGW_").lower().split("__")
        model: Any = Settings
        for part in path:
            assert part in model.model_fields, f"{name}: no setting {part!r}"
            model = model.model_fields[part].annotation
    for variable in [v for v in os.environ if v.startswith("MCGW_")]:
        monkeypatch.delenv(variable)
    active = re.findall(r"^(MCGW_\w+)=(.*)$", ENV_TEMPLATE.read_text(), flags=re.M)
    for name, value in active:
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert str(settings.ble.mode) == "bluez"
    assert settings.db.url == "sqlite:////var/lib/mcgw/mcgw.db"


def test_the_image_gets_every_package_the_project_installs(
    docker_instructions: tuple[dockerfile.Command, ...],
) -> None:
    # A package left out of the image builds fine and fails only when `mcgw` first imports it.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        source.rstrip("/")
        for command in docker_instructions
        if command.cmd == "COPY" and not any(f.startswith("--from") for f in command.flags)
        for source in command.value[:-1]
    }
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
