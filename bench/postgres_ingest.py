"""Telemetry ingest on PostgreSQL: the StorageWriter against psycopg executemany (its floor).

Run by bench/run.py (``postgres_ingest``) on the server of ``MCGW_BENCH_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), in a database of its own (``mcgw_bench``,
created and dropped). The same data and writer path as bench/storage_ingest.py on SQLite. A
server that cannot be reached is reported as not measured, never guessed.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from harness.stats import summarize

POSTGRES_URL = os.environ.get(
    "MCGW_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BENCH_DB = "mcgw_bench"


def postgres_ingest(runs: int = 3) -> dict[str, Any]:
    """Telemetry ingest on PostgreSQL: psycopg executemany (floor) against the StorageWriter.

    Same data as bench/storage_ingest.py (a 20-minute 50 Hz session), in a database of its own
    (``mcgw_bench``, dropped afterwards) on the server of ``MCGW_BENCH_POSTGRES_URL``.
    """
    try:
        import psycopg
    except ImportError:
        return {"not_measured": "psycopg is not installed"}
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_URL)
    admin = f"host={url.host} port={url.port or 5432} user={url.username} dbname={url.database}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
            connection.execute(f"CREATE DATABASE {BENCH_DB}")
    except psycopg.Error as exc:
        return {"not_measured": f"PostgreSQL at {url.host}:{url.port} is not usable: {exc}"}
    bench_url = url.set(database=BENCH_DB, drivername="postgresql+psycopg")
    try:
        return _postgres_runs(bench_url, runs)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


def _postgres_runs(url: Any, runs: int) -> dict[str, Any]:
    import psycopg
    from storage_ingest import COLUMNS, INT_TABLE_SQL, N, int_rows, make_samples

    samples = make_samples()
    rows = int_rows(samples)
    conninfo = f"host={url.host} port={url.port or 5432} user={url.username} dbname={url.database}"
    floor, one, fifty = [], [], []
    for run in range(runs):
        with psycopg.connect(conninfo) as connection:
            table = f"floor_{run}"
            connection.execute(INT_TABLE_SQL.replace("CREATE TABLE t ", f"CREATE TABLE {table} "))
            connection.commit()
            insert = f"INSERT INTO {table} VALUES ({','.join(['%s'] * COLUMNS)})"
            started = time.perf_counter()
            with connection.cursor() as cursor:
                for i in range(0, len(rows), 1000):
                    cursor.executemany(insert, rows[i : i + 1000])
                    connection.commit()
            floor.append(len(rows) / (time.perf_counter() - started))
        one.append(asyncio.run(_writer(url, samples, 1)))
        fifty.append(asyncio.run(_writer(url, samples, 50)))
    floor_median = summarize(floor, 0)
    return {
        "bench": "postgres_ingest",
        "config": {"samples": N, "runs": runs, "server": f"{url.host}:{url.port or 5432}"},
        "floor_psycopg_rows": floor_median,
        "writer_1_session": summarize(one, 0),
        "writer_50_sessions": summarize(fifty, 0),
    }


async def _writer(url: Any, samples: list[Any], sessions: int) -> float:
    """Samples per second through StorageWriter, as storage_ingest.py measures it on SQLite."""
    import sqlalchemy as sa
    from storage_ingest import HZ, PER_NOTIFICATION, open_sessions

    from gateway.config import DatabaseSettings
    from gateway.storage.engine import create_engine_from_settings, upgrade
    from gateway.storage.writer import StorageWriter

    engine = create_engine_from_settings(
        DatabaseSettings(url=url.render_as_string(hide_password=False))
    )
    with engine.begin() as connection:
        connection.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade(engine)
    writer = StorageWriter(engine, flush_s=3600)
    await writer.start()
    ids = await open_sessions(writer, sessions)
    per_window = HZ
    windows = len(samples) // sessions // per_window
    started = time.perf_counter()
    for w in range(windows):
        chunk = samples[w * per_window : (w + 1) * per_window]
        for session_id in ids:
            for i in range(0, per_window, PER_NOTIFICATION):
                writer.append_telemetry(session_id, chunk[i : i + PER_NOTIFICATION])
        await writer.flush()
    elapsed = time.perf_counter() - started
    await writer.close()
    engine.dispose()
    return windows * per_window * sessions / elapsed
