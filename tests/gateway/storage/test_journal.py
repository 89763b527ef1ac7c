"""The session journal and the writer's handling of its entries (S9 under storage faults).

The database "fails" by losing its sessions table (renamed away and back), which refuses every
session write on SQLite and PostgreSQL alike, at once and for as long as the test wants. The
fault suite (tests/e2e/test_faults.py) does the same to a real `mcgw serve` with locks,
read-only files and killed connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session as SqlSession

from ble.protocol import TelemetrySample
from gateway import recorder
from gateway.config import DatabaseSettings
from gateway.errors import NotFound
from gateway.recorder import StorageRecorder
from gateway.session import Session
from gateway.storage import history, repo
from gateway.storage.engine import create_engine_from_settings, upgrade
from gateway.storage.journal import OPS, Entry, JournalUnavailable, SessionJournal
from gateway.storage.journal_applier import APPLY, applied_rid
from gateway.storage.writer import StorageWriter
from tests.conftest import immutable

HUB = "hub-test"
SampleFactory = Callable[..., list[TelemetrySample]]


@contextlib.contextmanager
def outage(engine: Engine) -> Iterator[None]:
    """Every session write fails until the block ends (the table is not there)."""
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE sessions RENAME TO sessions_away"))
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE sessions_away RENAME TO sessions"))


@contextlib.asynccontextmanager
async def journaled(
    engine: Engine, path: Path
) -> AsyncIterator[tuple[SessionJournal, StorageWriter]]:
    """A writer and a journal wired as the runtime wires them (replaying what the file holds)."""
    writer = StorageWriter(engine, flush_s=0.1)
    await writer.start()
    journal = SessionJournal(path, on_durable=writer.entries)
    writer.use_journal(hub_id=HUB, on_applied=journal.applied)
    mark = await writer.run(lambda s: applied_rid(session=s, hub_id=HUB))
    left = [e for e in journal.load() if e.rid > mark]
    if left:
        mark, _ = await writer.replay(left)
    journal.start(applied_rid=mark)
    try:
        yield journal, writer
    finally:
        journal.close()
        await writer.close()


async def settled(journal: SessionJournal, writer: StorageWriter) -> None:
    await asyncio.wrap_future(journal.sync())
    await writer.flush()


def record(journal: SessionJournal, session_id: str, owner: int) -> None:
    """A whole session's records: created, running, a cue, paused, stopped with its dose."""
    journal.append(
        "create",
        {
            "session_id": session_id,
            "owner_id": owner,
            "device_address": "AA:01",
            "program_slug": "quick-lift",
            "intensity": 2,
            "planned_s": 300,
        },
    )
    journal.append(
        "state", {"session_id": session_id, "state": "running", "reason": "started", "level": 2}
    )
    journal.append("event", {"session_id": session_id, "kind": "move", "detail": {"step": 0}})
    journal.append(
        "state", {"session_id": session_id, "state": "paused", "reason": "contact lost", "level": 3}
    )
    journal.append(
        "finish",
        {
            "session_id": session_id,
            "state": "stopped",
            "reason": "stopped by user 1",
            "delivered_s": 12.5,
            "dose_uas_by_zone": {"forehead": 1800.0},
        },
    )


async def stored(writer: StorageWriter, session_id: str) -> history.SessionDetail:
    detail: history.SessionDetail = await writer.run(
        lambda s: history.get_session_detail(session=s, session_id=session_id)
    )
    return detail


def test_entries_round_trip_and_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = SessionJournal(path, on_durable=lambda _entries: None)
    journal.start()
    written = [
        journal.append("event", {"session_id": "s", "kind": "k", "detail": {"n": n}})
        for n in range(3)
    ]
    entries = [future.result(timeout=5) for future in written]
    journal.close()
    assert [e.rid for e in entries] == [1, 2, 3]
    with path.open("ab") as handle:
        handle.write(b'{"rid": 4, "op": "ev')  # the process died mid-line
    again = SessionJournal(path, on_durable=lambda _entries: None)
    loaded = again.load()
    assert loaded == entries
    assert Entry.from_line(entries[0].to_line()) == entries[0]
    again.start()
    assert again.append("event", {"session_id": "s", "kind": "k", "detail": {}}).result(5).rid == 4
    again.close()
    with pytest.raises(ValueError, match="unknown journal operation"):
        again.append("drop_table", {})


def _events(journal: SessionJournal, count: int) -> list[Entry]:
    written = [
        journal.append("event", {"session_id": "s", "kind": "k", "detail": {"n": n}})
        for n in range(count)
    ]
    return [future.result(timeout=5) for future in written]


@pytest.mark.parametrize(
    "fragment",
    [b'{"rid": 3, "op": "ev', b'{"rid":3,"op":"event","at":"2026-01-01T00:00:00+00:00"'],
    ids=["torn-line", "torn-json"],
)
def test_a_record_appended_after_a_torn_line_survives_the_next_load(
    tmp_path: Path, fragment: bytes
) -> None:
    path = tmp_path / "j.jsonl"
    journal = SessionJournal(path, on_durable=lambda _entries: None)
    journal.start()
    before = _events(journal, 2)
    journal.close()
    with path.open("ab") as handle:
        handle.write(fragment)  # the process died mid-line
    again = SessionJournal(path, on_durable=lambda _entries: None)
    assert again.load() == before
    again.start()
    after = _events(again, 1)
    again.close()
    assert SessionJournal(path, on_durable=lambda _entries: None).load() == before + after


def test_a_complete_last_line_without_its_newline_is_kept_and_ended(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = SessionJournal(path, on_durable=lambda _entries: None)
    journal.start()
    before = _events(journal, 2)
    journal.close()
    path.write_bytes(path.read_bytes()[:-1])  # the newline of the last line never made it
    again = SessionJournal(path, on_durable=lambda _entries: None)
    assert again.load() == before
    again.start()
    after = _events(again, 1)
    again.close()
    assert SessionJournal(path, on_durable=lambda _entries: None).load() == before + after


async def test_records_wait_out_an_outage_and_apply_in_order_exactly_once(
    engine: Engine, tmp_path: Path, user_id: int
) -> None:
    async with journaled(engine, tmp_path / "j.jsonl") as (journal, writer):
        with outage(engine):
            record(journal, "s-outage", user_id)
            await asyncio.wrap_future(journal.sync())
            while writer.stats.failing_since is None:
                await asyncio.sleep(0.02)
            assert writer.stats.records_pending == 5
        await settled(journal, writer)
        assert writer.stats.records_pending == 0
        assert writer.stats.failing_since is None
        detail = await stored(writer, "s-outage")
        assert (detail.session.state, detail.session.end_reason) == ("stopped", "stopped by user 1")
        assert detail.session.dose_uas_by_zone == {"forehead": 1800.0}
        assert detail.session.intensity == 3
        kinds = [(e.kind, e.detail.get("state")) for e in detail.events]
        assert kinds == [
            ("created", None),
            ("state", "running"),
            ("move", None),
            ("state", "paused"),
            ("state", "stopped"),
        ]
        # Applying the same entries again (a crash between commit and compaction) changes nothing.
        mark, skipped = await writer.replay(journal.load())
        assert (mark, skipped) == (5, 0)
        assert len((await stored(writer, "s-outage")).events) == 5


async def test_telemetry_waits_for_its_session_row_instead_of_being_dropped(
    engine: Engine, tmp_path: Path, user_id: int, sample_factory: SampleFactory
) -> None:
    async with journaled(engine, tmp_path / "j.jsonl") as (journal, writer):
        with outage(engine):
            record(journal, "s-tele", user_id)
            writer.append_telemetry("s-tele", sample_factory(120))
            await asyncio.wrap_future(journal.sync())
            await asyncio.sleep(0.3)  # several flush windows go by during the outage
            assert writer.stats.buffered_samples == 120
        await settled(journal, writer)
        rows = await writer.run(
            lambda s: history.telemetry_rows(session=s, session_id="s-tele", every_ms=None)
        )
        assert len(rows) == 120
        assert writer.stats.dropped_samples == 0


async def test_a_crash_during_an_outage_loses_no_journaled_record(
    engine: Engine, tmp_path: Path, user_id: int
) -> None:
    path = tmp_path / "j.jsonl"
    with outage(engine):
        async with journaled(engine, path) as (journal, _writer):
            record(journal, "s-crash", user_id)
            await asyncio.wrap_future(journal.sync())
        # The process is gone; the database never took a record (its last try failed too).
    async with journaled(engine, path) as (journal, writer):
        detail = await stored(writer, "s-crash")
        assert detail.session.state == "stopped"
        assert detail.session.end_reason == "stopped by user 1"
        assert await writer.run(lambda s: applied_rid(session=s, hub_id=HUB)) == 5
        # New records continue the numbering; nothing is applied twice.
        journal.append("event", {"session_id": "s-crash", "kind": "note", "detail": {}})
        await settled(journal, writer)
        assert [e.kind for e in (await stored(writer, "s-crash")).events][-1] == "note"
        assert await writer.run(lambda s: applied_rid(session=s, hub_id=HUB)) == 6


async def test_a_record_the_rules_refuse_is_skipped_not_wedging_the_rest(
    engine: Engine, tmp_path: Path, user_id: int
) -> None:
    async with journaled(engine, tmp_path / "j.jsonl") as (journal, writer):
        journal.append("event", {"session_id": "never-created", "kind": "move", "detail": {}})
        record(journal, "s-after", user_id)
        await settled(journal, writer)
        assert writer.stats.records_skipped == 1
        assert (await stored(writer, "s-after")).session.state == "stopped"


async def test_the_file_is_emptied_once_the_database_has_everything(
    engine: Engine, tmp_path: Path, user_id: int
) -> None:
    # However small: what it kept would replay into the next database the hub meets (a fresh
    # SQLite file after mcgw.db was deleted starts at mark 0).
    path = tmp_path / "j.jsonl"
    async with journaled(engine, path) as (journal, writer):
        record(journal, "s-compact", user_id)
        await settled(journal, writer)
        for _ in range(100):
            if path.stat().st_size == 0:
                break
            await asyncio.wrap_future(journal.sync())
            await asyncio.sleep(0.02)
        assert path.stat().st_size == 0
        assert (await stored(writer, "s-compact")).session.state == "stopped"
    assert SessionJournal(path, on_durable=lambda _entries: None).load() == []


async def test_a_journal_kept_beside_a_deleted_database_replays_nothing_into_the_new_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.jsonl"
    engines: list[Engine] = []
    for name in ("mcgw.db", "fresh.db"):  # mcgw.db deleted: the hub makes a fresh one
        engine = create_engine_from_settings(DatabaseSettings(url=f"sqlite:///{tmp_path / name}"))
        upgrade(engine)
        engines.append(engine)
    try:
        users = []
        for engine in engines:  # the same user in both, so a replayed record would apply
            with SqlSession(engine, expire_on_commit=False) as s:
                users.append(repo.create_user(session=s, name="ada"))
                s.commit()
        assert users[0].id is not None
        assert users[0].id == users[1].id
        async with journaled(engines[0], path) as (journal, writer):
            record(journal, "s-old", users[0].id)
            await settled(journal, writer)
            assert (await stored(writer, "s-old")).session.state == "stopped"
        async with journaled(engines[1], path) as (journal, writer):
            await settled(journal, writer)
            with pytest.raises(NotFound):
                await stored(writer, "s-old")
    finally:
        for engine in engines:
            engine.dispose()


def create(journal: SessionJournal, session_id: str, owner: int, key: str | None = None) -> None:
    journal.append(
        "create",
        {
            "session_id": session_id,
            "owner_id": owner,
            "device_address": "AA:01",
            "program_slug": "quick-lift",
            "intensity": 2,
            "planned_s": 300,
            "idempotency_key": key,
        },
    )


def finish(journal: SessionJournal, session_id: str) -> None:
    journal.append(
        "finish",
        {
            "session_id": session_id,
            "state": "stopped",
            "reason": "stopped by user 1",
            "delivered_s": 3.0,
            "dose_uas_by_zone": {"forehead": 100.0},
        },
    )


async def test_a_session_that_reuses_an_idempotency_key_is_still_recorded(
    engine: Engine, tmp_path: Path, user_id: int
) -> None:
    async with journaled(engine, tmp_path / "j.jsonl") as (journal, writer):
        create(journal, "s-first", user_id, key="req-1")
        finish(journal, "s-first")
        # Another session ran with the same owner and key (a reused key, or another hub that
        # raced this one): it ran, so it is recorded, without the key.
        create(journal, "s-second", user_id, key="req-1")
        journal.append(
            "state", {"session_id": "s-second", "state": "running", "reason": "started", "level": 2}
        )
        journal.append("event", {"session_id": "s-second", "kind": "move", "detail": {}})
        finish(journal, "s-second")
        await settled(journal, writer)
        assert writer.stats.records_skipped == 0
        first, second = await stored(writer, "s-first"), await stored(writer, "s-second")
        assert first.session.idempotency_key == "req-1"
        assert (second.session.state, second.session.idempotency_key) == ("stopped", None)
        assert second.session.dose_uas_by_zone == {"forehead": 100.0}
        duplicate = [e for e in second.events if e.kind == "duplicate_idempotency_key"]
        assert [e.detail for e in duplicate] == [
            {"idempotency_key": "req-1", "session_id": "s-first"}
        ]
        assert "move" in [e.kind for e in second.events]


def a_session(session_id: str, owner: int) -> Session:
    """What the recorder reads of a session about to start."""
    program = SimpleNamespace(slug="quick-lift", duration_s=300)
    return cast(
        Session,
        SimpleNamespace(
            id=session_id,
            owner=str(owner),
            address="AA:01",
            program=program,
            level=2,
            idempotency_key=None,
            limited_by_cap=False,
        ),
    )


def test_a_withdrawn_entry_is_never_written_and_takes_no_number(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = SessionJournal(path, on_durable=lambda _entries: None)
    withdrawn = journal.append("event", {"session_id": "s", "kind": "k", "detail": {}})
    assert withdrawn.cancel()  # still queued (the journal thread has not taken it)
    journal.start()
    kept = journal.append("event", {"session_id": "s", "kind": "kept", "detail": {}}).result(5)
    journal.close()
    assert kept.rid == 1
    assert SessionJournal(path, on_durable=lambda _entries: None).load() == [kept]
    assert journal.backlog == 1  # the kept one, not yet applied (nothing applies here)


async def test_a_start_refused_for_a_failing_journal_leaves_no_session_behind(
    engine: Engine, tmp_path: Path, user_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder, "OPEN_TIMEOUT_S", 0.3)
    async with journaled(engine, tmp_path / "j.jsonl") as (journal, writer):
        sessions = StorageRecorder(journal, writer, hub_id=HUB)
        with immutable(journal.path):
            # The journal thread takes the record but cannot write it in time.
            late = a_session("s-late", user_id)
            with pytest.raises(JournalUnavailable, match="none starts"):
                await sessions.opened(late)
            assert journal.failing is not None
            # Known to be failing: refused at once, nothing queued.
            refused = a_session("s-refused", user_id)
            backlog = journal.backlog
            with pytest.raises(JournalUnavailable, match="cannot be written"):
                await sessions.opened(refused)
            assert journal.backlog == backlog
        while journal.failing is not None or journal.backlog:
            await asyncio.sleep(0.02)
        await settled(journal, writer)
        assert writer.stats.records_skipped == 0
        detail = await stored(writer, "s-late")
        assert detail.session.state == "failed"
        assert detail.session.end_reason is not None
        assert "not started" in detail.session.end_reason
        with pytest.raises(NotFound):
            await stored(writer, "s-refused")
        # Only sessions whose record is on disk are tracked, so none of these is.
        sessions.session_changed(late)
        assert journal.backlog == 0


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """The kernel refuses to grow any file of this process past ``limit`` bytes (a full disk,
    as far as the journal can tell): a write across it is cut short, the next fails (EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_partly_written_group_is_cut_off_and_written_once_when_the_disk_recovers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.jsonl"
    journal = SessionJournal(path, on_durable=lambda _entries: None)
    journal.start()
    # Enough already in the file that the limit stays far above anything else pytest writes.
    before = _events(journal, 600)
    written: list[Entry] = []
    for _ in range(2):  # twice: the second failure must also rewind to a line boundary
        with file_size_limit(path.stat().st_size + 100):
            group = [
                journal.append("event", {"session_id": "s", "kind": "k", "detail": {"n": n}})
                for n in range(3)
            ]
            deadline = time.monotonic() + 10
            while journal.failing is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert journal.failing is not None
            assert not any(future.done() for future in group)
        written += [future.result(timeout=10) for future in group]
    assert journal.failing is None
    journal.close()
    assert SessionJournal(path, on_durable=lambda _entries: None).load() == before + written


async def test_on_sqlite_records_commit_with_a_synced_wal_and_telemetry_without(
    tmp_path: Path, sample_factory: SampleFactory
) -> None:
    """The journal drops what the database says it has: on SQLite (WAL, synchronous=NORMAL,
    whose commits a power cut may roll back) that commit must be synced first. Each commit
    is checked for the ``synchronous`` level its connection had (SQLite's own trace)."""
    statements: list[tuple[int, str]] = []
    engine = create_engine_from_settings(DatabaseSettings(url=f"sqlite:///{tmp_path / 'm.db'}"))

    def trace(dbapi_connection: Any, _record: Any) -> None:
        key = id(dbapi_connection)
        dbapi_connection.set_trace_callback(lambda sql: statements.append((key, sql)))

    sa.event.listen(engine, "connect", trace)
    try:
        upgrade(engine)
        async with journaled(engine, tmp_path / "j.jsonl") as (journal, writer):
            user = await writer.run(lambda s: repo.create_user(session=s, name="ada"))
            assert user.id is not None
            record(journal, "s-durable", user.id)
            await settled(journal, writer)
            writer.append_telemetry("s-durable", sample_factory(50))
            await writer.flush()
    finally:
        engine.dispose()
    level: dict[int, str] = {}
    writes: dict[int, set[str]] = {}
    commits: list[tuple[str, set[str]]] = []
    for key, sql in statements:
        words = sql.split()
        if sql.upper().startswith("PRAGMA SYNCHRONOUS="):
            level[key] = sql.split("=", 1)[1].strip().upper()
        elif words and words[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            table = words[2] if words[0].upper() != "UPDATE" else words[1]
            writes.setdefault(key, set()).add(table.strip('"'))
        elif words and words[0].upper() == "COMMIT":
            commits.append((level.get(key, "NORMAL"), writes.pop(key, set())))
    records = [lvl for lvl, tables in commits if tables & {"sessions", "journal_marks"}]
    telemetry = [lvl for lvl, tables in commits if "telemetry" in tables]
    assert records
    assert set(records) == {"FULL"}
    assert telemetry
    assert set(telemetry) == {"NORMAL"}


async def test_a_record_the_database_refuses_is_skipped_and_the_batch_goes_on(
    engine: Engine, tmp_path: Path, user_id: int
) -> None:
    async with journaled(engine, tmp_path / "j.jsonl") as (journal, writer):
        create(journal, "s-taken", user_id)
        await settled(journal, writer)
        # The same id again, in a later batch: the database's primary key refuses it
        # (IntegrityError). Retrying cannot help; it must not hold back what follows.
        create(journal, "s-taken", user_id)
        record(journal, "s-next", user_id)
        await settled(journal, writer)
        assert writer.stats.records_pending == 0
        assert writer.stats.records_skipped == 1
        assert (await stored(writer, "s-next")).session.state == "stopped"
        assert len((await stored(writer, "s-taken")).events) == 1  # created, once


async def test_the_database_gets_what_a_replay_of_the_file_would_give_it(
    engine: Engine, tmp_path: Path, user_id: int
) -> None:
    path = tmp_path / "j.jsonl"
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with journaled(engine, path) as (journal, writer):
        create(journal, "s-json", user_id)
        # Values JSON cannot hold as they are: kept as text, on the live path too.
        event = journal.append(
            "event",
            {"session_id": "s-json", "kind": "note", "detail": {"at": when, "zones": ("a", "b")}},
        )
        written = await asyncio.wrap_future(event)
        await settled(journal, writer)
        assert writer.stats.records_skipped == 0
        detail = await stored(writer, "s-json")
    assert Entry.from_line(written.to_line()) == written  # what a replay reads back
    assert written.args["detail"] == {"at": str(when), "zones": ["a", "b"]}
    assert detail.events[-1].detail == written.args["detail"]


def test_full_counts_only_what_the_database_has_not_taken_and_the_applied_head_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.storage.journal.COMPACT_BYTES", 1000)
    path = tmp_path / "j.jsonl"
    journal = SessionJournal(path, on_durable=lambda _entries: None, max_bytes=2000)
    journal.start()
    entries = [_events(journal, 1)[0] for _ in range(40)]  # one group each; about 3.5 kB
    assert path.stat().st_size > journal.max_bytes
    assert journal.full  # nothing is applied yet
    # A database that lags but keeps up: all but the last few are applied.
    journal.applied(entries[-5].rid)
    journal.sync().result(timeout=5)
    assert not journal.full
    # The applied head was dropped: the file holds the unapplied tail only, replaced whole.
    assert SessionJournal(path, on_durable=lambda _entries: None).load() == entries[-4:]
    more = _events(journal, 2)
    assert [e.rid for e in more] == [41, 42]
    journal.close()
    assert SessionJournal(path, on_durable=lambda _entries: None).load() == entries[-4:] + more
    assert not path.with_name(path.name + ".tmp").exists()


async def test_a_backlog_is_applied_in_chunks_each_moving_the_mark(
    engine: Engine, tmp_path: Path, user_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.storage.writer.RECORD_CHUNK", 2)
    marks: list[int] = []
    async with journaled(engine, tmp_path / "j.jsonl") as (journal, writer):

        def on_applied(rid: int) -> None:
            marks.append(rid)
            journal.applied(rid)

        writer.use_journal(hub_id=HUB, on_applied=on_applied)
        with outage(engine):
            record(journal, "s-chunks", user_id)  # five records wait for the database
            await asyncio.wrap_future(journal.sync())
            while writer.stats.records_pending < 5:
                await asyncio.sleep(0.02)
        await settled(journal, writer)
        assert marks == [2, 4, 5]
        assert (await stored(writer, "s-chunks")).session.state == "stopped"


def test_every_journal_operation_has_an_applier() -> None:
    assert set(APPLY) == OPS
