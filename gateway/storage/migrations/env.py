"""Alembic environment: migrates the connection handed over by ``engine.upgrade``.

Run from ``gateway.storage.engine.upgrade`` (the normal path), the connection comes in
``config.attributes["connection"]``. For writing a new revision by hand, Alembic's own CLI works
too: ``alembic -c /dev/null -x url=sqlite:///scratch.db revision --autogenerate -m "..."`` with
``script_location`` pointing here; the URL comes from ``-x url=...`` or the ``MCGW_DB__URL``
setting. Target metadata is ``SQLModel.metadata`` with every storage module's tables registered.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from gateway.storage.engine import storage_metadata

target_metadata = storage_metadata()


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return url
    from gateway.config import load_settings

    return load_settings().db.url


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from gateway.config import DatabaseSettings
    from gateway.storage.engine import create_engine_from_settings

    engine = create_engine_from_settings(DatabaseSettings(url=_url()))
    try:
        with engine.connect() as new_connection:
            _run(new_connection)
            new_connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
