"""The `mcgw` command line, run as a user runs it: a real process, its output and exit code."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0


def mcgw(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from gateway.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCGW_")}
    return {
        **clean,
        "MCGW_DB__URL": f"sqlite:///{tmp_path}/cli.db",
        "MCGW_MDNS": "false",
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_config_show_masks_secrets(env: dict[str, str]) -> None:
    result = mcgw(
        "config", "show", "--json", env={**env, "MCGW_TOKEN_PEPPER": "very-secret-pepper"}
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["safety"]["hub_cap_ua"] == 400
    assert data["api"]["port"] == 8420
    assert "very-secret-pepper" not in result.stdout


def test_invalid_settings_stop_with_the_setting_named(env: dict[str, str]) -> None:
    result = mcgw("config", "show", env={**env, "MCGW_SAFETY__HUB_CAP_UA": "900"})
    assert result.returncode == 2
    assert "safety.hub_cap_ua" in result.stderr
    assert "500" in result.stderr
    assert "Traceback" not in result.stderr


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

    revoked = mcgw("token", "revoke", "1", env=env)
    assert revoked.returncode == 0, revoked.stderr
    missing = mcgw("token", "revoke", "999", env=env)
    assert missing.returncode == 2
    assert "999" in missing.stderr

    for command in ("devices", "sessions"):
        listed = mcgw(command, "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == []


SERVE = [sys.executable, "-c", "from gateway.cli import main; main()", "serve"]


@pytest.fixture(params=["mcgw serve", "make run"])
def served(
    request: pytest.FixtureRequest, env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[str], int, str]]:
    port = free_port()
    if request.param == "make run":
        # Exactly what a newcomer types; settings come from the environment.
        command = ["make", "--no-print-directory", "-C", str(ROOT), "run"]
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
    served: tuple[subprocess.Popen[str], int, str],
) -> None:
    process, port, token = served
    assert token.startswith("mcgw_")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    devices: list[dict[str, object]] = []
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
                    break
            time.sleep(0.2)
        assert health.status_code == 200
        assert len(devices) == 2
        assert client.get("/api/v1/devices").status_code == 401
        metrics = client.get("/metrics")
    assert metrics.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    assert {"mcgw_devices", "mcgw_sessions", "mcgw_telemetry_frames_in"} <= set(families)
    by_state = {s.labels["state"]: s.value for s in families["mcgw_devices"].samples}
    assert by_state.get("bonded") == 2
    assert families["mcgw_telemetry_frames_in"].samples[0].value > 0
    os.killpg(process.pid, signal.SIGINT)
    code = process.wait(timeout=20)
    # mcgw exits 0 on Ctrl-C; make, which got the same SIGINT, re-raises it after its child ends.
    assert code == 0 or (process.args[0] == "make" and code == -signal.SIGINT)
