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


async def test_a_caller_cancelled_as_its_read_finishes_is_still_cancelled(tmp_path: Path) -> None:
    """A task cancelled (at shutdown) in the instant its read completes must end cancelled,
    not carry on with the result: a poll loop that lost its cancellation could never be
    stopped. Python 3.11's ``asyncio.wait_for`` loses it there. The read itself schedules the
    cancel, ``hops`` turns of the event loop after it returns, so every step of the result's
    way back to the caller is tried as the moment of the cancel."""
    reader = StorageReader(sa.create_engine(f"sqlite:///{tmp_path / 'r.db'}"))
    loop = asyncio.get_running_loop()
    outcomes: list[str] = []
    try:
        for hops in range(8):
            running: list[asyncio.Task[int]] = []
            asked: list[bool] = []

            def cancel_after(
                n: int, running: list[asyncio.Task[int]] = running, asked: list[bool] = asked
            ) -> None:
                if n:
                    loop.call_soon(cancel_after, n - 1)
                else:
                    asked.extend(task.cancel() for task in running)

            def read(*, session: Any, hops: int = hops) -> int:
                loop.call_soon_threadsafe(cancel_after, hops)
                return 7

            task = asyncio.create_task(reader.run(read))
            running.append(task)
            try:
                await task
            except asyncio.CancelledError:
                outcomes.append("cancelled")
            else:
                outcomes.append("cancelled, then lost" if asked == [True] else "done first")
        assert "cancelled, then lost" not in outcomes, outcomes
        assert outcomes[0] == "cancelled", outcomes  # the window is reached, not only passed
    finally:
        reader.close()
