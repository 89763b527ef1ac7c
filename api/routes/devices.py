"""Devices: what the hub knows and sees, scanning, claiming, renaming, forgetting.

A device's view merges three sources: the device manager (devices the hub keeps connected, with
live state, battery, RSSI and contact), the last scans (discovered, not yet managed) and this
hub's rows in the database (name, owner, bond state, last seen).

Who may see or control a device is decided by the hub's access policy (``gateway.access``):
a claimed device belongs to one user; unclaimed devices are visible to everyone (so they can be
claimed); a device claimed by someone else is invisible (404, its existence is not leaked);
admins see and control every device. Renaming, forgetting and starting a session need the device
to be yours (or an admin's token): an unclaimed one answers 403 "claim it first". An admin can
hand a device to another user or release it (``PUT /devices/{address}/owner``). Every change of
owner applies to open WebSocket subscriptions at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from sqlmodel import Session

from api.auth import AdminUser, CurrentUser, Principal, RuntimeDep
from api.errors import ApiProblem
from api.schemas.devices import DevicePublic, DeviceUpdate, OwnerChange, ScanRequest
from gateway.access import DeviceAccess
from gateway.errors import NotFound
from gateway.runtime import Runtime
from gateway.states import DeviceState
from gateway.storage import repo
from gateway.storage.models import DeviceRecord

router = APIRouter(prefix="/devices", tags=["devices"])

AddressPath = Annotated[
    str,
    Path(pattern="^[0-9A-Za-z][0-9A-Za-z:_-]{0,63}$", examples=["C0:4D:43:00:00:00"]),
]


def _rows(*, session: Session, hub_id: str) -> dict[str, DeviceRecord]:
    return {row.address.upper(): row for row in repo.list_devices(session=session, hub_id=hub_id)}


async def load_rows(runtime: Runtime) -> dict[str, DeviceRecord]:
    rows: dict[str, DeviceRecord] = await runtime.db(_rows, hub_id=runtime.settings.hub_id)
    return rows


def describe(
    runtime: Runtime, user: Principal, address: str, row: DeviceRecord | None
) -> DevicePublic:
    managed = runtime.devices.find(address)
    seen = runtime.devices.find_discovered(address)
    session = runtime.sessions.active_on(address)
    state: str
    if managed is not None:
        name, state = managed.name, managed.state
        rssi, battery, contact = managed.rssi, managed.battery_pct, managed.contact_quality
    elif seen is not None:
        name, state, rssi, battery, contact = (
            seen.name,
            DeviceState.DISCOVERED,
            seen.rssi,
            seen.battery_pct,
            None,
        )
    else:
        name, state, rssi, battery, contact = "", "known", None, None, None
    last_seen: datetime | None = None
    if row is not None:
        name = row.name or name
        last_seen = row.last_seen
    owner_id = runtime.access.owner_of(address)
    return DevicePublic(
        address=address,
        name=name or address,
        state=state,
        managed=managed is not None,
        claimed=owner_id is not None,
        owned_by_you=owner_id == user.user_id,
        bonded=(managed is not None and managed.state is DeviceState.BONDED)
        or (row is not None and row.bonded),
        rssi=rssi,
        battery_pct=battery,
        contact_quality=contact,
        active_session_id=(
            session.id
            if session is not None and runtime.access.may_see_owned(user, int(session.owner))
            else None
        ),
        last_seen=last_seen,
    )


def _known_addresses(runtime: Runtime) -> set[str]:
    addresses = set(runtime.devices.addresses()) | runtime.access.recorded_devices()
    return addresses | runtime.devices.discovered_addresses()


@router.get("", summary="Devices you can see: claimed by you, unclaimed, and discovered")
async def list_devices(user: CurrentUser, runtime: RuntimeDep) -> list[DevicePublic]:
    """Every device this hub manages, has recorded or has heard in a scan that you may see."""
    rows = await load_rows(runtime)
    return [
        describe(runtime, user, address, rows.get(address))
        for address in sorted(_known_addresses(runtime))
        if runtime.access.may_see_device(user, address)
    ]


def find_device(runtime: Runtime, user: Principal, address: str) -> tuple[str, DeviceAccess]:
    """The normalised address of a device the user may see, and what they may do; else 404.

    Decided in memory (the access policy and the device manager): no storage round trip.
    """
    address = address.upper()
    access = runtime.access.device_access(user, address)
    if access is DeviceAccess.HIDDEN or address not in _known_addresses(runtime):
        raise ApiProblem(404, f"no device {address} visible to you; scan first", kind="not-found")
    return address, access


def require_control(address: str, access: DeviceAccess) -> None:
    """403 ``claim-required`` unless the user controls the device (found by ``find_device``)."""
    if access is not DeviceAccess.CONTROL:
        raise ApiProblem(
            403,
            f"device {address} is not claimed; claim it first "
            f"(POST /api/v1/devices/{address}/claim)",
            kind="claim-required",
        )


async def _row(runtime: Runtime, address: str) -> DeviceRecord | None:
    rows = await load_rows(runtime)
    return rows.get(address)


@router.get("/{address}", summary="One device")
async def get_device(address: AddressPath, user: CurrentUser, runtime: RuntimeDep) -> DevicePublic:
    """Its state, battery, contact quality and signal, and your session on it, if any."""
    address, _ = find_device(runtime, user, address)
    return describe(runtime, user, address, await _row(runtime, address))


@router.post("/scan", summary="Scan for devices nearby (takes timeout_s)")
async def scan(
    request: Request, user: CurrentUser, runtime: RuntimeDep, body: ScanRequest | None = None
) -> list[DevicePublic]:
    """Listens for ``timeout_s`` seconds and answers the devices heard that you may see.
    One scan at a time per hub: a second request waits for the first to finish. 503
    ``scan-failed`` if the radio cannot scan."""
    lock: asyncio.Lock = request.app.state.scan_lock
    timeout_s = (body or ScanRequest()).timeout_s
    async with lock:  # one radio: concurrent scans would fail; the second waits its turn
        try:
            found = await runtime.devices.scan(timeout_s=timeout_s)
        except Exception as exc:
            raise ApiProblem(503, f"the scan failed: {exc}", kind="scan-failed") from exc
    rows = await load_rows(runtime)
    return [
        describe(runtime, user, d.address.upper(), rows.get(d.address.upper()))
        for d in found
        if runtime.access.may_see_device(user, d.address)
    ]


def _claim(
    *, session: Session, hub_id: str, address: str, name: str, bonded: bool, user_id: int
) -> DeviceRecord:
    existing = repo.list_devices(session=session, hub_id=hub_id)
    is_new = all(row.address.upper() != address for row in existing)
    repo.upsert_device(
        session=session,
        hub_id=hub_id,
        address=address,
        name=name if is_new else None,
        bonded=bonded or None,
    )
    return repo.claim_device(session=session, hub_id=hub_id, address=address, user_id=user_id)


@router.post(
    "/{address}/claim",
    summary="Make a device yours; the hub connects to it and keeps it connected",
    responses={409: {"description": "Another user owns it (admins see this)"}},
)
async def claim(address: AddressPath, user: CurrentUser, runtime: RuntimeDep) -> DevicePublic:
    """Yours from now on: nobody else sees it (admins excepted) and the hub keeps it connected."""
    address, _ = find_device(runtime, user, address)
    managed = runtime.devices.find(address)
    if managed is None:
        managed = runtime.devices.manage(runtime.devices.seen(address))
    row = await runtime.db(
        _claim,
        hub_id=runtime.settings.hub_id,
        address=address,
        name=managed.name,
        bonded=managed.state is DeviceState.BONDED,
        user_id=user.user_id,
    )
    await runtime.access_changed()
    return describe(runtime, user, address, row)


def _set_owner(*, session: Session, hub_id: str, address: str, user_id: int | None) -> None:
    if user_id is None:
        repo.release_device(session=session, hub_id=hub_id, address=address)
    else:
        repo.claim_device(
            session=session, hub_id=hub_id, address=address, user_id=user_id, force=True
        )


@router.put(
    "/{address}/owner",
    summary="Admin: hand a device to another user, or release it (user_id null)",
    responses={409: {"description": "A session runs on it; stop it first"}},
)
async def set_owner(
    address: AddressPath, body: OwnerChange, admin: AdminUser, runtime: RuntimeDep
) -> DevicePublic:
    """The previous owner loses sight of it at once, open WebSocket subscriptions included."""
    address, _ = find_device(runtime, admin, address)
    if address not in runtime.access.recorded_devices():
        raise ApiProblem(
            409, f"device {address} was never claimed; its owner claims it", kind="conflict"
        )
    _no_session_on(runtime, address)
    if body.user_id is not None and runtime.access.user(body.user_id) is None:
        raise ApiProblem(
            422,
            f"there is no user {body.user_id}",
            kind="validation",
            errors=[("user_id", "no such user")],
        )
    await runtime.db(
        _set_owner, hub_id=runtime.settings.hub_id, address=address, user_id=body.user_id
    )
    await runtime.access_changed()
    return describe(runtime, admin, address, await _row(runtime, address))


def _no_session_on(runtime: Runtime, address: str) -> None:
    active = runtime.sessions.active_on(address)
    if active is not None:
        raise ApiProblem(
            409, f"session {active.id} runs on {address}; stop it first", kind="conflict"
        )


def _rename(*, session: Session, hub_id: str, address: str, name: str) -> DeviceRecord:
    return repo.upsert_device(session=session, hub_id=hub_id, address=address, name=name)


@router.patch("/{address}", summary="Rename your device")
async def rename(
    address: AddressPath, body: DeviceUpdate, user: CurrentUser, runtime: RuntimeDep
) -> DevicePublic:
    """The name you see in lists (other users never see it)."""
    address, access = find_device(runtime, user, address)
    require_control(address, access)
    row = await runtime.db(_rename, hub_id=runtime.settings.hub_id, address=address, name=body.name)
    managed = runtime.devices.find(address)
    if managed is not None:
        managed.name = body.name
    return describe(runtime, user, address, row)


def _forget(*, session: Session, hub_id: str, address: str) -> None:
    repo.forget_device(session=session, hub_id=hub_id, address=address)


@router.delete(
    "/{address}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Forget your device: disconnect it and drop it from this hub (history is kept)",
    responses={409: {"description": "A session runs on it; stop it first"}},
)
async def forget(address: AddressPath, user: CurrentUser, runtime: RuntimeDep) -> Response:
    """It disconnects and is no longer yours; it shows up again when a scan hears it."""
    address, access = find_device(runtime, user, address)
    require_control(address, access)
    _no_session_on(runtime, address)
    await runtime.db(_forget, hub_id=runtime.settings.hub_id, address=address)
    await runtime.access_changed()
    with contextlib.suppress(NotFound):
        await runtime.devices.forget(address)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
