"""The hub's radios and device links (admins): the Bluetooth health view.

``GET /radios`` answers from ``Runtime.bluetooth_report()``, a snapshot held in memory: it
waits on no radio and reads no database, so it answers while a radio is down or storage is
away. /metrics shows the same figures without addresses or names (``api.metrics``).

It deliberately does not change anything: radios are configured in settings (``--ble``).
"""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import AdminUser, RuntimeDep
from api.schemas.radios import RadiosPublic

router = APIRouter(prefix="/radios", tags=["radios"])


@router.get("", summary="Admins: each radio's state, slots and counters; each device's link")
async def list_radios(_admin: AdminUser, runtime: RuntimeDep) -> RadiosPublic:
    """Per radio: mode, address, state, slots used and free, adverts per second, connect
    attempts and failures, reopens, last error. Per device the hub looks after: the radio its
    link uses, signal, MTU, reconnects, last disconnect reason."""
    return RadiosPublic.model_validate(runtime.bluetooth_report(), from_attributes=True)
