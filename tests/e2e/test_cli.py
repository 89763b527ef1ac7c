"""The `mcgw` command line, run as a user runs it: a real process, its output and exit code."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as ws_connect

from tests.e2e.served import copy_database

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0


def mcgw(
    *args: str, env: dict[str, str], timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from mcgw.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An explicit database in tmp_path, and a user data dir there too (never the real one)."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("MCGW_")}
    return {
        **clean,
        "MCGW_DB__URL": f"sqlite:///{tmp_path}/cli.db",
        "MCGW_MDNS": "false",
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }


def refused(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """The (error, hint) of a command that failed as a user mistake: exit 2, two lines."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    error, hint = lines
    assert error.startswith("error: ")
    assert hint.startswith("hint: ")
    return error, hint


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_config_show_masks_secrets(env: dict[str, str]) -> None:
    secrets = {
        "MCGW_TOKEN_PEPPER": "very-secret-pepper",
        "MCGW_DB__URL": "postgresql+psycopg://u:SECRETPW@db.example/mcgw",
    }
    result = mcgw("config", "show", "--json", env={**env, **secrets})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["safety"]["hub_cap_ua"] == 400
    assert data["api"]["port"] == 8420
    assert data["db"]["url"] == "postgresql+psycopg://u:***@db.example/mcgw"
    assert data["token_pepper"] == "***"
    table = mcgw("config", "show", env={**env, **secrets})
    assert table.returncode == 0, table.stderr
    assert "u:***@db.example" in table.stdout
    for shown in (result.stdout + result.stderr, table.stdout + table.stderr):
        assert "very-secret-pepper" not in shown
        assert "SECRETPW" not in shown


def test_invalid_settings_stop_with_the_setting_named(env: dict[str, str]) -> None:
    result = mcgw("config", "show", env={**env, "MCGW_SAFETY__HUB_CAP_UA": "900"})
    error, _hint = refused(result)
    assert "safety.hub_cap_ua" in error
    assert "500" in error


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"MCGW_SAFETY__ZONE_CAPS_UA": "notjson"},
            "MCGW_SAFETY__ZONE_CAPS_UA (safety.zone_caps_ua) is not valid JSON",
        ),
        (
            {"MCGW_SAFETY__ZONE_CAPS_UA": '{"eye_area":400}'},
            "MCGW_SAFETY__ZONE_CAPS_UA (safety.zone_caps_ua): zone caps can only be lowered",
        ),
        (
            {"MCGW_CONFIG_FILE": "/nonexistent/mcgw.toml"},
            "MCGW_CONFIG_FILE=/nonexistent/mcgw.toml: no such file",
        ),
        (
            {"MCGW_SAFETY__HUB_CAP": "300"},
            "unknown setting MCGW_SAFETY__HUB_CAP; did you mean MCGW_SAFETY__HUB_CAP_UA?",
        ),
    ],
    ids=["notjson", "zone-cap-raised", "missing-config-file", "misspelt"],
)
@pytest.mark.parametrize("command", [("config", "show"), ("serve", "--ble", "sim:1")])
def test_bad_settings_are_one_line_and_exit_2(
    env: dict[str, str], variables: dict[str, str], expected: str, command: tuple[str, ...]
) -> None:
    error, hint = refused(mcgw(*command, env={**env, **variables}))
    assert expected in error
    assert "README.md" in hint


@pytest.mark.parametrize(
    "command",
    [
        ("pair",),
        ("token", "create", "--name", "x"),
        ("token", "revoke", "1"),
        ("devices",),
        ("sessions",),
    ],
)
def test_admin_commands_never_create_a_database(
    env: dict[str, str], tmp_path: Path, command: tuple[str, ...]
) -> None:
    """In an empty directory, with no database anywhere: refused, and nothing is created."""
    workdir = tmp_path / "empty"
    workdir.mkdir()
    default_env = {k: v for k, v in env.items() if k != "MCGW_DB__URL"}
    error, hint = refused(mcgw(*command, env=default_env, cwd=workdir))
    expected = tmp_path / "xdg" / "mcgw" / "mcgw.db"
    assert error == f"error: no mcgw database at {expected}"
    assert "mcgw serve" in hint
    assert "MCGW_DB__URL" in hint
    assert list(workdir.iterdir()) == []
    assert not (tmp_path / "xdg").exists()

    missing = tmp_path / "elsewhere" / "hub.db"
    error, _hint = refused(mcgw(*command, "--db", f"sqlite:///{missing}", env=default_env))
    assert error == f"error: no mcgw database at {missing}"
    assert not missing.parent.exists()


def test_admin_commands_refuse_a_database_without_the_mcgw_schema(
    env: dict[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
    error, hint = refused(mcgw("pair", "--db", f"sqlite:///{other}", env=env))
    assert "no mcgw database at" in error
    assert "no mcgw schema" in error
    assert "mcgw serve" in hint
    with contextlib.closing(sqlite3.connect(other)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert tables == {"notes"}, "no migration ran"


def test_unknown_ble_mode_is_explained(env: dict[str, str]) -> None:
    result = mcgw("scan", "--ble", "bogus", env=env)
    assert result.returncode == 2
    assert "sim[:N]" in result.stderr


def test_bluez_without_dbus_gives_a_hint(env: dict[str, str]) -> None:
    if Path("/run/dbus/system_bus_socket").exists():
        pytest.skip("this machine has a D-Bus system bus; the hint is for hosts without one")
    result = mcgw("scan", "--ble", "bluez", "--timeout", "1", env=env)
    assert result.returncode == 2
    assert "--ble sim" in result.stderr


def test_scan_lists_simulated_devices(env: dict[str, str]) -> None:
    result = mcgw("scan", "--ble", "sim:3", "--timeout", "1", "--json", env=env)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert len(found) == 3
    assert all(item["name"].startswith("MC-SIM") for item in found)


def test_db_upgrade_then_tokens_pairing_and_listing(env: dict[str, str]) -> None:
    """`db upgrade` creates the database the admin commands then use (MCGW_DB__URL)."""
    upgraded = mcgw("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "revision" in upgraded.stderr
    again = mcgw("db", "upgrade", env=env)
    assert again.returncode == 0

    token = mcgw("token", "create", "--name", "script", "--admin", env=env)
    assert token.returncode == 0, token.stderr
    assert re.fullmatch(r"mcgw_\S{20,}", token.stdout.strip())

    code = mcgw("pair", "--name", "ann", env=env)
    assert code.returncode == 0, code.stderr
    assert re.fullmatch(r"\d{6}", code.stdout.strip())
    qr = mcgw("pair", "--name", "bo", "--qr", "--url", "http://hub.example:8420/", env=env)
    assert qr.returncode == 0, qr.stderr
    first, link, *picture = qr.stdout.splitlines()
    assert link == f"http://hub.example:8420/#/pair/{first}"  # the web page's pairing route
    assert len(picture) > 10
    assert all(set(row) <= set("█▀▄ ") for row in picture)

    revoked = mcgw("token", "revoke", "1", env=env)
    assert revoked.returncode == 0, revoked.stderr
    missing = mcgw("token", "revoke", "999", env=env)
    assert missing.returncode == 2
    assert "999" in missing.stderr

    for command in ("devices", "sessions"):
        listed = mcgw(command, "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == []


SERVE = [sys.executable, "-c", "from mcgw.cli import main; main()", "serve"]


@pytest.fixture(params=["mcgw serve", "make run"])
def served(
    request: pytest.FixtureRequest, env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[str], int, str]]:
    port = free_port()
    if request.param == "make run":
        # Exactly what a newcomer types; settings come from the environment, and the database
        # is the default one (in the user data dir, here under tmp_path).
        command = ["make", "--no-print-directory", "-C", str(ROOT), "run"]
        env = {k: v for k, v in env.items() if k != "MCGW_DB__URL"}
        env = {**env, "MCGW_API__HOST": "127.0.0.1", "MCGW_API__PORT": str(port)}
    else:
        command = [
            *SERVE,
            *("--ble", "sim:2", "--host", "127.0.0.1", "--port", str(port), "--bootstrap"),
        ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert process.stdout is not None
    token = ""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("admin token:"):
            token = line.split()[-1]
            break
    assert token, "".join(seen)
    # Keep reading the server's output so a full pipe can never block it.
    drain = threading.Thread(target=lambda: seen.extend(process.stdout or ()), daemon=True)
    drain.start()
    try:
        yield process, port, token
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        drain.join(timeout=5)
        process.stdout.close()


def test_serve_answers_health_and_lists_two_simulated_devices(
    served: tuple[subprocess.Popen[str], int, str], tmp_path: Path
) -> None:
    process, port, token = served
    assert token.startswith("mcgw_")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    devices: list[dict[str, object]] = []
    families: dict[str, Metric] = {}
    with httpx.Client(base_url=base, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                health = client.get("/api/v1/health")
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if health.status_code == 200:
                devices = client.get(
                    "/api/v1/devices", headers={"Authorization": f"Bearer {token}"}
                ).json()
                if len(devices) == 2 and all(d["state"] == "bonded" for d in devices):
                    # The first telemetry frame may arrive a moment after the bond.
                    metrics = client.get("/metrics")
                    assert metrics.status_code == 200
                    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
                    frames_in = families.get("mcgw_telemetry_frames_in")
                    if frames_in is not None and frames_in.samples[0].value > 0:
                        break
            time.sleep(0.2)
        assert health.status_code == 200
        assert len(devices) == 2
        assert client.get("/api/v1/devices").status_code == 401
    assert {"mcgw_devices", "mcgw_sessions", "mcgw_telemetry_frames_in"} <= set(families)
    by_state = {s.labels["state"]: s.value for s in families["mcgw_devices"].samples}
    assert by_state.get("bonded") == 2
    assert families["mcgw_telemetry_frames_in"].samples[0].value > 0
    os.killpg(process.pid, signal.SIGINT)
    code = process.wait(timeout=20)
    # mcgw exits 0 on Ctrl-C; make, which got the same SIGINT, re-raises it after its child ends.
    assert code == 0 or (process.args[0] == "make" and code == -signal.SIGINT)
    # make run uses the default database, in the user data dir (here under tmp_path).
    default_db = tmp_path / "xdg" / "mcgw" / "mcgw.db"
    assert default_db.is_file() == (process.args[0] == "make")


@contextlib.contextmanager
def hub(env: dict[str, str], log: Path) -> Iterator[httpx.Client]:
    """`mcgw serve --ble sim:1` on a free port, its whole output in ``log``; a client once it
    answers /api/v1/health. Stopped with Ctrl-C (so its output is complete) on the way out."""
    port = free_port()
    with log.open("w") as output:
        process = subprocess.Popen(
            [*SERVE, "--ble", "sim:1", "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline and process.poll() is None:
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/api/v1/health").status_code == 200:
                        break
                time.sleep(0.2)
            else:
                pytest.fail(f"mcgw serve never answered:\n{log.read_text()}")
            yield client
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


SECRET = "SECRETVALUE123"


def test_tokens_in_query_strings_never_reach_the_log(
    env: dict[str, str], tmp_path: Path, migrated_sqlite: Path
) -> None:
    copy_database(migrated_sqlite, tmp_path / "cli.db")  # env's database, migrated
    log = tmp_path / "serve.log"
    with hub(env, log) as client:
        for path in ("/api/v1/me", "/api/v1/ws"):
            response = client.get(path, params={"token": f"mcgw_{SECRET}"})
            assert response.status_code >= 400, "a token in the query string is refused"
        client.get("/api/v1/health", params={"Access_Token": SECRET, "page": "2"})
        # A real WebSocket handshake too: uvicorn logs those through another logger.
        ws_url = f"ws://{client.base_url.host}:{client.base_url.port}/api/v1/ws?token=mcgw_{SECRET}"
        with contextlib.suppress(WebSocketException), ws_connect(ws_url, open_timeout=10):
            pass
    output = log.read_text()
    assert SECRET not in output
    assert f"mcgw_{SECRET[:6]}" not in output
    assert '"GET /api/v1/me?token=*** HTTP/1.1" 4' in output
    assert '"GET /api/v1/ws?token=*** HTTP/1.1" 4' in output
    assert '"GET /api/v1/health?Access_Token=***&page=2 HTTP/1.1"' in output
    assert '"WebSocket /api/v1/ws?token=***"' in output


@pytest.mark.parametrize("trusted", [False, True], ids=["default", "trusted-proxy"])
def test_forwarded_headers_are_believed_only_from_trusted_proxies(
    env: dict[str, str], tmp_path: Path, migrated_sqlite: Path, trusted: bool
) -> None:
    copy_database(migrated_sqlite, tmp_path / "cli.db")  # env's database, migrated
    if trusted:
        env = {**env, "MCGW_API__TRUSTED_PROXIES": '["127.0.0.1"]'}
    log = tmp_path / "serve.log"
    with hub(env, log) as client:
        response = client.get("/api/v1/health", headers={"X-Forwarded-For": "10.9.9.9"})
        assert response.status_code == 200
    lines = [
        line for line in log.read_text().splitlines() if '"GET /api/v1/health HTTP/1.1" 200' in line
    ]
    assert lines, log.read_text()
    # The access log shows the client address uvicorn settled on.
    if trusted:
        assert any("10.9.9.9:" in line for line in lines), lines
    else:
        assert not any("10.9.9.9" in line for line in lines), lines
        assert all("127.0.0.1:" in line for line in lines), lines
