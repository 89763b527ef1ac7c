"""Commands that arrive over MQTT: who may do what, decided the way REST decides it.

The rules (docs/mqtt.md, "Commands"):

* ``stop`` is always accepted, from anyone who may publish on the command topic: stopping a
  session is always safe, and it takes the session manager's own stop path (the one
  ``POST /sessions/{id}/stop`` takes), which never waits on storage or on the broker (S3);
* ``pause``, ``resume`` and ``level`` act on a session started over MQTT, or on any session
  when ``MCGW_MQTT__USER_ID`` names an admin; they act as that user, so the session manager's
  owner-or-admin check (S8) applies as for any caller;
* ``start`` needs ``MCGW_MQTT__ALLOW_START`` and ``MCGW_MQTT__USER_ID`` naming a user who has
  accepted the contraindication notice (S7) and controls the device (claimed by them, or any
  claimed device for an admin); the user's personal cap limits the program (S1), the device
  must be free (S8), and the caps and session length of the hub apply (S1, S10) inside
  ``SessionManager.start_or_replay``, exactly as for REST. A command id makes a start
  idempotent (the id is its Idempotency-Key).

The mapped user is looked up in the access policy on every command, so a user whose rights
changed or who was deleted loses them at once. A refused or malformed command changes nothing
and is answered on the ack topic with the reason. This module publishes nothing itself.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.access import AccessPolicy, DeviceAccess, Principal
from gateway.config import MqttSettings
from gateway.errors import (
    Conflict,
    DeviceUnavailable,
    Forbidden,
    GatewayError,
    InvalidProgram,
    NotFound,
    SafetyViolation,
)
from gateway.mqtt.state import session_summary
from gateway.mqtt.topics import Command, CommandRefused, ack, parse_command
from gateway.programs import Program
from gateway.session import Session
from gateway.sessions import SessionManager

log = logging.getLogger(__name__)

MQTT_ACTOR = "mqtt"
_KINDS: tuple[tuple[type[GatewayError], str], ...] = (
    (Forbidden, "forbidden"),
    (NotFound, "not-found"),
    (Conflict, "conflict"),
    (DeviceUnavailable, "unavailable"),
    (InvalidProgram, "invalid-program"),
    (SafetyViolation, "refused"),
)


class CommandHandler:
    """Parses, checks and runs commands; ``handle`` answers the ack body."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        sessions: SessionManager,
        access: AccessPolicy,
        programs: dict[str, Program],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.access = access
        self.programs = programs
        self.started_here: set[str] = set()
        """Ids of sessions started over MQTT (this run)."""
        self.accepted = 0
        self.refused = 0

    async def handle(self, payload: bytes) -> dict[str, Any]:
        """Run one command message; the ack body, ``ok`` or with the error."""
        try:
            command = parse_command(payload)
        except CommandRefused as exc:
            self.refused += 1
            return ack(None, exc.command_id, error=exc)
        try:
            session = await self._run(command)
        except CommandRefused as exc:
            self.refused += 1
            log.info("MQTT %s refused: %s", command.command, exc.detail)
            return ack(command.command, command.id, error=exc)
        except GatewayError as exc:
            self.refused += 1
            kind = next((k for cls, k in _KINDS if isinstance(exc, cls)), "error")
            return ack(command.command, command.id, error=CommandRefused(kind, str(exc)))
        except ValueError as exc:
            self.refused += 1
            return ack(command.command, command.id, error=CommandRefused("invalid", str(exc)))
        self.accepted += 1
        return ack(
            command.command,
            command.id,
            session=session_summary(session, self.sessions.session_cap_s),
        )

    async def _run(self, command: Command) -> Session:
        if command.command == "start":
            return await self._start(command)
        session = self._target(command)
        if command.command == "stop":
            # S3: the manager's stop path, as REST takes it; no storage, no broker awaited.
            return await self.sessions.stop(
                session.id, actor=MQTT_ACTOR, is_admin=True, reason="stopped over MQTT"
            )
        user = self._controller(session)
        if command.command == "pause":
            return await self.sessions.pause(session.id, actor=user.owner, is_admin=user.is_admin)
        if command.command == "resume":
            return await self.sessions.resume(session.id, actor=user.owner, is_admin=user.is_admin)
        assert command.level is not None  # parse_command requires it
        return await self.sessions.set_level(
            session.id, command.level, actor=user.owner, is_admin=user.is_admin
        )

    def _target(self, command: Command) -> Session:
        if command.session_id is not None:
            session = self.sessions.find(command.session_id)
            if session is None or (
                command.device is not None and session.address != command.device
            ):
                raise CommandRefused(
                    "not-found", f"no session {command.session_id} on this hub", "session_id"
                )
            return session
        assert command.device is not None
        session = self.sessions.active_on(command.device)
        if session is None:
            raise CommandRefused(
                "not-found", f"no active session on device {command.device}", "device"
            )
        return session

    def _mapped_user(self) -> Principal:
        user_id = self.settings.user_id
        if user_id is None:
            raise CommandRefused(
                "forbidden",
                "MQTT is not mapped to a hub user; set MCGW_MQTT__USER_ID",
            )
        user = self.access.user(user_id)
        if user is None:
            raise CommandRefused(
                "forbidden", f"MCGW_MQTT__USER_ID names user {user_id}, who does not exist"
            )
        return user

    def _controller(self, session: Session) -> Principal:
        """The user MQTT acts as on ``session``: only a session started over MQTT, or any
        session when the mapped user is an admin."""
        if session.id not in self.started_here:
            user = self.access.user(self.settings.user_id) if self.settings.user_id else None
            if user is None or not user.is_admin:
                raise CommandRefused(
                    "forbidden",
                    f"session {session.id} was not started over MQTT; only stop is accepted "
                    "for it (or map MQTT to an admin with MCGW_MQTT__USER_ID)",
                    "session_id",
                )
            return user
        return self._mapped_user()

    async def _start(self, command: Command) -> Session:
        if not self.settings.allow_start:
            raise CommandRefused(
                "forbidden", "starting sessions over MQTT is off (MCGW_MQTT__ALLOW_START)"
            )
        user = self._mapped_user()
        if user.consent_accepted_at is None:  # S7
            raise CommandRefused(
                "consent-required",
                f"user {user.user_id} has not accepted the contraindication notice",
            )
        assert command.device is not None
        assert command.program is not None
        address = command.device
        if self.access.device_access(user, address) is not DeviceAccess.CONTROL:  # S8
            raise CommandRefused(
                "forbidden", f"user {user.user_id} does not control device {address}", "device"
            )
        program = self.programs.get(command.program)
        if program is None:
            raise CommandRefused(
                "not-found",
                f"no built-in program {command.program!r}; one of {sorted(self.programs)}",
                "program",
            )
        session, _started = await self.sessions.start_or_replay(
            owner=user.owner,
            address=address,
            program=program,
            level=command.level or 1,
            consented=True,
            user_cap_ua=user.cap_ua,
            idempotency_key=None if command.id is None else f"mqtt:{command.id}",
        )
        self.started_here.add(session.id)
        return session
