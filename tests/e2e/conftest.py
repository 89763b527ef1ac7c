"""Fixtures of the end-to-end suite.

``migrated_sqlite`` is a SQLite database at the newest migration, made once per test run (with
``upgrade``, as `mcgw db upgrade` does); ``served.copy_database`` gives a test its own copy, so a
hub under test starts on a migrated database of its own without a migration process at every
start. Tests that are about a first start on an empty database (tests/e2e/test_cli.py,
tests/e2e/test_doctor.py, tests/gateway/storage) never use it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import DatabaseSettings
from gateway.storage.engine import create_engine_from_settings, needs_upgrade, upgrade


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
