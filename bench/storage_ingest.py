"""Telemetry ingest on SQLite: the storage layout against a raw sqlite3 floor, in one run.

Measures, for a 20-minute 50 Hz session (60,000 samples), with WAL and synchronous=NORMAL:

* floor_sqlite3_rows: raw ``sqlite3`` executemany of one integer row per sample (batches of
  1000), the cheapest way to put a sample in a row;
* core_rows: the same rows through SQLAlchemy Core executemany (the "integer rows" layout);
* blob_rows: the chosen layout (one packed row per session per 1 s window) through Core;
* writer_1_session / writer_50_sessions: the public path, ``StorageWriter.append_telemetry``
  per notification (5 samples) plus one flush per simulated 1 s window, for one device and
  for 50 devices at 50 Hz (the capacity target);
* append_us_per_sample: the event-loop cost of ``append_telemetry``;
* size of the session on disk and the time to read it back, for both layouts.

Prints one JSON object. Medians of ``--runs`` runs (default 3). Numbers are machine-relative:
compare ratios against the floor of the same run, not absolute values across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ble.protocol import TELEMETRY_SAMPLE_SIZE as SAMPLE_SIZE
from ble.protocol import DeviceState, FaultFlags, TelemetrySample, pack_samples
from gateway.config import DatabaseSettings
from gateway.storage import history, repo, session_log
from gateway.storage.engine import create_engine_from_settings, upgrade
from gateway.storage.writer import StorageWriter

HZ = 50
SESSION_S = 20 * 60
N = HZ * SESSION_S
PER_NOTIFICATION = 5
COLUMNS = 13  # session id + the 12 sample fields


def make_samples(n: int = N, seed: int = 1) -> list[TelemetrySample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        current = int(300 + 40 * math.sin(i / 50) + rng.randint(-8, 8))
        out.append(
            TelemetrySample(
                frame=i % 65536,
                device_time_ms=1_000 + i * 20,
                state=DeviceState.RUNNING,
                segment_id=i // 6000,
                segment_elapsed_ms=(i % 6000) * 20 % 65536,
                current_mean_ua=current,
                current_peak_ua=current + rng.randint(10, 30),
                impedance_10ohm=480 + rng.randint(-20, 20),
                contact_quality=90 + rng.randint(0, 10),
                battery_pct=100 - i // 1200,
                temperature_dc=330 + i // 6000,
                faults=FaultFlags.NONE,
            )
        )
    return out


def int_rows(samples: list[TelemetrySample]) -> list[tuple[int, ...]]:
    return [
        (
            1,
            s.frame,
            s.device_time_ms,
            s.state,
            s.segment_id,
            s.segment_elapsed_ms,
            s.current_mean_ua,
            s.current_peak_ua,
            s.impedance_10ohm,
            s.contact_quality,
            s.battery_pct,
            s.temperature_dc,
            s.faults,
        )
        for s in samples
    ]


INT_TABLE_SQL = (
    "CREATE TABLE t (session_id INTEGER NOT NULL, frame INTEGER NOT NULL, time_ms INTEGER, "
    "state INTEGER, segment INTEGER, elapsed INTEGER, mean INTEGER, peak INTEGER, "
    "impedance INTEGER, contact INTEGER, battery INTEGER, temp INTEGER, faults INTEGER, "
    "PRIMARY KEY (session_id, time_ms))"
)


def db_size(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        size = connection.execute("PRAGMA page_size").fetchone()[0]
    return int(pages * size)


def bench_floor(root: Path, rows: list[tuple[int, ...]]) -> tuple[float, int, float]:
    path = root / "floor.db"
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(INT_TABLE_SQL)
    insert = f"INSERT INTO t VALUES ({','.join('?' * COLUMNS)})"
    start = time.perf_counter()
    for i in range(0, len(rows), 1000):
        connection.executemany(insert, rows[i : i + 1000])
        connection.commit()
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    back = connection.execute("SELECT * FROM t WHERE session_id = 1 ORDER BY time_ms").fetchall()
    read_s = time.perf_counter() - start
    assert len(back) == len(rows)
    connection.close()
    return len(rows) / elapsed, db_size(path), read_s


def bench_core_rows(root: Path, rows: list[tuple[int, ...]]) -> float:
    engine = create_engine_from_settings(DatabaseSettings(url=f"sqlite:///{root / 'core.db'}"))
    with engine.begin() as connection:
        connection.exec_driver_sql(INT_TABLE_SQL)
    columns = ["session_id", "frame", "time_ms", "state", "segment", "elapsed", "mean", "peak"]
    columns += ["impedance", "contact", "battery", "temp", "faults"]
    table = sa.table("t", *(sa.column(name) for name in columns))
    dicts = [dict(zip(columns, row, strict=True)) for row in rows]
    start = time.perf_counter()
    for i in range(0, len(dicts), 1000):
        with engine.begin() as connection:
            connection.execute(sa.insert(table), dicts[i : i + 1000])
    elapsed = time.perf_counter() - start
    engine.dispose()
    return len(rows) / elapsed


async def open_sessions(writer: StorageWriter, sessions: int) -> list[int]:
    """A bench user and ``sessions`` sessions of theirs, through the writer; their ids."""
    user = await writer.run(lambda s: repo.create_user(session=s, name="bench"))
    user_id = user.id
    assert user_id is not None
    ids = []
    for index in range(sessions):
        record, _ = await writer.run(
            lambda s, i=index: session_log.create_session(
                session=s,
                hub_id="bench",
                owner_id=user_id,
                device_address=f"AA:00:00:00:00:{i:02X}",
                program_slug="bench",
                intensity=3,
                planned_s=SESSION_S,
            )
        )
        ids.append(record.id)
    return ids


async def _writer_run(
    root: Path, name: str, samples: list[TelemetrySample], sessions: int
) -> dict[str, float]:
    path = root / f"{name}.db"
    engine = create_engine_from_settings(DatabaseSettings(url=f"sqlite:///{path}"))
    upgrade(engine)
    writer = StorageWriter(engine, flush_s=3600)  # flushes are driven by hand: 1 per window
    await writer.start()
    ids = await open_sessions(writer, sessions)
    window = HZ  # samples per device per 1 s window
    per_session = len(samples) // sessions
    windows = per_session // window
    append_s = 0.0
    start = time.perf_counter()
    for w in range(windows):
        t0 = time.perf_counter()
        for session_id in ids:
            chunk = samples[w * window : (w + 1) * window]
            for i in range(0, window, PER_NOTIFICATION):
                writer.append_telemetry(session_id, chunk[i : i + PER_NOTIFICATION])
        append_s += time.perf_counter() - t0
        await writer.flush()
    elapsed = time.perf_counter() - start
    total = windows * window * sessions
    read_start = time.perf_counter()
    back = await writer.run(lambda s: history.read_telemetry(session=s, session_id=ids[0]))
    read_s = time.perf_counter() - read_start
    assert len(back) == windows * window
    await writer.close()
    engine.dispose()
    return {
        "samples_per_s": total / elapsed,
        "append_us_per_sample": append_s / total * 1e6,
        "db_bytes": db_size(path),
        "read_s": read_s,
    }


def bench_blob_rows(root: Path, samples: list[TelemetrySample]) -> float:
    """Only the INSERT of the chosen layout (1 s windows as packed rows), Core executemany."""
    engine = create_engine_from_settings(DatabaseSettings(url=f"sqlite:///{root / 'blob.db'}"))
    table = sa.table(
        "b", *(sa.column(n) for n in ("session_id", "seq", "first_frame", "t0_ms", "n", "data"))
    )
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE b (session_id TEXT, seq INTEGER, first_frame INTEGER, t0_ms INTEGER, "
            "n INTEGER, data BLOB, PRIMARY KEY (session_id, seq))"
        )
    rows = [
        {
            "session_id": "s",
            "seq": i // HZ,
            "first_frame": samples[i].frame,
            "t0_ms": i * 20,
            "n": HZ,
            "data": pack_samples(samples[i : i + HZ]),
        }
        for i in range(0, len(samples), HZ)
    ]
    start = time.perf_counter()
    for i in range(0, len(rows), 20):  # 20 rows (1000 samples) per transaction, like the floor
        with engine.begin() as connection:
            connection.execute(sa.insert(table), rows[i : i + 20])
    elapsed = time.perf_counter() - start
    engine.dispose()
    return len(samples) / elapsed


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def one_run(samples: list[TelemetrySample]) -> dict[str, Any]:
    rows = int_rows(samples)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        floor, floor_size, floor_read = bench_floor(root, rows)
        core = bench_core_rows(root, rows)
        blob = bench_blob_rows(root, samples)
        one = asyncio.run(_writer_run(root, "w1", samples, 1))
        fifty = asyncio.run(_writer_run(root, "w50", samples, 50))
    return {
        "floor": floor,
        "floor_size": floor_size,
        "floor_read": floor_read,
        "core": core,
        "blob": blob,
        "w1": one["samples_per_s"],
        "w1_append": one["append_us_per_sample"],
        "w1_size": one["db_bytes"],
        "w1_read": one["read_s"],
        "w50": fifty["samples_per_s"],
        "w50_append": fifty["append_us_per_sample"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    samples = make_samples()
    runs = [one_run(samples) for _ in range(args.runs)]
    floor = median(runs, "floor")

    def rate(key: str) -> dict[str, float]:
        value = median(runs, key)
        return {"samples_per_s": round(value), "vs_floor": round(value / floor, 2)}

    def fmt(value: float) -> float:
        return round(value, 3)

    print(
        json.dumps(
            {
                "session": {"hz": HZ, "minutes": SESSION_S // 60, "samples": N},
                "runs": args.runs,
                "floor_sqlite3_rows": {"samples_per_s": round(floor), "vs_floor": 1.0},
                "core_rows": rate("core"),
                "blob_rows": rate("blob"),
                "writer_1_session": rate("w1"),
                "writer_50_sessions": rate("w50"),
                "append_us_per_sample": {
                    "1_session": fmt(median(runs, "w1_append")),
                    "50_sessions": fmt(median(runs, "w50_append")),
                },
                "db_bytes_20min_session": {
                    "integer_rows": int(median(runs, "floor_size")),
                    "packed_blobs": int(median(runs, "w1_size")),
                    "raw_sample_bytes": N * SAMPLE_SIZE,
                },
                "read_back_s": {
                    "integer_rows_sqlite3": fmt(median(runs, "floor_read")),
                    "packed_blobs_to_samples": fmt(median(runs, "w1_read")),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
