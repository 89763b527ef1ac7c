"""`mcgw doctor`, run as an installer runs it: a real process, its findings, fixes and exit code.

Three hosts: this machine seen through BlueZ's eyes (no D-Bus system bus: the address is
pointed at a socket that does not exist, so the finding does not depend on the machine), a
`mcgw sim` process reached over HCI-over-TCP with a migrated database and the local broker
(everything answers), and the same with every outside part broken in its own way.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MQTT_HOST, MQTT_PORT, require_service
from tests.e2e.served import Sim, SimFactory, base_env, free_port
from tests.e2e.test_cli import mcgw

SYS_BLUETOOTH = Path("/sys/class/bluetooth")


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[Sim]:
    sims = SimFactory(tmp_path)
    try:
        yield sims.start_blocking(devices=1)
    finally:
        sims.stop_all()


def findings(result: Any) -> dict[str, dict[str, str]]:
    report = json.loads(result.stdout)
    assert report["ok"] is (result.returncode == 0)
    names = [check["name"] for check in report["checks"]]
    assert len(names) == len(set(names)), names
    return {check["name"]: check for check in report["checks"]}


def test_doctor_names_what_a_host_without_dbus_lacks(tmp_path: Path) -> None:
    env = base_env(
        tmp_path, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path}/no-bus", MCGW_BLE__MODE="bluez"
    )
    result = mcgw("doctor", "--json", "--port", str(free_port()), env=env)
    assert result.returncode == 1, result.stderr
    checks = findings(result)
    assert checks["dbus"]["status"] == "fail"
    assert f"no D-Bus system bus at unix:path={tmp_path}/no-bus" in checks["dbus"]["detail"]
    assert "apt install bluez" in checks["dbus"]["fix"]
    assert checks["bluez"]["status"] in ("fail", "warn")
    assert "apt install bluez" in checks["bluez"]["fix"] or "systemctl" in checks["bluez"]["fix"]
    if not SYS_BLUETOOTH.is_dir() or not any(SYS_BLUETOOTH.iterdir()):
        assert checks["adapters"]["status"] == "fail"
        assert "no Bluetooth adapter in the kernel" in checks["adapters"]["detail"]
        assert "USB Bluetooth dongle" in checks["adapters"]["fix"]
    assert checks["radio"] == {
        "name": "radio",
        "status": "skip",
        "detail": "not tried: fix the problems above first",
        "fix": "",
    }
    assert checks["database"]["status"] == "warn"  # not created yet, and not created by this
    assert not (tmp_path / "hub.db").exists()
    assert checks["port"]["status"] == "ok"
    assert checks["mdns"]["status"] == "skip"
    assert checks["mqtt"] == {
        "name": "mqtt",
        "status": "skip",
        "detail": "off (MCGW_MQTT__URL unset)",
        "fix": "",
    }
    # The same as lines a person reads: one per check, each problem with its fix.
    text = mcgw("doctor", "--port", str(free_port()), env=env)
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    assert len(lines) == len(checks)
    for line in lines:
        status = line.split()[0]
        assert status in ("ok", "warn", "fail", "skip"), line
        assert ("fix:" in line) == (status in ("warn", "fail")), line
    assert any(line.startswith("fail dbus") for line in lines)


def test_doctor_against_the_simulator_finds_everything_answering(
    sim_process: Sim, tmp_path: Path
) -> None:
    require_service("Mosquitto", MQTT_HOST, MQTT_PORT)
    env = base_env(tmp_path, MCGW_MQTT__URL=f"mqtt://{MQTT_HOST}:{MQTT_PORT}")
    assert mcgw("db", "upgrade", env=env).returncode == 0
    result = mcgw(
        "doctor",
        "--json",
        "--ble",
        sim_process.ble,
        "--port",
        str(free_port()),
        "--scan",
        "1",
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checks = findings(result)
    assert checks["bluetooth"]["status"] == "skip"
    assert "no BlueZ" in checks["bluetooth"]["detail"]
    radio = checks["radio"]
    assert radio["status"] == "ok", radio
    assert radio["detail"].startswith(f"{sim_process.ble} answers (controller ")
    assert "heard 1 advertiser(s) in 1 s, 1 microcurrent device(s)" in radio["detail"]
    assert checks["database"]["status"] == "ok"
    assert "migrated" in checks["database"]["detail"]
    assert checks["mqtt"]["status"] == "ok"
    assert f"{MQTT_HOST}:{MQTT_PORT}" in checks["mqtt"]["detail"]
    assert [name for name, c in checks.items() if c["status"] in ("warn", "fail")] == []


def test_doctor_fails_each_broken_part_with_its_fix(tmp_path: Path) -> None:
    stray = tmp_path / "stray.db"
    stray.touch()  # a SQLite file, but not the hub's: no mcgw schema
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = base_env(
            tmp_path,
            MCGW_DB__URL=f"sqlite:///{stray}",
            MCGW_API__HOST="127.0.0.1",
            MCGW_MQTT__URL=f"mqtt://127.0.0.1:{free_port()}",  # nobody listens there
        )
        result = mcgw(
            "doctor",
            "--json",
            "--ble",
            "hci:tcp-client:127.0.0.1:1",
            "--port",
            str(port),
            env=env,
        )
    assert result.returncode == 1
    checks = findings(result)
    failed = {name for name, c in checks.items() if c["status"] == "fail"}
    assert failed == {"radio", "database", "port", "mqtt"}, checks
    assert "does not answer" in checks["radio"]["detail"]
    assert "start `mcgw sim`" in checks["radio"]["fix"]
    assert "holds no mcgw schema" in checks["database"]["detail"]
    assert "mcgw db upgrade" in checks["database"]["fix"]
    assert checks["port"]["detail"] == f"127.0.0.1:{port} is in use by another program"
    assert "MCGW_API__PORT" in checks["port"]["fix"]
    assert "did not answer" in checks["mqtt"]["detail"]
    assert "MCGW_MQTT__URL" in checks["mqtt"]["fix"]
