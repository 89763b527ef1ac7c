"""Engines from settings, migrations from an empty database, no-op upgrades, stored time zones."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import Session

from gateway.config import DatabaseSettings
from gateway.errors import StorageUnavailable
from gateway.storage import repo
from gateway.storage.engine import (
    create_engine_from_settings,
    current_revision,
    head_revision,
    needs_upgrade,
    storage_metadata,
    upgrade,
    upgrade_apart,
)

TABLES = {"users", "tokens", "devices", "programs", "sessions", "session_events", "telemetry"}


def test_migrations_from_empty_then_a_noop_upgrade(db_url: str) -> None:
    engine = create_engine_from_settings(DatabaseSettings(url=db_url))
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        head = current_revision(engine)
        assert head is not None
        assert set(sa.inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as connection:
            diff = compare_metadata(
                MigrationContext.configure(connection, opts={"compare_type": True}),
                storage_metadata(),
            )
        assert diff == [], "the migrations and the models disagree"

        with Session(engine) as s:
            repo.create_user(session=s, name="kept")
            s.commit()
        upgrade(engine)  # a second upgrade changes nothing and keeps the data
        assert current_revision(engine) == head
        with Session(engine) as s:
            assert [u.name for u in repo.list_users(session=s)] == ["kept"]
    finally:
        engine.dispose()


def test_a_migration_apart_brings_the_database_to_the_head_the_files_name(db_url: str) -> None:
    settings = DatabaseSettings(url=db_url)
    engine = create_engine_from_settings(settings)
    try:
        assert needs_upgrade(engine)
        upgrade_apart(settings)
        assert current_revision(engine) == head_revision()
        assert not needs_upgrade(engine)
    finally:
        engine.dispose()


HUB_START = """\
import sys
from gateway.config import DatabaseSettings
from gateway.storage.engine import create_engine_from_settings, migrate_for_hub, needs_upgrade
settings = DatabaseSettings(url=sys.argv[1])
engine = create_engine_from_settings(settings)
migrated = needs_upgrade(engine)
if migrated:
    migrate_for_hub(settings, engine)
print(migrated, needs_upgrade(engine), "alembic" in sys.modules)
"""


def test_the_hub_migrates_without_keeping_alembic_resident(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mcgw.db'}"
    for expected in ("True False False", "False False False"):  # a first start, then a restart
        done = subprocess.run(
            [sys.executable, "-c", HUB_START, url], capture_output=True, text=True, check=True
        )
        assert done.stdout.split() == expected.split()


def test_sqlite_engine_creates_its_directory_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "mcgw.db"
    engine = create_engine_from_settings(DatabaseSettings(url=f"sqlite:///{path}"))
    try:
        assert path.parent.is_dir()
        with engine.connect() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragmas == {
            "journal_mode": "wal",
            "synchronous": 1,
            "foreign_keys": 1,
            "busy_timeout": 5000,
        }
    finally:
        engine.dispose()


def test_postgresql_engine_uses_psycopg_and_pre_ping() -> None:
    engine = create_engine_from_settings(
        DatabaseSettings(url="postgresql://mcgw@db.example/mcgw")  # no connection is made
    )
    assert engine.dialect.driver == "psycopg"
    assert engine.pool._pre_ping
    engine.dispose()


def test_upgrade_reports_an_unreachable_database(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    engine = create_engine_from_settings(DatabaseSettings(url=f"sqlite:///{tmp_path / 'db'}"))
    with pytest.raises(StorageUnavailable, match="reachable"):
        upgrade(engine)
    engine.dispose()


def test_naive_datetimes_are_refused(db_url: str) -> None:
    engine = create_engine_from_settings(DatabaseSettings(url=db_url))
    upgrade(engine)
    try:
        with Session(engine) as s, pytest.raises(sa.exc.StatementError, match="naive"):
            repo.create_user(session=s, name="x", now=datetime(2026, 1, 1))
    finally:
        engine.dispose()
