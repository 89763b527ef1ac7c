"""Fixtures of the API suite (helpers live in tests/api/hub.py, importable by test modules)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.hub import Hub, make_settings, serve


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    """A running hub of its own: app, database and virtual radio."""
    async with serve(make_settings(tmp_path)) as running:
        yield running
