"""The product as real processes: ``mcgw sim`` and ``mcgw serve``, as a user starts them.

``start_sim`` returns the sim process with its HCI and control ports and device addresses (read
from its banner); ``start_gateway`` a gateway on a free port with its admin token (from
``--bootstrap``), its output drained to ``gateway.log``. Used by the soak and the stop-under-
faults bench. Nothing here measures or injects faults.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from harness.processes import free_port


def mcgw(*args: str) -> list[str]:
    return [sys.executable, "-c", "from mcgw.cli import main; main()", *args]


def start_sim(workdir: Path, devices: int) -> tuple[subprocess.Popen[str], int, int, list[str]]:
    log = (workdir / "sim.log").open("a")
    sim = subprocess.Popen(
        mcgw("sim", "--devices", str(devices), "--hci-port", "0", "--control-port", "0"),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    assert sim.stdout is not None
    from ble.sim.process import read_banner

    banner = read_banner(sim.stdout)
    return sim, banner.hci_port, banner.control_port, list(banner.addresses)


def start_gateway(
    workdir: Path, hci_port: int, db_path: Path
) -> tuple[subprocess.Popen[str], int, str, Path]:
    port = free_port()
    log_path = workdir / "gateway.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCGW_")}
    env.update(
        MCGW_DB__URL=f"sqlite:///{db_path}",
        MCGW_DB__JOURNAL_PATH=str(workdir / "hub.journal"),
        MCGW_DB__LOCK_TIMEOUT_S="1",
        MCGW_MDNS="false",
        MCGW_HUB_ID="soak",
        MCGW_TOKEN_PEPPER="soak-pepper",
        PYTHONUNBUFFERED="1",
    )
    gateway = subprocess.Popen(
        mcgw(
            "serve",
            *("--ble", f"hci:tcp-client:127.0.0.1:{hci_port}"),
            *("--host", "127.0.0.1", "--port", str(port), "--bootstrap"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert gateway.stdout is not None
    token = ""
    log = log_path.open("a")
    for line in gateway.stdout:
        log.write(line)
        if line.startswith("admin token:"):
            token = line.split()[-1]
            break
    if not token:
        raise RuntimeError("mcgw serve did not start; see gateway.log")

    def drain() -> None:
        assert gateway.stdout is not None
        for line in gateway.stdout:
            log.write(line)
            log.flush()

    threading.Thread(target=drain, daemon=True).start()
    return gateway, port, token, log_path
