"""The session journal: every record S9 requires, durable on local disk before the database has it.

A session's records (its creation, every state change with its reason, its events, its running
and final dose) must not be lost because the database is locked, read-only, slow or gone for a
while. So they are not database jobs that can fail and be dropped: each is an :class:`Entry`,
appended by :class:`SessionJournal` to a local append-only file (one JSON object per line,
``fsync``-ed in groups on a thread of its own), and only then applied to the database by the
storage writer, in order, each batch in one transaction that also advances this hub's
``journal_marks.applied_rid`` (``gateway.storage.journal_applier``). A batch that fails for a
reason a retry may cure is retried until the database answers; an entry that fails for a reason
of its own is skipped alone, logged and counted (``apply_entries``); an entry applied twice is
impossible (the mark moves in the same transaction), and a hub that restarts applies what its
journal holds beyond the mark before anything else (``StorageWriter.replay``). Once every entry
is applied the file is emptied; a database that always lags has the applied head cut off
instead (``COMPACT_BYTES``).

What the journal does not hold: telemetry samples (the writer buffers those in memory, bounded,
and counts what it drops), and anything but session records (API writes such as a claim fail
with 503 while storage is down and the caller retries).

Worst case (docs/storage.md): entries made in the last group window before a crash of the
process (a few milliseconds), and nothing at all of a session that could not be journaled,
because ``SessionManager.start`` waits for its first entry to be durable before any output.
When the journal holds ``max_bytes`` of entries the database has not taken, new sessions are
refused (running ones keep recording).
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
"""Unapplied entries the journal holds before new sessions are refused (months of records)."""
GROUP_WINDOW_S = 0.002
"""How long the journal thread waits for more entries to share one fsync."""
RETRY_MAX_S = 5.0
"""Longest wait between two attempts to write the journal file after a disk error."""
COMPACT_BYTES = 256 * 1024
"""Rewrite the file without its applied head once that head is this big (and the bigger part)."""


OPS = frozenset({"create", "state", "event", "progress", "finish"})
"""The ``session_log`` writes an entry may name; ``journal_applier.APPLY`` has one each."""


class JournalUnavailable(GatewayError):
    """A record could not be made durable (the disk refuses, or the journal is full)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One session record. ``op`` is a ``session_log`` write; ``at`` when it happened."""

    rid: int
    op: str
    at: datetime
    args: Mapping[str, Any]

    def to_line(self) -> bytes:
        data = {"rid": self.rid, "op": self.op, "at": self.at.isoformat(), "args": self.args}
        return _dumps(data).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Entry:
        data = json.loads(line)
        return cls(
            rid=int(data["rid"]),
            op=str(data["op"]),
            at=datetime.fromisoformat(data["at"]),
            args=dict(data["args"]),
        )


def _dumps(data: Any) -> str:
    # default=str: a value JSON cannot hold is kept as text, never a lost record.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)


class _Item:
    """An entry on its way to the file; numbered by the journal thread when it takes it."""

    __slots__ = ("args", "at", "entry", "future", "op")

    def __init__(
        self,
        op: str,
        at: datetime,
        args: Mapping[str, Any],
        future: concurrent.futures.Future[Entry],
    ) -> None:
        self.op = op
        self.at = at
        self.args = args
        self.future = future
        self.entry: Entry | None = None


_STOP = object()


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class SessionJournal:
    """The append-only file and the thread that writes it; see the module docstring.

    ``on_durable(entries)`` is called on the journal thread with each group once it is on disk
    (the storage writer queues them for the database). ``applied(rid)`` tells the journal the
    database has everything up to ``rid``, so the file can be emptied.
    """

    def __init__(
        self,
        path: Path,
        *,
        on_durable: Callable[[list[Entry]], None],
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.path = path
        self._on_durable = on_durable
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._next_rid = 1
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._torn = False
        self._size = 0
        self._last_written = 0
        self._applied = 0
        self._applied_bytes = 0
        """Bytes at the head of the file the database has (every entry in them applied)."""
        self._ends: collections.deque[tuple[int, int]] = collections.deque()
        """(last rid, file size after it) of each group written and not yet applied."""
        self._failing: str | None = None
        self._unnumbered = 0

    # --- start-up -----------------------------------------------------------------------------

    def load(self) -> list[Entry]:
        """The entries a previous run left in the file (before ``start``), in order.

        A damaged tail (the process died mid-write: a torn line, or a whole line whose newline
        never made it) was never acknowledged as durable. Before ``start`` the file is cut back
        to the end of the last good line, so the next append starts a line of its own instead
        of being glued to the fragment (and lost with it at the next load). A complete last
        line that only lacks its newline is kept and completed. A damaged line in the middle
        (the disk corrupted it; lines after it are good) is logged at ERROR and skipped, and
        stays in the file until it is emptied.
        """
        entries: list[Entry] = []
        if not self.path.exists():
            return entries
        good_end = 0  # offset just past the last line that parsed
        complete = True  # that line ended with a newline
        damaged: list[int] = []
        offset = 0
        with self.path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                offset += len(line)
                try:
                    entries.append(Entry.from_line(line))
                except (ValueError, KeyError, TypeError):
                    damaged.append(number)
                    continue
                good_end, complete = offset, line.endswith(b"\n")
                for bad in damaged:
                    log.error(
                        "journal %s: line %d is damaged and is skipped (the lines after it are "
                        "kept)",
                        self.path,
                        bad,
                    )
                damaged = []
        if damaged:
            log.warning(
                "journal %s: its last %d line(s) are incomplete (a write the process did not "
                "finish) and are removed",
                self.path,
                len(damaged),
            )
        if self._thread is None and (offset != good_end or not complete):
            self._repair_tail(good_end, complete=complete)
        if entries:
            self._next_rid = entries[-1].rid + 1
        return entries

    def _repair_tail(self, good_end: int, *, complete: bool) -> None:
        """Cut the file back to ``good_end`` (and end its last line), durably."""
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, good_end)
            if not complete:
                os.lseek(fd, good_end, os.SEEK_SET)
                _write_all(fd, b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def start(self, *, applied_rid: int = 0) -> None:
        """Open the file for appending and start the thread (``applied_rid``: the database's)."""
        self._next_rid = max(self._next_rid, applied_rid + 1)
        self._applied = self._last_written = self._next_rid - 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: a failed write leaves nothing behind in a buffer to be written twice.
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        self._size = os.fstat(self._fd).st_size
        self._applied_bytes = self._size  # replayed: the database has all of it
        self._thread = threading.Thread(target=self._work, name="mcgw-journal", daemon=True)
        self._thread.start()

    # --- the API of the event loop --------------------------------------------------------------

    @property
    def full(self) -> bool:
        """The file holds ``max_bytes`` the database has not taken: refuse new sessions.

        Only entries beyond the applied mark count; applied ones still in the file do not.
        """
        return self._size - self._applied_bytes >= self.max_bytes

    @property
    def backlog(self) -> int:
        """Entries made but not yet applied to the database (an estimate, for health)."""
        return self._unnumbered + self._next_rid - 1 - self._applied

    @property
    def failing(self) -> str | None:
        """Why the file cannot be written right now, or None."""
        return self._failing

    def append(self, op: str, args: Mapping[str, Any]) -> concurrent.futures.Future[Entry]:
        """Queue one entry; the future is resolved once it is on disk. Never blocks.

        Cancelling the future (``future.cancel()`` returns True) withdraws the entry: it is
        never written and takes no number. Once the journal thread has taken it, ``cancel()``
        returns False and the entry will be written (or fail with everything queued with it).
        """
        if op not in OPS:
            raise ValueError(f"unknown journal operation {op!r}")
        # Through JSON once, here: the database gets exactly what a replay of the file would
        # give it (a value JSON cannot hold is text on both paths, never only on one).
        data = json.loads(_dumps(args))
        future: concurrent.futures.Future[Entry] = concurrent.futures.Future()
        with self._lock:
            self._unnumbered += 1
            self._queue.put(_Item(op, self._clock(), data, future))
        return future

    def sync(self) -> concurrent.futures.Future[None]:
        """Resolved once every entry appended before it is on disk and handed to the writer."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            self._queue.put(("sync", future))
        return future

    def applied(self, rid: int) -> None:
        """The database has every entry up to ``rid`` (called from the writer thread)."""
        self._queue.put(("applied", rid))

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the thread and close the file."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        # A thread still alive (stuck in a write) keeps its descriptor: closing it under the
        # thread could let its next write land in whatever file reuses the number.
        if self._fd is not None and not self._thread.is_alive():
            os.close(self._fd)
            self._fd = None
        self._thread = None

    # --- the thread ---------------------------------------------------------------------------

    def _work(self) -> None:
        waiting: list[_Item] = []
        retry_s = 0.1
        while True:
            timeout = retry_s if waiting else None
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                first = None
            batch = [] if first is None else [first]
            if first is not None:
                deadline = time.monotonic() + GROUP_WINDOW_S
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        batch.append(self._queue.get(timeout=left))
                    except queue.Empty:
                        break
            stop = False
            syncs: list[concurrent.futures.Future[None]] = []
            for item in batch:
                if item is _STOP:
                    stop = True
                elif isinstance(item, tuple) and item[0] == "sync":
                    syncs.append(item[1])
                elif isinstance(item, tuple):
                    self._note_applied(item[1])
                else:
                    self._take(item, waiting)
            if waiting:
                try:
                    written = self._write(waiting)
                except Exception:  # a bug must not end the thread every record depends on
                    log.exception("writing the session journal failed unexpectedly; retrying")
                    written = False
                if written:
                    waiting = []
                    retry_s = 0.1
                else:
                    retry_s = min(retry_s * 2, RETRY_MAX_S)
            try:
                self._compact()  # before the syncs: a sync also sees the file compacted
            except Exception:
                log.exception("compacting the session journal failed unexpectedly")
            for sync in syncs:
                if sync.done():
                    continue
                if waiting:
                    sync.set_exception(
                        JournalUnavailable(f"the journal {self.path} cannot be written now")
                    )
                else:
                    sync.set_result(None)
            if stop:
                for item in waiting:
                    item.future.set_exception(
                        JournalUnavailable(f"the journal {self.path} could not be written")
                    )
                return

    def _take(self, item: _Item, waiting: list[_Item]) -> None:
        """Number an entry and queue it for the file, unless its caller withdrew it."""
        with self._lock:
            self._unnumbered -= 1
            if not item.future.set_running_or_notify_cancel():
                return  # cancelled before it was taken: never written, no number used
            item.entry = Entry(self._next_rid, item.op, item.at, item.args)
            self._next_rid += 1
        waiting.append(item)

    def _write(self, items: list[_Item]) -> bool:
        entries = [item.entry for item in items if item.entry is not None]
        data = b"".join(entry.to_line() for entry in entries)
        try:
            assert self._fd is not None
            if self._torn:  # an earlier rewind failed: never append after a fragment
                os.ftruncate(self._fd, self._size)
                self._torn = False
            _write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError as exc:
            # Nothing half-written may stay: a torn line would hide the ones after it on replay.
            self._rewind()
            if self._failing is None:
                log.error(  # noqa: TRY400 - one line per failure streak; the cause is in it
                    "cannot write the session journal %s (retrying; new sessions are refused "
                    "meanwhile): %s",
                    self.path,
                    exc,
                )
            self._failing = str(exc)
            return False
        self._size += len(data)
        self._last_written = entries[-1].rid
        self._ends.append((self._last_written, self._size))
        if self._failing is not None:
            log.info("the session journal %s is writable again", self.path)
            self._failing = None
        try:
            # Handed on before anyone hears "durable": a session's telemetry (which starts once
            # its create entry is durable) is then always queued behind that entry.
            self._on_durable(entries)
        except Exception:
            log.exception("handing journal entries to the storage writer failed")
        for item, entry in zip(items, entries, strict=True):
            item.future.set_result(entry)
        return True

    def _rewind(self) -> None:
        """Cut a partly written group off: the file ends at its last good line again."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)  # O_APPEND: the next write starts right here
        except OSError:
            self._torn = True
            log.debug("could not rewind the journal after a failed write", exc_info=True)

    def _note_applied(self, rid: int) -> None:
        self._applied = max(self._applied, rid)
        while self._ends and self._ends[0][0] <= self._applied:
            self._applied_bytes = self._ends.popleft()[1]

    def _compact(self) -> None:
        """Drop what the database has: all of the file, or its applied head (see below)."""
        if self._size == 0 or self._applied_bytes == 0:
            return
        if self._applied >= self._last_written:
            # Emptied as soon as the database has everything, whatever the size: entries left
            # behind would be replayed into whatever database the hub meets next (a fresh
            # SQLite file after mcgw.db was deleted starts at mark 0). Not fsynced: that would
            # put a second fsync per batch in front of the next record; should a power cut
            # undo the emptying, the entries come back already applied and the mark skips them.
            try:
                assert self._fd is not None
                os.ftruncate(self._fd, 0)
            except OSError as exc:
                log.warning("could not empty the applied session journal %s: %s", self.path, exc)
                return
            self._size = self._applied_bytes = 0
            self._ends.clear()
            return
        # A database that always lags never lets the file empty: once the applied head is big
        # (and at least as big as the tail, so copying stays linear overall) the unapplied
        # tail is rewritten to a file of its own that replaces this one atomically.
        head = self._applied_bytes
        if head < COMPACT_BYTES or head < self._size - head:
            return
        try:
            self._rewrite_tail(head)
        except OSError as exc:
            log.warning("could not compact the session journal %s: %s", self.path, exc)

    def _rewrite_tail(self, head: int) -> None:
        assert self._fd is not None
        temporary = self.path.with_name(self.path.name + ".tmp")
        # The descriptor written here becomes the journal's: nothing is opened after the
        # rename, so nothing can fail between it and the switch (which would leave later
        # entries appended to the replaced file).
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
        try:
            _copy_range(self._fd, fd, head, self._size)
            os.fsync(fd)
            os.replace(temporary, self.path)
        except BaseException:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        old, self._fd = self._fd, fd
        os.close(old)
        self._size -= head
        self._applied_bytes = 0
        self._ends = collections.deque((rid, end - head) for rid, end in self._ends)
        try:
            _fsync_directory(self.path.parent)
        except OSError as exc:
            log.warning(
                "could not sync the directory of the session journal %s: %s", self.path, exc
            )


def _copy_range(source: int, target: int, start: int, end: int) -> None:
    offset = start
    while offset < end:
        chunk = os.pread(source, min(1 << 20, end - offset), offset)
        if not chunk:
            raise OSError("the journal file is shorter than what was written to it")
        _write_all(target, chunk)
        offset += len(chunk)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
