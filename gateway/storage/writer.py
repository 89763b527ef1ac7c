"""The storage writer: every database write of a running hub, off the event loop, batched.

One dedicated worker thread owns the writes, so the event loop never waits on SQLite fsyncs or a
PostgreSQL round trip:

* Telemetry: ``append_telemetry`` packs the samples into the in-memory buffer
  (``gateway.storage.telemetry_buffer``) under a short lock and returns; it never awaits and
  never touches the database. The worker flushes the buffer at most once per ``flush_s``, as
  one ``INSERT ... executemany`` of one packed row per session in ONE transaction.
* Session records (rows, state changes, events, dose: S9) arrive as journal entries
  (``gateway.storage.journal``), already durable on local disk. ``entries()`` queues them; the
  worker applies them in order, up to ``RECORD_CHUNK`` per transaction, and when the database
  fails it keeps them and retries with capped backoff until it answers
  (``RECORD_RETRY_MAX_S``); a record that fails for a reason of its own is skipped and
  counted (``journal_applier.apply_entries``). Telemetry is flushed only once every entry before it
  is applied, so a session row always exists before its telemetry.
* Other writes (the API's: a claim, a token) are jobs, functions of a SQLModel ``Session``,
  run in order, each in its own transaction: ``await run(job)`` returns the job's result after
  its commit, or raises StorageUnavailable for the caller to report; ``submit(job)`` is the
  fire-and-forget form, for figures only (a token's ``last_used_at``).
* ``await close()`` runs every queued job, flushes every buffered sample, then stops the thread.

Durability: what ``run`` returned is committed; session records are in the journal before they
reach this module, and a batch of them is reported applied (so the journal may drop it) only
once its commit is on disk (on SQLite it commits with ``synchronous=FULL``; everything else keeps
``NORMAL``, which a power cut may roll back). A crash (SIGKILL, power loss) loses at most the
telemetry appended since the last flush began (one ``flush_s`` window plus the flush in flight);
docs/storage.md explains the recovery. A failing database keeps the buffer and retries each
window; past ``max_buffered_samples`` new samples are dropped and counted.

This module decides nothing about sessions; it only makes writes cheap and ordered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from ble.protocol import TelemetrySample
from gateway.errors import GatewayError, StorageUnavailable
from gateway.storage.journal import Entry
from gateway.storage.journal_applier import apply_entries
from gateway.storage.models import TELEMETRY_TABLE
from gateway.storage.telemetry_buffer import (
    DEFAULT_MAX_BUFFERED_SAMPLES,
    Batches,
    TelemetryBuffer,
    batch_rows,
)

log = logging.getLogger(__name__)

_T = TypeVar("_T")
Job = Callable[[Session], Any]

CLOSE_TIMEOUT_S = 30.0
RECORD_RETRY_START_S = 0.2
RECORD_RETRY_MAX_S = 5.0
"""Longest wait between two attempts to apply session records while the database fails."""
RECORD_CHUNK = 1000
"""Session records applied per transaction (a long backlog moves the mark chunk by chunk)."""


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters since start (for metrics and tests)."""

    buffered_samples: int
    written_samples: int
    written_batches: int
    dropped_samples: int
    failed_flushes: int
    jobs_done: int
    jobs_failed: int
    records_pending: int
    """Journal entries waiting for the database (nonzero while it is down)."""
    records_applied: int
    records_skipped: int
    """Journal entries the rules refused (a bug; each is logged)."""
    failing_since: float | None
    """Monotonic time the database started refusing writes, None while it takes them."""


class _Stop:
    pass


_STOP = _Stop()
_FLUSH = object()
_ENTRIES = object()
"""A wake-up: journal entries wait in ``_entry_queue``."""


@dataclass(frozen=True, slots=True)
class _Replay:
    entries: list[Entry]


class StorageWriter:
    """Owns one worker thread that performs every write; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        *,
        flush_s: float = 1.0,
        max_buffered_samples: int = DEFAULT_MAX_BUFFERED_SAMPLES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if flush_s <= 0:
            raise ValueError(f"flush_s must be positive, got {flush_s}")
        self._engine = engine
        self._flush_s = flush_s
        self._telemetry = TelemetryBuffer(max_samples=max_buffered_samples, clock=clock)
        self._jobs: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
        # Journal entries travel apart from jobs, so a flush can take every one queued before
        # it, whatever else is queued (see _flush_telemetry).
        self._entry_queue: queue.SimpleQueue[list[Entry]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._closing = False
        self._next_seq: dict[str, int] = {}
        self._written_samples = self._written_batches = 0
        self._failed_flushes = self._jobs_done = self._jobs_failed = 0
        self._hub_id: str | None = None
        self._on_applied: Callable[[int], None] = lambda _rid: None
        self._records: list[Entry] = []
        self._records_applied = self._records_skipped = 0
        self._record_retry_at = 0.0
        self._record_backoff = RECORD_RETRY_START_S
        self._failing_since: float | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker and check that the database answers (StorageUnavailable if not)."""
        if self._thread is not None:
            raise RuntimeError("StorageWriter.start() was already called")
        self._thread = threading.Thread(target=self._work, name="mcgw-storage", daemon=True)
        self._thread.start()
        try:
            await self.run(lambda s: s.connection().execute(sa.text("SELECT 1")).scalar_one())
        except BaseException:
            await self.close()  # no thread left behind by a failed start
            raise

    async def close(self) -> None:
        """Run queued jobs, flush all buffered telemetry, stop the worker. Idempotent."""
        if self._closing:
            if self._thread is not None:
                await asyncio.wrap_future(self._stopped)
            return
        self._closing = True
        if self._thread is None:
            return
        self._jobs.put((_STOP, None))
        async with asyncio.timeout(CLOSE_TIMEOUT_S):  # not wait_for: it can lose a cancel
            await asyncio.wrap_future(self._stopped)

    async def __aenter__(self) -> StorageWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- writes ---------------------------------------------------------------------------------

    def append_telemetry(
        self,
        session_id: str,
        samples: Sequence[TelemetrySample],
        *,
        received_at: float | None = None,
    ) -> None:
        """Buffer samples of one session (in frame order); returns at once, never blocks on I/O.

        ``received_at`` (Unix seconds, default now) is when the last sample arrived; it anchors
        the batch in wall-clock time. After ``close()`` samples are dropped and counted.
        """
        self._telemetry.append(session_id, samples, received_at=received_at, closed=self._closing)

    def use_journal(self, *, hub_id: str, on_applied: Callable[[int], None]) -> None:
        """Apply session records for ``hub_id``; ``on_applied(rid)`` after each batch commits."""
        self._hub_id = hub_id
        self._on_applied = on_applied

    def entries(self, entries: list[Entry]) -> None:
        """Queue durable journal entries for the database (any thread; never blocks)."""
        if self._hub_id is None:
            raise RuntimeError("use_journal() first: records need a hub id")
        self._entry_queue.put(entries)
        self._jobs.put((_ENTRIES, None))  # wakes the worker

    async def replay(self, entries: list[Entry]) -> tuple[int, int]:
        """Apply what a previous run's journal holds beyond the mark (start-up); (mark, skipped)."""
        if self._hub_id is None:
            raise RuntimeError("use_journal() first: records need a hub id")
        future: concurrent.futures.Future[tuple[int, int]] = concurrent.futures.Future()
        self._enqueue(_Replay(entries), future)
        return await asyncio.wrap_future(future)

    async def run(self, job: Callable[[Session], _T]) -> _T:
        """Run ``job(session)`` on the worker, commit, and return its result.

        GatewayError from the job (NotFound, Conflict, ...) comes back as is; a database failure
        comes back as StorageUnavailable.
        """
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._enqueue(job, future)
        return await asyncio.wrap_future(future)

    def submit(self, job: Job) -> None:
        """Queue ``job`` without waiting; a failure is logged. Never raises (safe in stop paths)."""
        try:
            self._enqueue(job, None)
        except StorageUnavailable:
            self._jobs_failed += 1
            log.exception("storage job %r was dropped", job)

    async def flush(self) -> None:
        """Write all buffered telemetry now (after the jobs queued before it)."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._enqueue(_FLUSH, future)
        await asyncio.wrap_future(future)

    def _enqueue(self, job: Any, future: concurrent.futures.Future[Any] | None) -> None:
        if self._closing or self._thread is None:
            state = "closed" if self._closing else "not started"
            raise StorageUnavailable(f"the storage writer is {state}; start it before writing")
        self._jobs.put((job, future))

    @property
    def stats(self) -> WriterStats:
        return WriterStats(
            buffered_samples=self._telemetry.buffered,
            written_samples=self._written_samples,
            written_batches=self._written_batches,
            dropped_samples=self._telemetry.dropped,
            failed_flushes=self._failed_flushes,
            jobs_done=self._jobs_done,
            jobs_failed=self._jobs_failed,
            records_pending=len(self._records),
            records_applied=self._records_applied,
            records_skipped=self._records_skipped,
            failing_since=self._failing_since,
        )

    # --- the worker thread ----------------------------------------------------------------------

    def _work(self) -> None:
        next_flush = time.monotonic() + self._flush_s
        try:
            while True:
                if self._records and time.monotonic() >= self._record_retry_at:
                    self._apply_records()
                deadline = next_flush
                if self._records:
                    deadline = min(deadline, self._record_retry_at)
                timeout = deadline - time.monotonic()
                if time.monotonic() >= next_flush:
                    self._drain_jobs()
                    self._timed_flush()
                    next_flush = time.monotonic() + self._flush_s
                    continue
                try:
                    job, future = self._jobs.get(timeout=max(timeout, 0.0))
                except queue.Empty:
                    continue
                if job is _STOP:
                    self._drain_jobs()
                    self._timed_flush(retry_records=True)  # one last try for the records
                    return
                self._execute(job, future)
        finally:
            self._abandon()
            self._stopped.set_result(None)

    def _apply_records(self) -> None:
        """Apply every waiting journal entry, a chunk per transaction, or back off and keep
        what is left. Each chunk moves the mark, so a long backlog is never one huge
        transaction and what was applied stays applied if a later chunk fails."""
        while self._records:
            records = self._records[:RECORD_CHUNK]
            try:
                mark, skipped = self._commit_entries(records)
            except Exception as exc:  # the database, or a bug: keep the records, try later
                if not isinstance(exc, sa.exc.SQLAlchemyError):
                    log.exception("applying session records failed unexpectedly; retrying")
                self._note_failure("session records", exc)
                self._record_retry_at = time.monotonic() + self._record_backoff * (
                    0.5 + random.random()  # noqa: S311 - jitter, not cryptography
                )
                self._record_backoff = min(self._record_backoff * 2, RECORD_RETRY_MAX_S)
                return
            del self._records[: len(records)]
            self._records_applied += len(records) - skipped
            self._records_skipped += skipped
            self._record_backoff = RECORD_RETRY_START_S
            self._note_success()
            self._on_applied(mark)

    def _replay(self, entries: list[Entry]) -> tuple[int, int]:
        if not entries:
            return self._commit_entries(entries)
        mark, skipped = 0, 0
        for start in range(0, len(entries), RECORD_CHUNK):
            mark, chunk_skipped = self._commit_entries(entries[start : start + RECORD_CHUNK])
            skipped += chunk_skipped
        return mark, skipped

    def _commit_entries(self, entries: list[Entry]) -> tuple[int, int]:
        """Apply journal entries in one transaction that is on disk when this returns.

        The journal drops entries once told they are applied, so their commit must survive a
        power cut. PostgreSQL commits durably anyway; SQLite in WAL mode with
        ``synchronous=NORMAL`` does not sync the WAL at commit, so this one transaction runs
        with ``synchronous=FULL`` (the WAL, with every earlier commit in it, is fsynced at
        its commit). Telemetry and API writes keep NORMAL: no fsync each.
        """
        hub_id = self._hub_id
        assert hub_id is not None
        with self._engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:  # outside any transaction: SQLite refuses the change inside one
                connection.exec_driver_sql("PRAGMA synchronous=FULL")
                connection.commit()
            try:
                with Session(bind=connection, expire_on_commit=False) as session:
                    result = apply_entries(session=session, hub_id=hub_id, entries=entries)
                    session.commit()
            finally:
                if sqlite:
                    _restore_synchronous(connection)
        return result

    def _note_failure(self, what: str, exc: BaseException) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.error(
                "the database refuses writes (first seen writing %s); session records are "
                "kept in the journal and retried: %s",
                what,
                exc,
            )

    def _note_success(self) -> None:
        if self._failing_since is not None:
            log.info(
                "the database takes writes again after %.1f s",
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None

    def _collect_entries(self) -> None:
        while True:
            try:
                self._records.extend(self._entry_queue.get_nowait())
            except queue.Empty:
                return

    def _timed_flush(self, *, retry_records: bool = False) -> None:
        try:
            self._flush_telemetry(retry_records=retry_records)
        except Exception:  # a bug must not kill the one thread every write depends on
            log.exception("telemetry flush failed unexpectedly; the worker carries on")

    def _abandon(self) -> None:
        """On exit: fail jobs that raced in after close, and say what telemetry is lost."""
        while True:
            try:
                job, future = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not _ENTRIES and future is not None and future.set_running_or_notify_cancel():
                future.set_exception(StorageUnavailable("the storage writer closed first"))
        self._collect_entries()
        if self._records:
            log.warning(
                "%d session records wait in the journal for the database; the next start "
                "applies them",
                len(self._records),
            )
        if self._telemetry.buffered:
            log.error(
                "storage writer stopped with %d telemetry samples unwritten",
                self._telemetry.buffered,
            )

    def _drain_jobs(self) -> None:
        """Run the jobs queued so far (not ones queued meanwhile: a flush must not starve)."""
        for _ in range(self._jobs.qsize()):
            try:
                job, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is _STOP:
                self._jobs.put((job, future))  # keep it for the main loop, after this flush
                return
            self._execute(job, future)

    def _execute(self, job: Any, future: Any) -> None:
        if job is _ENTRIES:
            self._collect_entries()
            if self._records and time.monotonic() >= self._record_retry_at:
                self._apply_records()
            return
        if future is not None and not future.set_running_or_notify_cancel():
            return
        try:
            result: Any = None
            if job is _FLUSH:
                self._flush_now()
            elif isinstance(job, _Replay):
                result = self._replay(job.entries)
            else:
                with Session(self._engine, expire_on_commit=False) as session:
                    result = job(session)
                    session.commit()
        except GatewayError as exc:
            self._jobs_failed += 1
            self._fail(job, future, exc)
        except sa.exc.SQLAlchemyError as exc:
            self._jobs_failed += 1
            error = StorageUnavailable(f"a storage write failed: {exc}; check the database")
            error.__cause__ = exc
            self._fail(job, future, error)
        except Exception as exc:  # noqa: BLE001 - a job's bug goes to its caller; the worker lives
            self._jobs_failed += 1
            self._fail(job, future, exc)
        else:
            self._jobs_done += 1
            if future is not None:
                future.set_result(result)

    @staticmethod
    def _fail(job: Any, future: concurrent.futures.Future[Any] | None, exc: BaseException) -> None:
        if future is not None:
            future.set_exception(exc)
        elif isinstance(exc, StorageUnavailable):  # the outage itself is logged once, apart
            log.warning("storage job %s was not done: %s", _job_name(job), exc)
        else:
            log.error("storage job %s failed", _job_name(job), exc_info=exc)

    def _insert(self, buffer: Batches) -> dict[str, int]:
        """Write every batch in one transaction; return each session's next batch number."""
        with self._engine.begin() as connection:
            rows = batch_rows(connection, buffer, self._next_seq)
            connection.execute(sa.insert(TELEMETRY_TABLE), rows)
        self._written_batches += len(rows)
        self._written_samples += sum(row["n"] for row in rows)
        return {row["session_id"]: row["seq"] + 1 for row in rows}

    def _insert_each(self, buffer: Batches) -> dict[str, int]:
        """Write session by session, dropping (and logging) the sessions the database refuses.

        Written and dropped sessions leave ``buffer``; on any other error the rest stays in it.
        """
        next_seq: dict[str, int] = {}
        for session_id in list(buffer):
            batches = buffer[session_id]
            try:
                next_seq.update(self._insert({session_id: batches}))
            except sa.exc.IntegrityError as exc:
                lost = sum(batch.n for batch in batches)
                self._telemetry.count_dropped(lost)
                log.error(  # noqa: TRY400 - the reason is in the message; a traceback adds nothing
                    "dropped %d telemetry samples of session %s: %s", lost, session_id, exc.orig
                )
            del buffer[session_id]
        return next_seq

    def _flush_now(self) -> None:
        self._flush_telemetry(raise_errors=True, retry_records=True)

    def _flush_telemetry(self, *, raise_errors: bool = False, retry_records: bool = False) -> None:
        """Write the buffered telemetry, after every session record it may depend on.

        The buffer is taken *first*, then the entries queued so far are applied: a session's
        telemetry starts only once its create entry is queued, so every sample taken here has
        its session's row written before it (or the flush waits, buffer intact). With
        ``retry_records`` (someone waits for this flush) records are tried whatever the backoff.
        """
        buffer = self._telemetry.take()
        self._collect_entries()
        if self._records and (retry_records or time.monotonic() >= self._record_retry_at):
            self._apply_records()
        if self._records:
            self._telemetry.restore(buffer)  # session rows first: telemetry waits for them
            if raise_errors:
                raise StorageUnavailable(
                    f"{len(self._records)} session records are waiting for the database"
                )
            return
        if not buffer:
            return
        try:
            try:
                written = self._insert(buffer)
            except sa.exc.IntegrityError:
                # Usually telemetry of a session row that was never written: isolate that one.
                self._next_seq = {}
                written = self._insert_each(buffer)
        except sa.exc.SQLAlchemyError as exc:
            self._failed_flushes += 1
            self._next_seq = {}
            self._telemetry.restore(buffer)
            self._note_failure("telemetry", exc)
            if raise_errors:
                raise
            return
        # Keep batch numbers only of sessions still streaming, so the map stays small.
        self._next_seq = written
        self._note_success()


def _job_name(job: Any) -> str:
    """A job's function name (not its arguments: they may be many, or private)."""
    job = getattr(job, "func", job)
    return getattr(job, "__qualname__", type(job).__name__)


def _restore_synchronous(connection: sa.Connection) -> None:
    """Back to ``synchronous=NORMAL``; a connection that cannot be is not reused."""
    try:
        connection.rollback()
        connection.exec_driver_sql("PRAGMA synchronous=NORMAL")
        connection.commit()
    except sa.exc.SQLAlchemyError:
        log.debug("could not restore synchronous=NORMAL; dropping the connection", exc_info=True)
        connection.invalidate()
