"""The standing fault suite: the hub's own parts killed, frozen and locked around a session.

Every test runs `mcgw sim` and `mcgw serve --ble hci:tcp-client:...` as real processes, starts a
session over REST as a paired user, injects one fault from outside, and then checks what a
person would: the device's actual output (through the sim's control endpoint), the answers of
the API, and the stored records once the fault is gone (S3: a stop turns output off whatever
storage does; S9: every session ends recorded with its reason, none stays ``running``). Each
test also reads the gateway's log and fails on any ERROR line or traceback other than the ones
its fault explains.

Storage faults are made as an operator would meet them, terminating only the hub's own
PostgreSQL connections: SQLite locked by another process and SQLite on a full disk (a small
tmpfs of its own: a file a running process holds open cannot be made read-only under it), and
PostgreSQL locked, read-only and refusing connections, each on a database of its own, migrated
before the hub starts (first starts on an empty database are tests/e2e/test_cli.py's). Waits are
for conditions under a hang guard; nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from ble.sim import control
from gateway.config import DatabaseSettings
from gateway.storage.engine import create_engine_from_settings, upgrade
from tests.conftest import POSTGRES_URL, require_service, unavailable
from tests.e2e.served import ServedHub, Sim, SimFactory, base_env, copy_database

pytestmark = pytest.mark.faults

HANG_S = 30.0
"""Upper bound for any one wait: a hang guard, never a measurement."""
CONSENT = {"version": "2026-11", "accept": True}
PROGRAM = "quick-lift"


# --- databases and their faults ---------------------------------------------------------------


@dataclass
class Database:
    kind: str
    url: str
    path: Path | None = None
    _cleanup: list[Callable[[], None]] = field(default_factory=list)

    # SQLite ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Another process holds the write lock (SQLite) or an exclusive table lock (PG)."""
        if self.kind == "sqlite":
            assert self.path is not None
            holder = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            return
        engine = sa.create_engine(self.url)
        connection = engine.connect()
        transaction = connection.begin()
        connection.execute(sa.text("LOCK TABLE sessions, session_events IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            transaction.rollback()
            connection.close()
            engine.dispose()

    @contextlib.contextmanager
    def read_only(self) -> Iterator[None]:
        """Writes are refused: the database is read-only (PostgreSQL only; an open SQLite file
        cannot be made read-only under a running process, so SQLite gets ``disk_full``)."""
        assert self.kind == "postgresql"
        self._pg_admin("ALTER DATABASE {db} SET default_transaction_read_only = on")
        self._terminate_hub()
        try:
            yield
        finally:
            self._pg_admin("ALTER DATABASE {db} RESET default_transaction_read_only")
            self._terminate_hub()

    @contextlib.contextmanager
    def disk_full(self) -> Iterator[None]:
        """The SQLite file's filesystem (a small tmpfs of its own) has no byte left."""
        assert self.path is not None
        filler = self.path.with_name("filler")
        try:
            # Unbuffered: nothing is left to flush (and fail) at close, so the disk is freed.
            with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
                chunk = b"\0" * (1 << 20)
                while True:
                    handle.write(chunk)
            yield
        finally:
            filler.unlink(missing_ok=True)

    @contextlib.contextmanager
    def gone(self) -> Iterator[None]:
        """The server takes no connection from the hub (PostgreSQL only)."""
        assert self.kind == "postgresql"
        self._pg_admin("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false")
        self._terminate_hub()
        try:
            yield
        finally:
            self._pg_admin("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true")

    # PostgreSQL ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return sa.make_url(self.url).database or ""

    def _pg_admin(self, statement: str) -> None:
        engine = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(statement.format(db=f'"{self.name}"')))
        finally:
            engine.dispose()

    def _terminate_hub(self) -> None:
        """End the hub's own connections, and only those (named by application_name)."""
        self._pg_admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND application_name LIKE 'mcgw hub %'"
        )


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]


@pytest.fixture
def sqlite_db(tmp_path: Path, migrated_sqlite: Path) -> Iterator[Database]:
    """A SQLite file on a small filesystem of its own (so it can be filled; needs root),
    migrated already (a copy of ``migrated_sqlite``): the hub starts without migrating."""
    mount = tmp_path / "dbfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        unavailable(f"cannot mount a small tmpfs for the database (run as root): {done.stderr}")
    try:
        path = mount / "hub.db"
        copy_database(migrated_sqlite, path)
        yield Database("sqlite", f"sqlite:///{path}", path)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def postgresql_db() -> Iterator[Database]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"mcgw_fault_{uuid.uuid4().hex[:10]}"
    admin = Database("postgresql", POSTGRES_URL)
    admin._pg_admin(f'CREATE DATABASE "{name}"')
    database = Database(
        "postgresql", sa.make_url(POSTGRES_URL).set(database=name).render_as_string(False)
    )
    try:
        # Migrated here (as `mcgw db upgrade` would), so the hub starts without migrating.
        engine = create_engine_from_settings(DatabaseSettings(url=database.url))
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        yield database
    finally:
        admin._pg_admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        admin._pg_admin(f'DROP DATABASE IF EXISTS "{name}"')


# --- the rig: a sim, a hub, a user with a claimed device ------------------------------------------


@dataclass
class Rig:
    sims: SimFactory
    sim: Sim
    env: dict[str, str]
    hub: ServedHub
    admin: httpx.AsyncClient
    phone: httpx.AsyncClient
    user_id: int
    device: str
    allowed: list[str] = field(default_factory=list)
    """Regular expressions of ERROR lines the test's fault explains."""

    async def output_ua(self, device: str | None = None) -> int:
        snapshot = await control.request(
            self.sim.control_port, "GET", f"/devices/{device or self.device}"
        )
        return int(snapshot["output_ua"])

    async def wait_output(self, predicate: Callable[[int], bool], what: str) -> int:
        async with asyncio.timeout(HANG_S):
            while not predicate(value := await self.output_ua()):
                await asyncio.sleep(0.05)
        return value

    async def start(self, *, key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": key or uuid.uuid4().hex}
        started = await self.phone.post(
            "/api/v1/sessions",
            json={"device": self.device, "program": PROGRAM, "level": 1},
            headers=headers,
        )
        assert started.status_code == 201, started.text
        session: dict[str, Any] = started.json()
        await self.wait_output(lambda ua: ua > 0, "output")
        return session

    async def wait_bonded(self) -> None:
        async with asyncio.timeout(HANG_S):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    got = await self.phone.get(f"/api/v1/devices/{self.device}")
                    if got.status_code == 200 and got.json()["state"] == "bonded":
                        return
                await asyncio.sleep(0.1)

    async def session(self, session_id: str) -> dict[str, Any]:
        got = await self.admin.get(f"/api/v1/sessions/{session_id}")
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        return body

    async def wait_session(
        self, session_id: str, predicate: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        async with asyncio.timeout(HANG_S):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    body = await self.session(session_id)
                    if predicate(body):
                        return body
                await asyncio.sleep(0.1)

    async def ready(self) -> httpx.Response:
        return await self.admin.get("/api/v1/health/ready")

    async def wait_ready(self, want: bool) -> dict[str, Any]:
        async with asyncio.timeout(HANG_S):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    answer = await self.ready()
                    if (answer.status_code == 200) is want:
                        body: dict[str, Any] = answer.json()
                        return body
                await asyncio.sleep(0.1)

    async def none_left_running(self) -> None:
        """No session that has ended is stored as running or paused.

        A stop returns before its end record reaches the database (it never waits for storage),
        so a session stopped a moment ago may still be stored as running for a few milliseconds:
        that is waited out (bounded by HANG_S); one left running for good still fails here.
        """
        left: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + HANG_S
        while True:
            listed = await self.admin.get(
                "/api/v1/sessions", params=[("state", "running"), ("state", "paused")]
            )
            assert listed.status_code == 200, listed.text
            left = [s for s in listed.json()["items"] if not s["live"]]
            if not left or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        assert left == []

    def check_log(self) -> None:
        """No ERROR line or traceback the injected fault does not explain (shown whole)."""
        lines = self.hub.logged().splitlines()
        unexplained = []
        for index, line in enumerate(lines):
            bad = " ERROR " in line or "Traceback" in line or "CRITICAL" in line
            if bad and not any(re.search(pattern, line) for pattern in self.allowed):
                unexplained.append("\n".join(lines[index : index + 40]))
        assert unexplained == [], "\n---\n".join(unexplained[:3])


@contextlib.asynccontextmanager
async def rig_for(tmp_path: Path, database: Database, **settings: str) -> AsyncIterator[Rig]:
    sims = SimFactory(tmp_path)
    try:
        sim = await sims.start(devices=2)
        env = base_env(
            tmp_path,
            MCGW_DB__URL=database.url,
            MCGW_DB__LOCK_TIMEOUT_S="1",
            MCGW_BLE__AUTO_CONNECT="true",
            MCGW_BLE__DISCOVERY_INTERVAL_S="1",
            # Background scans of 0.5 s, not 2 s: the sim advertises every 20 ms.
            MCGW_BLE__SCAN_TIMEOUT_S="0.5",
            **settings,
        )
        with ServedHub.start(env, devices=2, ble=sim.ble) as hub:
            async with hub.client(hub.admin_token) as admin:
                made = await admin.post(
                    "/api/v1/tokens", json={"name": "phone", "new_user_name": "ada"}
                )
                assert made.status_code == 201, made.text
                token, user_id = made.json()["token"], made.json()["user_id"]
                async with hub.client(token) as phone:
                    accepted = await phone.post("/api/v1/me/consent", json=CONSENT)
                    assert accepted.status_code == 200
                    device = sorted(sim.addresses)[0]
                    claimed = await phone.post(f"/api/v1/devices/{device}/claim")
                    assert claimed.status_code == 200, claimed.text
                    rig = Rig(sims, sim, env, hub, admin, phone, user_id, device)
                    yield rig
            rig.check_log()
    finally:
        sims.stop_all()


STORAGE_ERRORS = [r"the database refuses writes", r"telemetry flush failed"]


# --- storage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fault"),
    [
        ("sqlite", "locked"),
        ("sqlite", "disk_full"),
        pytest.param("postgresql", "locked", marks=pytest.mark.postgres),
        pytest.param("postgresql", "read_only", marks=pytest.mark.postgres),
        pytest.param("postgresql", "gone", marks=pytest.mark.postgres),
    ],
)
async def test_stop_turns_output_off_and_no_record_is_lost_whatever_storage_does(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str, fault: str
) -> None:
    database: Database = request.getfixturevalue(f"{kind}_db")
    async with rig_for(tmp_path, database) as rig:
        rig.allowed += STORAGE_ERRORS
        first = await rig.start()
        with getattr(database, fault)():
            # Changes while storage fails: each is a record that must not be lost.
            assert (
                await rig.phone.post(f"/api/v1/sessions/{first['id']}/pause")
            ).status_code == 200
            assert (
                await rig.phone.post(f"/api/v1/sessions/{first['id']}/resume")
            ).status_code == 200
            not_ready = await rig.wait_ready(False)
            assert not_ready["type"] == "urn:mcgw:problem:not-ready"
            failing = {e["field"] for e in not_ready["errors"]}
            assert failing & {"storage", "database"}, not_ready

            stopped = await rig.phone.post(f"/api/v1/sessions/{first['id']}/stop")
            assert stopped.status_code == 200, stopped.text
            assert stopped.json()["state"] == "stopped"
            assert await rig.output_ua() == 0  # off by the time the stop is answered (S3)

            # A new session still starts: its record is durable in the journal (S9).
            second = await rig.start()
            stopped = await rig.phone.post(f"/api/v1/sessions/{second['id']}/stop")
            assert stopped.status_code == 200
            assert await rig.output_ua() == 0

        ready = await rig.wait_ready(True)
        assert ready["checks"]["storage"]["ok"]
        for session, states in (
            (first, ["running", "paused", "running", "stopped"]),
            (second, ["running", "stopped"]),
        ):
            stored = await rig.wait_session(session["id"], lambda s: not s["live"])
            assert stored["state"] == "stopped"
            assert stored["reason"] == f"stopped by user {rig.user_id}"
            assert [
                e["detail"]["state"] for e in stored["events"] if e["kind"] == "state"
            ] == states
        await rig.none_left_running()


# --- the gateway killed or frozen ---------------------------------------------------------------


async def test_a_killed_gateway_stops_output_by_lease_and_its_restart_records_why(
    tmp_path: Path, sqlite_db: Database
) -> None:
    async with rig_for(tmp_path, sqlite_db) as rig:
        session = await rig.start()
        os.killpg(rig.hub.process.pid, signal.SIGKILL)
        rig.hub.process.wait()
        await rig.wait_output(lambda ua: ua == 0, "output off by the device's lease (S4)")
        with ServedHub.start(rig.env, devices=2, ble=rig.sim.ble) as again:
            async with again.client(again.admin_token) as admin:
                stored = (await admin.get(f"/api/v1/sessions/{session['id']}")).json()
            again.stop()
            assert " ERROR " not in again.logged()
        assert stored["state"] == "interrupted"
        assert stored["reason"] == "gateway restarted during the session"
        assert await rig.output_ua() == 0
        rig.hub.output.clear()  # the killed process's log ends mid-line; nothing to read there


async def test_a_frozen_gateway_loses_the_device_by_lease_and_ends_the_session_when_thawed(
    tmp_path: Path, sqlite_db: Database
) -> None:
    async with rig_for(tmp_path, sqlite_db) as rig:
        session = await rig.start()
        os.killpg(rig.hub.process.pid, signal.SIGSTOP)
        try:
            await rig.wait_output(lambda ua: ua == 0, "output off by the device's lease (S4)")
        finally:
            os.killpg(rig.hub.process.pid, signal.SIGCONT)
        ended = await rig.wait_session(session["id"], lambda s: s["state"] != "running")
        if ended["live"] and ended["state"] == "paused":
            # The link went down while frozen: it comes back and the session stops here.
            await rig.phone.post(f"/api/v1/sessions/{session['id']}/stop")
        stored = await rig.wait_session(session["id"], lambda s: not s["live"])
        assert stored["state"] in ("failed", "stopped", "interrupted")
        assert stored["reason"]
        assert await rig.output_ua() == 0
        await rig.none_left_running()


# --- the radio's process killed or frozen ---------------------------------------------------------


async def test_a_killed_sim_ends_the_session_after_the_link_window_and_the_radio_comes_back(
    tmp_path: Path, sqlite_db: Database
) -> None:
    async with rig_for(tmp_path, sqlite_db, MCGW_SAFETY__LINK_RESUME_WINDOW_S="2") as rig:
        rig.allowed.append(r"re-encrypting")
        session = await rig.start()
        hci_port, control_port = rig.sim.hci_port, rig.sim.control_port
        rig.sim.kill()
        stored = await rig.wait_session(session["id"], lambda s: s["state"] == "interrupted")
        assert stored["reason"] == "link lost for more than 2 s"
        not_ready = await rig.wait_ready(False)
        assert "radio" in {e["field"] for e in not_ready["errors"]}
        rig.sim = await rig.sims.start(devices=2, hci_port=hci_port, control_port=control_port)
        await rig.wait_ready(True)
        await rig.wait_bonded()
        assert await rig.output_ua() == 0
        later = await rig.wait_session(session["id"], lambda s: not s["live"])
        assert later["state"] == "interrupted"
        second = await rig.start()
        assert (await rig.phone.post(f"/api/v1/sessions/{second['id']}/stop")).status_code == 200
        assert await rig.output_ua() == 0
        await rig.none_left_running()


async def test_a_frozen_sim_never_leaves_output_running_nor_a_session_unrecorded(
    tmp_path: Path, sqlite_db: Database
) -> None:
    async with rig_for(tmp_path, sqlite_db) as rig:
        session = await rig.start()
        rig.sim.process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(3)  # frozen for longer than the lease and the stop bound
        finally:
            rig.sim.process.send_signal(signal.SIGCONT)
        await rig.phone.post(f"/api/v1/sessions/{session['id']}/stop")
        await rig.wait_output(lambda ua: ua == 0, "output off")
        stored = await rig.wait_session(session["id"], lambda s: not s["live"])
        assert stored["state"] in ("stopped", "failed", "interrupted")
        assert stored["reason"]
        await rig.none_left_running()
        # The device comes back and serves again.
        await rig.wait_bonded()
        again = await rig.start()
        assert (await rig.phone.post(f"/api/v1/sessions/{again['id']}/stop")).status_code == 200


# --- control under pressure -----------------------------------------------------------------------


async def test_concurrent_starts_and_stops_leave_one_session_at_a_time_all_recorded(
    tmp_path: Path, sqlite_db: Database
) -> None:
    async with rig_for(tmp_path, sqlite_db) as rig:
        body = {"device": rig.device, "program": PROGRAM, "level": 1}
        answers = await asyncio.gather(
            *(
                rig.phone.post("/api/v1/sessions", json=body, headers={"Idempotency-Key": f"k{n}"})
                for n in range(12)
            )
        )
        created = [a.json() for a in answers if a.status_code == 201]
        assert len(created) == 1, [a.text for a in answers]
        assert {a.status_code for a in answers} <= {201, 409}
        session_id = created[0]["id"]
        stops = await asyncio.gather(
            *(rig.phone.post(f"/api/v1/sessions/{session_id}/stop") for _ in range(8))
        )
        assert {s.status_code for s in stops} == {200}
        assert {s.json()["state"] for s in stops} == {"stopped"}
        await rig.wait_output(lambda ua: ua == 0, "output off")
        listed = await rig.admin.get("/api/v1/sessions", params={"device": rig.device})
        stored = listed.json()["items"]
        assert [(s["id"], s["state"]) for s in stored] == [(session_id, "stopped")]


async def test_a_stop_during_a_radio_stall_drops_the_link_and_the_device_comes_back(
    tmp_path: Path, sqlite_db: Database
) -> None:
    async with rig_for(tmp_path, sqlite_db) as rig:
        session = await rig.start()
        # Longer than an ACK may take (the streamer gives the link up and a new one comes up
        # while the device is still stalled), shorter than the lease.
        await control.call(rig.sim.control_port, rig.device, "stall", ms=1200)
        await asyncio.sleep(0.6)
        stopped = await rig.phone.post(f"/api/v1/sessions/{session['id']}/stop")
        assert stopped.status_code == 200
        assert stopped.json()["state"] == "stopped"
        await rig.wait_output(lambda ua: ua == 0, "output off (STOP or the dropped link)")
        stored = await rig.wait_session(session["id"], lambda s: not s["live"])
        assert stored["state"] == "stopped"
        assert stored["reason"].startswith(f"stopped by user {rig.user_id}")
        # Every link given up on was taken down: the device reconnects and serves again.
        await rig.wait_bonded()
        again = await rig.start()
        assert (await rig.phone.post(f"/api/v1/sessions/{again['id']}/stop")).status_code == 200


async def test_a_draining_battery_warns_then_ends_the_session_with_its_reason(
    tmp_path: Path, sqlite_db: Database
) -> None:
    async with rig_for(tmp_path, sqlite_db) as rig:
        session = await rig.start()
        await control.call(rig.sim.control_port, rig.device, "set_battery", pct=8)
        await rig.wait_session(
            session["id"], lambda s: any(e["kind"] == "low_battery" for e in s["events"])
        )
        await control.call(rig.sim.control_port, rig.device, "set_battery", pct=1)
        stored = await rig.wait_session(session["id"], lambda s: not s["live"])
        assert stored["state"] == "stopped"
        assert stored["reason"].startswith("battery empty (1 %)")
        assert await rig.output_ua() == 0
        refused = await rig.phone.post(
            "/api/v1/sessions", json={"device": rig.device, "program": PROGRAM}
        )
        assert refused.status_code == 409
        assert "battery" in refused.json()["detail"]
