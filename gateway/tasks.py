"""Owned background tasks: every long-lived task is created here, so none is lost or leaked.

``TaskOwner.spawn`` keeps a strong reference to the task (asyncio only keeps weak ones), logs an
exception that escapes it, and ``close()`` cancels and awaits every task still running. The
gateway runtime owns one; each component that runs tasks gets it (or a child) injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")

log = logging.getLogger(__name__)


class TaskOwner:
    """Creates, tracks and finally cancels background tasks."""

    def __init__(self, name: str = "mcgw") -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T]:
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.name} is shut down; cannot start {name}")
        task = asyncio.create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s failed", task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task and wait for all of them to finish."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
