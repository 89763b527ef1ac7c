"""The access snapshot kept in step with storage: a token committed elsewhere is known at once.

A real database (SQLite and PostgreSQL); the "other process" is a second engine writing the
token the way ``mcgw token create`` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from gateway.access import AccessPolicy
from gateway.access_sync import AccessSync
from gateway.storage import repo
from gateway.storage.access import read_access_epoch
from gateway.storage.reader import StorageReader
from gateway.storage.writer import StorageWriter

PEPPER = "pepper"
HUB = "hub-test"


class CountingReader(StorageReader):
    """A real reader that counts the epoch reads it ran."""

    epoch_reads = 0

    async def run(self, fn: Any, /, *, timeout_s: float | None = None, **kwargs: Any) -> Any:
        if fn is read_access_epoch:
            self.epoch_reads += 1
        return await super().run(fn, timeout_s=timeout_s, **kwargs)


@pytest.fixture
async def synced(engine: Engine, writer: StorageWriter) -> AsyncIterator[AccessSync]:
    reader = CountingReader(engine)
    sync = AccessSync(
        AccessPolicy(pepper=PEPPER, session_owner=lambda _id: None),
        reader=reader,
        writer=writer,
        hub_id=HUB,
    )
    await sync.load()
    yield sync
    reader.close()


def token_made_elsewhere(engine: Engine) -> str:
    """A user and a token committed in another session, as ``mcgw token create`` does."""
    with Session(engine) as session:
        user = repo.create_user(session=session, name="ada")
        assert user.id is not None
        _, token = repo.create_token(session=session, user_id=user.id, name="t", pepper=PEPPER)
        session.commit()
    return token


async def test_a_token_made_right_after_a_check_is_known_on_its_first_use(
    engine: Engine, synced: AccessSync
) -> None:
    """The epoch was checked a moment before the token was made: the token's first request
    must not be refused because a check happened "recently" (it happened before the token)."""
    await synced.refresh()
    token = token_made_elsewhere(engine)
    assert synced.policy.authenticate(token) is None  # not loaded yet: only a check finds it
    await synced.refresh()
    principal = synced.policy.authenticate(token)
    assert principal is not None
    assert principal.name == "ada"


async def test_unknown_tokens_arriving_together_share_one_check(synced: AccessSync) -> None:
    reader = synced._reader
    assert isinstance(reader, CountingReader)
    before = reader.epoch_reads
    await asyncio.gather(*(synced.refresh() for _ in range(20)))
    assert reader.epoch_reads - before == 1
