"""Build the database engine from settings and bring its schema up to date (Alembic).

``create_engine_from_settings`` returns a SQLAlchemy engine for either backend:

* SQLite (by default a file in the per-user data directory, see
  ``gateway.config.default_database_url``): the parent directory is created; every connection
  runs in WAL mode with ``synchronous=NORMAL`` (a commit survives a process crash; a power cut
  may lose the last few), ``foreign_keys=ON`` and a busy timeout (``db.lock_timeout_s``), so
  the API's readers never wait for the storage writer.
* PostgreSQL through psycopg 3 (``postgresql+psycopg://user@host/db``): a small pool with
  ``pool_pre_ping`` so a restarted server costs one failed ping, not a failed request, a
  ``lock_timeout`` of ``db.lock_timeout_s`` so a locked table fails a write (which is retried)
  rather than hanging it, TCP keepalives so a server gone silent (a network partition) fails
  its connections within ``PG_DEAD_AFTER_S``, and an ``application_name`` naming the hub.

``upgrade`` applies the Alembic revisions in ``migrations/`` (what ``mcgw db upgrade`` and
start-up call). It is idempotent, and on PostgreSQL takes an advisory lock so hubs starting
together on one database do not race each other through the same migration.

Nothing here runs at import time; callers own the engine and ``dispose()`` it.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlmodel import SQLModel

from gateway.config import DatabaseSettings
from gateway.errors import StorageUnavailable

log = logging.getLogger(__name__)

PG_POOL_SIZE = 5
PG_MAX_OVERFLOW = 5
PG_DEAD_AFTER_S = 20
"""A PostgreSQL connection with no answer (keepalive or data) this long is given up."""
PG_CONNECT_TIMEOUT_S = 5
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_LOCK_KEY = 0x6D6367770001
"""PostgreSQL advisory lock held while migrating ("mcgw" + 1)."""


def _sqlite_pragmas(lock_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={lock_timeout_ms}")
        finally:
            cursor.close()

    return on_connect


def _pg_session(lock_timeout_ms: int) -> Callable[[Any, Any], None]:
    # A locked table makes a write fail after this and be retried, never hang for ever.
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET lock_timeout = {lock_timeout_ms}")
        finally:
            cursor.close()
        dbapi_connection.commit()

    return on_connect


def create_engine_from_settings(db: DatabaseSettings, *, application_name: str = "mcgw") -> Engine:
    """An engine for ``db.url``: SQLite (file, WAL) or PostgreSQL (psycopg 3, pre-ping).

    ``application_name`` names the connections on PostgreSQL (``pg_stat_activity``), so an
    operator (or a test) can tell a hub's connections from everyone else's.
    """
    url = make_url(db.url)
    lock_timeout_ms = round(db.lock_timeout_s * 1000)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url)
        sa.event.listen(engine, "connect", _sqlite_pragmas(lock_timeout_ms))
        return engine
    if url.get_backend_name() == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(
            url,
            pool_pre_ping=True,
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_MAX_OVERFLOW,
            connect_args={
                "application_name": application_name[:63],
                "connect_timeout": PG_CONNECT_TIMEOUT_S,
                # A server gone without a word (a network partition) fails a connection in
                # about PG_DEAD_AFTER_S instead of the kernel's 15 minutes: writes are retried
                # from the journal, readiness turns red, nothing hangs.
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 5,
                "keepalives_count": 3,
                "tcp_user_timeout": PG_DEAD_AFTER_S * 1000,
            },
        )
        sa.event.listen(engine, "connect", _pg_session(lock_timeout_ms))
        return engine
    raise StorageUnavailable(
        f"unsupported database url {url.render_as_string(hide_password=True)!r}: "
        "use sqlite:///path/to/mcgw.db or postgresql+psycopg://user@host/db"
    )


def _alembic_config(connection: sa.Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (the latest by default); a no-op when already there."""
    from alembic import command

    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.select(sa.func.pg_advisory_lock(_MIGRATION_LOCK_KEY)))
                connection.commit()
            try:
                command.upgrade(_alembic_config(connection), revision)
                connection.commit()
            finally:
                if connection.dialect.name == "postgresql":
                    connection.execute(sa.select(sa.func.pg_advisory_unlock(_MIGRATION_LOCK_KEY)))
                    connection.commit()
    except sa.exc.OperationalError as exc:
        raise StorageUnavailable(
            f"cannot migrate {engine.url.render_as_string(hide_password=True)}: {exc.orig}; "
            "check that the database is reachable and writable"
        ) from exc


def storage_metadata() -> sa.MetaData:
    """``SQLModel.metadata`` with every storage table registered (migrations compare to it).

    Tables may live in any module of this package (``models``, ``pairing``, ...), so each one is
    imported; none has import-time side effects.
    """
    import gateway.storage as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "migrations":
            importlib.import_module(f"{package.__name__}.{module.name}")
    return SQLModel.metadata


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None: not migrated yet)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
