"""Shared test fixtures: service detection for tests that need a real PostgreSQL or broker.

A test that needs a service calls ``require_service``. With CI=true a missing service is a
failure (CI must never pass by skipping); on a laptop without it the test skips with the reason.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883


def service_reachable(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def unavailable(message: str) -> NoReturn:
    """What the test needs is missing: fail with CI=true (CI must never pass by skipping),
    skip with the reason on a laptop."""
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


def require_service(name: str, host: str, port: int) -> None:
    """Skip (laptop) or fail (CI=true) when ``name`` does not answer on host:port."""
    if not service_reachable(host, port):
        unavailable(f"{name} is not reachable on {host}:{port}; start it to run this test")


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """The disk refuses every write to ``path`` until the block ends (``chattr +i``: even root
    cannot write it). Skips (laptop) or fails (CI=true) without CAP_LINUX_IMMUTABLE."""
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if made.returncode != 0:
        unavailable(f"chattr +i needs root (CAP_LINUX_IMMUTABLE): {made.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
