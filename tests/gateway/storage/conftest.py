"""Fixtures of the storage suite: one database per test, on SQLite and on PostgreSQL.

``db_url`` is parametrized: a SQLite file under tmp_path, and a fresh schema on the local
PostgreSQL (``require_service`` skips on a laptop without it and fails under CI=true), selected
with ``search_path`` in the URL and dropped after the test. ``engine`` is migrated with
``upgrade``; ``writer`` is a started StorageWriter with a short flush window.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

import gateway

if getattr(gateway, "__file__", None) is None:  # pragma: no cover - a setup error, said plainly
    raise ImportError(
        "'gateway' was imported from tests/gateway (a namespace package), not the project: "
        "tests/ is on sys.path, so tests/gateway/storage shadows gateway.storage. Put the "
        'project root first: pythonpath = ["."] under [tool.pytest.ini_options] in pyproject.toml'
    )

from ble.protocol import IMPEDANCE_OPEN, DeviceState, FaultFlags, TelemetrySample
from gateway.config import DatabaseSettings
from gateway.storage import repo
from gateway.storage.engine import create_engine_from_settings, upgrade
from gateway.storage.writer import StorageWriter

HUB = "hub-test"
SampleFactory = Callable[..., list[TelemetrySample]]


def _root_conftest(config: pytest.Config) -> ModuleType:
    """tests/conftest.py (every conftest here is module "conftest", so look it up by content)."""
    for plugin in config.pluginmanager.get_plugins():
        is_module = isinstance(plugin, ModuleType)
        if is_module and hasattr(plugin, "require_service") and hasattr(plugin, "POSTGRES_URL"):
            return plugin
    raise RuntimeError("tests/conftest.py (require_service, POSTGRES_URL) is not loaded")


def postgres_url(config: pytest.Config, schema: str | None = None) -> str:
    """The test PostgreSQL URL (after require_service), optionally pinned to ``schema``."""
    root = _root_conftest(config)
    root.require_service("PostgreSQL", "127.0.0.1", 5432)
    url = make_url(root.POSTGRES_URL)
    if schema is not None:
        url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture
def pg_schema(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, uniquely named schema on the test PostgreSQL; yields a URL that uses it."""
    schema = f"mcgw_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url(request.config))
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield postgres_url(request.config, schema)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'mcgw.db'}"
    url: str = request.getfixturevalue("pg_schema")
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_engine_from_settings(DatabaseSettings(url=db_url))
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def writer(engine: Engine) -> AsyncIterator[StorageWriter]:
    writer = StorageWriter(engine, flush_s=0.2)
    await writer.start()
    yield writer
    await writer.close()


@pytest.fixture
async def user_id(writer: StorageWriter) -> int:
    user = await writer.run(lambda s: repo.create_user(session=s, name="ada"))
    assert user.id is not None
    return user.id


def make_samples(
    count: int, *, start_frame: int = 0, start_ms: int = 5_000, hz: int = 50, **fixed: Any
) -> list[TelemetrySample]:
    """``count`` plausible samples at ``hz``, varied in every field (so layouts are tested)."""
    step = 1000 // hz
    samples = []
    for i in range(count):
        current = 200 + round(60 * math.sin(i / 17))
        values: dict[str, Any] = {
            "frame": (start_frame + i) % 65536,
            "device_time_ms": (start_ms + i * step) % (1 << 32),
            "state": DeviceState.RUNNING if i % 97 else DeviceState.PAUSED,
            "segment_id": i // 500,
            "segment_elapsed_ms": (i % 500) * step,
            "current_mean_ua": current,
            "current_peak_ua": current + 15 + i % 7,
            "impedance_10ohm": IMPEDANCE_OPEN if i % 251 == 0 else 450 + i % 40,
            "contact_quality": 100 - i % 30,
            "battery_pct": 100 - (i // 1000) % 100,
            "temperature_dc": 320 + i % 25 - (30 if i % 333 == 0 else 0),
            "faults": FaultFlags.LOW_BATTERY if i % 211 == 0 else FaultFlags.NONE,
        }
        values.update(fixed)
        samples.append(TelemetrySample(**values))
    return samples


@pytest.fixture
def sample_factory() -> SampleFactory:
    return make_samples
