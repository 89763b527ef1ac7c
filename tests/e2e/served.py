"""Real `mcgw serve` and `mcgw sim` processes for end-to-end tests.

``ServedHub.start`` runs ``mcgw serve --ble <mode> --bootstrap`` on a free port with the
environment given (its own SQLite file by default, see ``base_env``), reads the admin token it
prints, waits until every device is bonded, and keeps draining the process's output (kept in
``output``, so tests can check what it logged). ``mcgw(...)`` runs another CLI command against
the same database and settings, as an admin on the hub would.

``copy_database`` gives a test its own copy of a migrated SQLite file (the ``migrated_sqlite``
fixture of tests/e2e/conftest.py), for hubs whose test is not about migrating.

``SimFactory.start`` runs ``mcgw sim --devices N`` and reads its banner (HCI-over-TCP port,
control port, device addresses); the sim's log goes to a file. Every sim started is stopped at
the end of the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ble.sim.process import read_banner as sim_banner

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
PEPPER = "e2e-pepper"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def refusing_port() -> Iterator[socket.socket]:
    """A loopback port that refuses every connection while the block runs: bound, not
    listening. A port merely found free can answer a connect (another process took it, or
    TCP's simultaneous open connects a socket to itself when the kernel picks the same port
    as the source), so a test of "nobody listens there" holds the port instead.
    ``sock.getsockname()[1]`` is the port; ``asyncio.start_server(sock=sock)`` listens on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def base_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a hub under test: no stray MCGW_ settings, its own database."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCGW_")}
    return {
        **clean,
        "MCGW_DB__URL": f"sqlite:///{tmp_path}/hub.db",
        "MCGW_DB__JOURNAL_PATH": str(tmp_path / "hub.journal"),
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "MCGW_MDNS": "false",
        "MCGW_TOKEN_PEPPER": PEPPER,
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }


def copy_database(template: Path, path: Path) -> None:
    """A consistent copy of the SQLite file ``template`` at ``path`` (SQLite's backup API)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    source, copy = sqlite3.connect(template), sqlite3.connect(path)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()


def mcgw_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from mcgw.cli import main; main()", *args]


@dataclass
class ServedHub:
    process: subprocess.Popen[str]
    port: int
    admin_token: str
    env: dict[str, str]
    output: list[str] = field(default_factory=list)
    _drain: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws"

    @classmethod
    @contextlib.contextmanager
    def start(
        cls, env: dict[str, str], *, devices: int = 2, ble: str | None = None
    ) -> Iterator[ServedHub]:
        """``ble`` defaults to ``sim:<devices>``; with an ``hci:`` mode, ``devices`` is how many
        the hub must have bonded before it counts as ready."""
        port = free_port()
        process = subprocess.Popen(
            mcgw_command(
                "serve",
                *("--ble", ble or f"sim:{devices}", "--host", "127.0.0.1", "--port", str(port)),
                "--bootstrap",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        hub = cls(process=process, port=port, admin_token="", env=env)
        try:
            hub._read_token()
            hub._wait_ready(devices)
            yield hub
        finally:
            hub.stop()

    def _read_token(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if line.startswith("admin token:"):
                self.admin_token = line.split()[-1]
                break
        assert self.admin_token, "".join(self.output)
        # Keep reading the server's output so a full pipe can never block it.
        self._drain = threading.Thread(
            target=lambda: self.output.extend(self.process.stdout or ()), daemon=True
        )
        self._drain.start()

    def _wait_ready(self, devices: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, "".join(self.output)
                with contextlib.suppress(httpx.TransportError):
                    listed = client.get("/api/v1/devices", headers=headers)
                    if listed.status_code == 200:
                        bonded = [d for d in listed.json() if d["state"] == "bonded"]
                        if len(bonded) == devices:
                            return
                time.sleep(0.1)
        raise AssertionError("the hub did not get ready:\n" + "".join(self.output))

    def stop(self) -> int | None:
        """SIGINT, as Ctrl-C would; SIGKILL if it does not end in time. The exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._drain is not None:
            self._drain.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def mcgw(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Another `mcgw` command on this hub's database and settings."""
        return subprocess.run(
            mcgw_command(*args),
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=20, **kwargs)

    def logged(self) -> str:
        return "".join(self.output)


# --- `mcgw sim` ----------------------------------------------------------------------------------


@dataclass
class Sim:
    """One `mcgw sim` process; ``log`` is the file its stderr (its logging) goes to."""

    process: subprocess.Popen[str]
    hci_port: int
    control_port: int
    addresses: list[str]
    log: Path

    @property
    def ble(self) -> str:
        """The gateway's ``--ble`` to reach this sim."""
        return f"hci:tcp-client:127.0.0.1:{self.hci_port}"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class SimFactory:
    """Starts sims; ``stop_all`` (the fixtures call it) stops every one."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Sim] = []

    async def start(self, *, devices: int = 2, hci_port: int = 0, control_port: int = 0) -> Sim:
        # The banner is read in a thread: an event loop in the test keeps running meanwhile.
        return await asyncio.to_thread(
            self.start_blocking, devices=devices, hci_port=hci_port, control_port=control_port
        )

    def start_blocking(
        self,
        *,
        devices: int = 2,
        hci_port: int = 0,
        control_port: int = 0,
        extra: tuple[str, ...] = (),
    ) -> Sim:
        """`mcgw sim` with these options (``extra``: more of its options, as given)."""
        log = self.tmp_path / f"sim-{len(self.started) + 1}.log"
        with log.open("w") as stderr:
            process = subprocess.Popen(
                mcgw_command(
                    "sim",
                    *("--devices", str(devices), "--hci-port", str(hci_port)),
                    *("--control-port", str(control_port)),
                    *extra,
                ),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
            )
        sim = read_banner(process, log)
        self.started.append(sim)
        return sim

    def stop_all(self) -> None:
        for sim in self.started:
            sim.stop()


def read_banner(process: subprocess.Popen[str], log: Path) -> Sim:
    """The ports and addresses `mcgw sim` prints at start."""
    assert process.stdout is not None
    try:
        banner = sim_banner(process.stdout)
    except ValueError:
        raise AssertionError(f"mcgw sim did not start: {log.read_text()}") from None
    return Sim(process, banner.hci_port, banner.control_port, list(banner.addresses), log)
