"""Fixtures of the end-to-end suite.

``migrated_sqlite`` is a SQLite database at the newest migration, made once per test run (with
``upgrade``, as `mcgw db upgrade` does); ``served.copy_database`` gives a test its own copy, so a
hub under test starts on a migrated database of its own without a migration process at every
start. Tests that are about a first start on an empty database (tests/e2e/test_cli.py,
tests/e2e/test_doctor.py, tests/gateway/storage) never use it. ``wait_until`` waits for a
condition of a hub under test, failing with what it waited for after ``HANG_S``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import DatabaseSettings
from gateway.storage.engine import create_engine_from_settings, needs_upgrade, upgrade

HANG_S = 30.0
"""Longer than any wait of a working hub: only a hang reaches it."""


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the newest revision; copy it (``copy_database``), never open it."""
    path = tmp_path_factory.mktemp("migrated") / "hub.db"
    engine = create_engine_from_settings(DatabaseSettings(url=f"sqlite:///{path}"))
    try:
        upgrade(engine)
        assert not needs_upgrade(engine)
    finally:
        engine.dispose()
    return path


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Return once ``predicate()`` holds (checked every 20 ms); fail naming ``what`` after
    ``HANG_S``."""
    try:
        async with asyncio.timeout(HANG_S):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"still waiting for {what} after {HANG_S} s")
