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

Alembic (with Mako and Pygments, about 8 MiB) is imported only to migrate. The hub asks
``needs_upgrade`` first, which compares the stored revision with the newest revision file
without Alembic; when a migration is due, ``migrate_for_hub`` runs it in a short-lived child
process (``upgrade_apart``: ``python -m gateway.storage.migrate``), so Alembic never stays
resident in the hub (unless something in the process imported it already).

Nothing here runs at import time; callers own the engine and ``dispose()`` it.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import logging
import os
import pkgutil
import subprocess
import sys
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


@functools.cache
def head_revision() -> str:
    """The newest revision in ``migrations/versions``: the one no other revision revises.

    Read from the files' ``revision``/``down_revision`` assignments, without importing them
    (they import Alembic).
    """
    revisions: dict[str, str | None] = {}
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found: dict[str, object] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.AnnAssign | ast.Assign) and isinstance(
                node.value, ast.Constant
            ):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        found[target.id] = node.value.value
        revision, down = found.get("revision"), found.get("down_revision")
        if isinstance(revision, str):
            revisions[revision] = down if isinstance(down, str) else None
    heads = set(revisions) - set(revisions.values())
    if len(heads) != 1:
        raise StorageUnavailable(f"the migrations have {len(heads)} heads, expected one: {heads}")
    return heads.pop()


def stored_revision(engine: Engine) -> str | None:
    """The revision the database says it is at (None: never migrated), read with plain SQL."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
        return version.scalar_one_or_none()


def needs_upgrade(engine: Engine) -> bool:
    """Whether the database is behind the newest migration (or not migrated at all)."""
    try:
        return stored_revision(engine) != head_revision()
    except sa.exc.OperationalError as exc:
        raise StorageUnavailable(
            f"cannot read the schema revision of "
            f"{engine.url.render_as_string(hide_password=True)}: {exc.orig}; "
            "check that the database is reachable"
        ) from exc


def migrate_for_hub(settings: DatabaseSettings, engine: Engine) -> None:
    """Bring the hub's database to the newest revision without leaving Alembic resident.

    Apart (``upgrade_apart``) as a rule. In this process when Alembic is imported already (a
    command or a test that uses it: keeping it costs nothing more) or when the database is an
    in-memory SQLite one (it exists only in this process)."""
    url = make_url(settings.url)
    in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
    if in_memory or "alembic" in sys.modules:
        upgrade(engine)
    else:
        upgrade_apart(settings)


def upgrade_apart(settings: DatabaseSettings) -> None:
    """``upgrade`` in a child process (``python -m gateway.storage.migrate``), so the caller
    never imports Alembic; raises ``StorageUnavailable`` with the child's reason."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "gateway.storage.migrate"],
        input=json.dumps(settings.model_dump(mode="json")),
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=path),
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise StorageUnavailable(
            lines[-1] if lines else f"the migration process failed (exit {done.returncode})"
        )


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None: not migrated yet)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
