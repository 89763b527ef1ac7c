"""The storage reader: reads off the event loop, under a timeout, that never pile up.

A real SQLite file; the "stuck database" is a read that blocks its thread.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.errors import StorageUnavailable
from gateway.storage.reader import READ_THREADS, StorageReader


async def test_a_read_that_timed_out_before_it_started_never_runs(tmp_path: Path) -> None:
    """While every reader thread is stuck, polls that time out must not queue up behind them
    and run, stale, when the database answers again."""
    reader = StorageReader(sa.create_engine(f"sqlite:///{tmp_path / 'r.db'}"), timeout_s=0.2)
    release = threading.Event()
    ran: list[str] = []

    def stuck(*, session: Any) -> None:
        release.wait(10)

    def poll(*, session: Any) -> None:
        ran.append("poll")

    try:
        blocked = [
            asyncio.create_task(reader.run(stuck, timeout_s=10)) for _ in range(READ_THREADS)
        ]
        await asyncio.sleep(0.1)
        for _ in range(5):
            with pytest.raises(StorageUnavailable, match=r"longer than 0\.2 s"):
                await reader.run(poll)
        release.set()
        await asyncio.gather(*blocked)
        assert (
            await reader.run(lambda *, session: session.execute(sa.text("select 7")).scalar()) == 7
        )
        assert ran == []
    finally:
        release.set()
        reader.close()
