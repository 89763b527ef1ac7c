"""Keeps the hub's :class:`~gateway.access.AccessPolicy` in step with storage.

* :meth:`AccessSync.load` reads the first snapshot at start (the API answers nobody before it);
* :meth:`AccessSync.run` polls the access epoch every ``poll_s`` (one tiny read on the storage
  reader, never behind the writer) and reloads the snapshot when another process changed
  access: ``mcgw token revoke`` or another hub on the same database reaches this hub's open
  connections within ``poll_s`` plus one read;
* :meth:`AccessSync.reload` is called by the API right after its own access-changing write
  commits, so such a change takes effect before the response is sent;
* :meth:`AccessSync.refresh` lets an unknown token wait for one epoch check that began after it
  arrived (a token made by ``mcgw token create`` a moment ago works at once); concurrent callers
  share that check, and checks are spaced ``REFRESH_SPACING_S`` apart, so a flood of unknown
  tokens costs one small read per spacing, never one per request;
* tokens in use are noted in memory and their ``last_used_at`` written every
  ``TOUCH_EVERY_S`` in the background (a figure for people: it never delays a request).

When storage is down the policy keeps its last snapshot: known tokens keep working (a stop is
never refused for storage's sake) and the loop logs the outage once and the recovery once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from datetime import UTC, datetime

from sqlmodel import Session

from gateway.access import AccessPolicy, Principal, snapshot_of
from gateway.errors import GatewayError
from gateway.storage.access import AccessRows, load_access_rows, read_access_epoch, touch_tokens
from gateway.storage.reader import StorageReader
from gateway.storage.writer import StorageWriter

log = logging.getLogger(__name__)

ACCESS_POLL_S = 0.5
"""How often the access epoch is read: a change made elsewhere applies within this (plus a read)."""
REFRESH_SPACING_S = 0.1
"""Least time between two epoch checks asked for by unknown tokens (they wait for the next)."""
TOUCH_EVERY_S = 60.0
"""How often ``last_used_at`` of used tokens is written (its resolution)."""


class AccessSync:
    """Loads, polls and reloads the access snapshot; see the module docstring."""

    def __init__(
        self,
        policy: AccessPolicy,
        *,
        reader: StorageReader,
        writer: StorageWriter,
        hub_id: str,
        poll_s: float = ACCESS_POLL_S,
    ) -> None:
        self.policy = policy
        self._reader = reader
        self._writer = writer
        self._hub_id = hub_id
        self._poll_s = poll_s
        self._lock = asyncio.Lock()
        self._check_began = -REFRESH_SPACING_S
        """When the last completed epoch check (or load) began, monotonic seconds."""
        self._failing = False
        self._used: dict[int, datetime] = {}
        self._touched: dict[int, float] = {}

    async def load(self) -> None:
        """Read the whole snapshot now (StorageUnavailable if storage does not answer)."""
        async with self._lock:
            await self._load()

    async def _load(self) -> None:
        began = time.monotonic()
        rows: AccessRows = await self._reader.run(load_access_rows, hub_id=self._hub_id)
        self.policy.replace(
            snapshot_of(
                epoch=rows.epoch,
                users=rows.users,
                tokens=((t.token_hash, t.id, t.user_id) for t in rows.tokens),
                owners=rows.owners,
            )
        )
        self._check_began = began

    async def reload(self) -> None:
        """After this hub changed access: apply it now. A failure leaves it to the poll."""
        try:
            await self.load()
        except GatewayError as exc:
            log.warning("could not reload access after a change (the poll will): %s", exc)

    async def refresh(self, spacing_s: float = REFRESH_SPACING_S) -> None:
        """Return once the epoch was checked by a read that began after this call did.

        A token committed before the call is then known. Concurrent callers share one check;
        a check asked for within ``spacing_s`` of the previous one waits out the rest of it,
        so a flood of unknown tokens costs one small read per ``spacing_s``.
        """
        asked = time.monotonic()
        async with self._lock:
            if self._check_began > asked:
                return  # a check began after we asked while we waited for the lock
            wait = self._check_began + spacing_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._check()

    async def _check(self) -> None:
        """Read the epoch; reload the snapshot if it moved (the caller holds the lock)."""
        began = time.monotonic()
        epoch = await self._reader.run(read_access_epoch)
        self._check_began = began
        if epoch != self.policy.epoch:
            await self._load()

    async def _poll(self) -> None:
        """One poll: check the epoch unless a check began within the last half poll."""
        async with self._lock:
            if time.monotonic() - self._check_began >= self._poll_s / 2:
                await self._check()

    def used(self, principal: Principal) -> None:
        """Note that a token was used now (memory only; written later)."""
        token_id = principal.token_id
        if token_id is None:
            return
        now = time.monotonic()
        if now - self._touched.get(token_id, -TOUCH_EVERY_S) >= TOUCH_EVERY_S:
            self._touched[token_id] = now
            self._used[token_id] = datetime.now(UTC)

    async def run(self) -> None:
        """Poll the epoch forever; write ``last_used_at`` now and then."""
        next_touch = time.monotonic() + TOUCH_EVERY_S
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self._poll()
            except Exception as exc:  # the poll outlives any one failure
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "cannot read access changes from storage (keeping the last known "
                        "users and tokens): %s",
                        exc,
                        exc_info=not isinstance(exc, GatewayError),  # a bug: show where
                    )
            else:
                if self._failing:
                    self._failing = False
                    log.info("access changes are read from storage again")
            # A figure, not worth a write the database would refuse: kept until it takes writes.
            if (
                self._used
                and time.monotonic() >= next_touch
                and self._writer.stats.failing_since is None
            ):
                next_touch = time.monotonic() + TOUCH_EVERY_S
                used, self._used = self._used, {}
                # A figure, not a record: fire-and-forget on the writer is enough.
                self._writer.submit(functools.partial(_touch, used=used))


def _touch(session: Session, *, used: dict[int, datetime]) -> None:
    touch_tokens(session=session, used=used)
