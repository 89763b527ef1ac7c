"""The JSON bodies the bridge publishes, built from the gateway's own objects.

A device's retained state (``device_state``), a session's summary, the hub's summary, an event
and a down-sampled telemetry frame: each a plain dict, read from memory (the device manager,
the session manager, the latest telemetry frame). Nothing here publishes, waits or decides who
may see what; docs/mqtt.md shows every body with an example.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from gateway.devices import ManagedDevice
from gateway.events import DeviceStateChanged, Event, SessionNotice, SessionStateChanged
from gateway.session import Session
from gateway.states import DeviceState
from gateway.telemetry import TelemetryFrame

CONTACT_THRESHOLD = 30
"""Contact quality from which the skin-contact binary sensor says "on" (0-100)."""
_LINKED = frozenset({DeviceState.CONNECTED, DeviceState.BONDED})
_TELEMETRY_FIELDS = (
    "seq",
    "session_id",
    "zone",
    "state",
    "current_mean_ua",
    "current_peak_ua",
    "impedance_ohm",
    "contact_quality",
    "battery_pct",
    "temperature_c",
    "faults",
)


def session_summary(session: Session, cap_s: float) -> dict[str, Any]:
    """What MQTT shows of a session (no owner: the broker is not the access policy's)."""
    planned = min(float(session.program.duration_s), cap_s)
    return {
        "id": session.id,
        "device": session.address,
        "state": session.state.value,
        "reason": session.reason,
        "program": session.program.slug,
        "level": session.level,
        "zone": None if session.last_zone is None else session.last_zone.name.lower(),
        "position_s": round(session.position_s, 1),
        "time_left_s": max(0, round(planned - session.position_s)),
        "started_at": session.started_at,
    }


def device_state(
    managed: ManagedDevice,
    session: Session | None,
    frame: TelemetryFrame | None,
    *,
    cap_s: float,
) -> dict[str, Any]:
    """A device's retained state: link, battery, contact, signal, the latest measurements and
    its active session (or None)."""
    sample = frame.as_dict() if frame is not None else {}
    contact = managed.contact_quality
    linked = managed.state in _LINKED
    active = session if session is not None and session.active else None
    return {
        "device": managed.address,
        "name": managed.name,
        "connection": str(managed.state),
        "connected": linked,
        "battery_pct": managed.battery_pct,
        "contact_quality": contact if linked else None,
        "skin_contact": None if contact is None or not linked else contact >= CONTACT_THRESHOLD,
        "signal_dbm": managed.rssi,
        "temperature_c": sample.get("temperature_c") if linked else None,
        "current_ua": sample.get("current_mean_ua") if linked else None,
        "impedance_ohm": sample.get("impedance_ohm") if linked else None,
        "in_session": active is not None,
        "session": None if active is None else session_summary(active, cap_s),
    }


def hub_summary(
    hub_id: str, version: str, devices: Iterable[ManagedDevice], sessions: Iterable[Session]
) -> dict[str, Any]:
    """The hub's retained summary, what ``mcgw fleet`` lists."""
    return {
        "hub_id": hub_id,
        "version": version,
        "devices": sorted(d.address for d in devices),
        "sessions": [
            {"id": s.id, "device": s.address, "state": s.state.value, "program": s.program.slug}
            for s in sessions
            if s.active
        ],
        "ts": round(time.time(), 3),
    }


def event_body(event: Event) -> dict[str, Any] | None:
    """An event for the events topic; None for bookkeeping events that are not published."""
    if isinstance(event, SessionStateChanged):
        return {
            "kind": event.kind,
            "ts": event.ts,
            "session_id": event.session_id,
            "device": event.address,
            "state": event.state.value,
            "reason": event.reason,
        }
    if isinstance(event, SessionNotice):
        return {
            "kind": event.kind,
            "ts": event.ts,
            "session_id": event.session_id,
            "device": event.address,
            "notice": event.notice,
            "detail": event.detail,
        }
    if isinstance(event, DeviceStateChanged):
        return {
            "kind": event.kind,
            "ts": event.ts,
            "device": event.address,
            "state": str(event.state),
            "detail": event.detail,
        }
    return None


def telemetry_body(frame: TelemetryFrame) -> dict[str, Any]:
    """One down-sampled frame: the latest sample when the tick came."""
    full = frame.as_dict()
    body = {name: full[name] for name in _TELEMETRY_FIELDS}
    body["device"] = frame.device
    body["ts"] = round(time.time(), 3)
    return body
