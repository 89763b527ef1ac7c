"""Reads off the event loop that never queue behind writes.

``StorageWriter`` runs every write on one thread, in order; a read sent there waits for every
telemetry flush and job queued before it, and for as long as a locked database holds the writer.
``StorageReader`` runs reads on threads of its own, each in a fresh session that is rolled back
(nothing a read does is ever committed), under a timeout. Reads on SQLite in WAL mode are not
blocked by another connection's write; on PostgreSQL they take a pooled connection.

Use it for reads that something time-critical waits on (the access snapshot and its epoch);
what the writer must see in order (read-your-writes of a job) stays on the writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from gateway.errors import GatewayError, StorageUnavailable

_T = TypeVar("_T")

READ_TIMEOUT_S = 5.0
"""Longest a read may take before the caller gets StorageUnavailable (the thread may go on)."""
READ_THREADS = 2


class StorageReader:
    """Runs ``fn(session=...)`` on a reader thread; see the module docstring."""

    def __init__(self, engine: Engine, *, timeout_s: float = READ_TIMEOUT_S) -> None:
        self._engine = engine
        self._timeout_s = timeout_s
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=READ_THREADS, thread_name_prefix="mcgw-read"
        )

    async def run(
        self, fn: Callable[..., _T], /, *, timeout_s: float | None = None, **kwargs: Any
    ) -> _T:
        """``fn(session=<read-only session>, **kwargs)``; StorageUnavailable on failure/time-out."""
        limit = self._timeout_s if timeout_s is None else timeout_s
        submitted = self._pool.submit(self._call, fn, kwargs)
        wrapped = asyncio.wrap_future(submitted)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result of a
            # read that finished just as the caller was cancelled, and the cancellation is lost
            # (a task that could then never be stopped).
            async with asyncio.timeout(limit):
                return await asyncio.shield(wrapped)
        except TimeoutError:
            # Whatever it ends with is nobody's news now. Not started yet (the threads are
            # stuck on a locked database): it never runs, so reads do not pile up behind them.
            submitted.cancel()
            wrapped.add_done_callback(_ignore_outcome)
            raise StorageUnavailable(
                f"a storage read took longer than {limit:g} s; the database is locked or "
                "unreachable"
            ) from None

    def _call(self, fn: Callable[..., _T], kwargs: dict[str, Any]) -> _T:
        try:
            with Session(self._engine, expire_on_commit=False) as session:
                try:
                    return fn(session=session, **kwargs)
                finally:
                    session.rollback()
        except GatewayError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise StorageUnavailable(f"a storage read failed: {exc}; check the database") from exc

    def close(self) -> None:
        """Stop taking reads; a read still running finishes on its own (it is never waited for)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
