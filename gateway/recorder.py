"""Persists sessions: rows, state changes with reasons, events and dose (S9), and telemetry.

``StorageRecorder`` implements ``gateway.sessions.SessionRecorder``. Session records go through
the session journal (``gateway.storage.journal``): each is appended to a local file and made
durable there first, then applied to the database in order by the storage writer, retried
until the database takes it. ``opened`` returns only once a new session's first record is on
disk, and raises if it cannot be (the session then never starts); every other method returns at
once, so the BLE callbacks and the stop path that call them never wait on a disk.

Running totals (delivered time and dose) are recorded every ``PROGRESS_EVERY_S`` so a crash
keeps a recent dose; the final totals are recorded with the end state and its reason.
Telemetry samples go to the writer's buffer (a figure: bounded, losses counted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future
from typing import Any

from gateway.session import Session
from gateway.states import TERMINAL_STATES, SessionState
from gateway.storage.journal import JournalUnavailable, SessionJournal
from gateway.storage.writer import StorageWriter
from gateway.telemetry import TelemetryFrame

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0
OPEN_TIMEOUT_S = 2.0
"""Longest a start waits for its first record to reach the disk before it is refused."""


class StorageRecorder:
    """Journals a session's records, in order; see the module docstring."""

    def __init__(self, journal: SessionJournal, writer: StorageWriter, *, hub_id: str) -> None:
        self.journal = journal
        self.writer = writer
        self.hub_id = hub_id
        self._created: set[str] = set()
        self._last_progress: dict[str, float] = {}

    async def opened(self, session: Session) -> None:
        """Record a new session durably before it may start; JournalUnavailable if not.

        Refused at once when the journal is full or already failing. When the record is not
        on disk within ``OPEN_TIMEOUT_S`` the start is refused, and the record must not turn
        up later as a session that never ran: if it is still queued it is withdrawn (never
        written); if the journal thread already took it, it is followed by a ``finish`` that
        ends it as failed with the reason, so the database never keeps it open.
        """
        if self.journal.full:
            raise JournalUnavailable(
                "the database has not taken this hub's session records for a long time and "
                "the journal is full; a session would go unrecorded, so none starts. Check "
                "the database"
            )
        if self.journal.failing is not None:
            raise JournalUnavailable(
                f"the session journal {self.journal.path} cannot be written "
                f"({self.journal.failing}); a session would go unrecorded, so none starts"
            )
        future = self.journal.append(
            "create",
            {
                "session_id": session.id,
                "owner_id": int(session.owner),
                "device_address": session.address,
                "program_slug": session.program.slug,
                "intensity": session.level,
                "planned_s": session.program.duration_s,
                "idempotency_key": session.idempotency_key,
                "limited_by_cap": session.limited_by_cap,
            },
        )
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):  # not wait_for: it can lose a cancel
                await asyncio.shield(asyncio.wrap_future(future))
        except TimeoutError:
            why = self.journal.failing or "the disk is slow"
            self._withdraw(session, future, why)
            raise JournalUnavailable(
                f"the session journal {self.journal.path} could not be written in "
                f"{OPEN_TIMEOUT_S:g} s ({why}); a session would go unrecorded, so none starts"
            ) from None
        except asyncio.CancelledError:
            self._withdraw(session, future, "the start was cancelled")
            raise
        self._created.add(session.id)  # only once its record is on disk

    def _withdraw(self, session: Session, future: Future[Any], why: str) -> None:
        """A refused start's create record: withdrawn, or ended as failed if too late for that."""
        if future.cancel():
            return  # still queued: never written
        if future.done() and future.exception() is not None:
            return  # the journal gave it up: never written
        # Taken by the journal thread: it will reach the disk (and the database) behind this.
        self.journal.append(
            "finish",
            {
                "session_id": session.id,
                "state": SessionState.FAILED.value,
                "reason": (
                    f"not started: its record was not durable in {OPEN_TIMEOUT_S:g} s ({why})"
                ),
                "delivered_s": 0.0,
                "dose_uas_by_zone": {},
            },
        )

    def session_changed(self, session: Session) -> None:
        if session.id not in self._created:
            # A session that was never opened (recorded) has nothing to update.
            log.error("session %s changed before it was recorded; not recorded", session.id)
            return
        if session.state is SessionState.PENDING:
            return
        if session.state in TERMINAL_STATES:
            figures = session.figures.snapshot()
            self.journal.append(
                "finish",
                {
                    "session_id": session.id,
                    "state": session.state.value,
                    "reason": session.reason,
                    "delivered_s": session.position_s,
                    "dose_uas_by_zone": _known_zones(figures["charge_uas_by_zone"]),
                },
            )
            self._created.discard(session.id)
            self._last_progress.pop(session.id, None)
            return
        self.journal.append(
            "state",
            {
                "session_id": session.id,
                "state": session.state.value,
                "reason": session.reason,
                "level": session.level,
            },
        )

    def session_event(self, session: Session, kind: str, detail: dict[str, Any]) -> None:
        if kind == "state" or session.id not in self._created:
            return  # state changes record their own event (session_changed)
        self.journal.append("event", {"session_id": session.id, "kind": kind, "detail": detail})

    def telemetry(self, session: Session, frame: TelemetryFrame) -> None:
        self.writer.append_telemetry(session.id, [frame.sample], received_at=time.time())
        now = time.monotonic()
        last = self._last_progress.setdefault(session.id, now)
        if now - last >= PROGRESS_EVERY_S and session.active:
            self._last_progress[session.id] = now
            figures = session.figures.snapshot()
            self.journal.append(
                "progress",
                {
                    "session_id": session.id,
                    "delivered_s": session.position_s,
                    "dose_uas_by_zone": _known_zones(figures["charge_uas_by_zone"]),
                },
            )


def _known_zones(charge: dict[str, float]) -> dict[str, float]:
    return {zone: value for zone, value in charge.items() if zone != "unknown"}
