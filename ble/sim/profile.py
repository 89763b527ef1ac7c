"""The GATT table and advertising data of the simulated device, as bumble objects.

:func:`build_profile` lays out the Microcurrent GATT profile v1 (UUIDs from ble/protocol/):

==================  =========================  ==========================================
characteristic      properties                 permissions
==================  =========================  ==========================================
control point       write (with response)      encrypted link, except a STOP (see below)
response            indicate                   -
telemetry           notify                     -
status              read, notify               readable
limits              read                       readable
==================  =========================  ==========================================

plus Device Information (0x180A) and Battery (0x180F). A control-point write on a link that is
not encrypted fails with ATT error 0x0F (Insufficient Encryption) unless it is a well-formed
STOP: stopping output can never be an attack (docs/protocol.md §3).

:func:`advertising_data` builds the advertisement: flags, the complete local name, the service
UUID and the manufacturer data (COMPANY_ID + :class:`~ble.protocol.AdvertData`).

Fidelity gap, on purpose: a real device must keep legacy advertising within 31 bytes and would
put its name in the scan response. The software radio sends no separate scan response, so the
simulator puts everything in the advertising data (about 40 bytes, which it accepts).

It deliberately holds no behaviour: the callbacks come from ble/sim/peripheral.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bumble.core import UUID, AdvertisingData
from bumble.device import Connection
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.profiles.battery_service import BatteryService
from bumble.profiles.device_information_service import DeviceInformationService

from ble import protocol as p

_FLAGS_LE_GENERAL_NO_BR_EDR = 0x06


@dataclass(frozen=True, slots=True)
class Profile:
    """The services to add to a bumble Device, and the characteristics the simulator sends on."""

    services: list[Service]
    response: Characteristic[bytes]
    telemetry: Characteristic[bytes]
    status: Characteristic[bytes]
    battery: Characteristic[int]


def build_profile(
    *,
    on_control_write: Callable[[Connection, bytes], Awaitable[None]],
    read_status: Callable[[Connection], bytes],
    read_limits: Callable[[Connection], bytes],
    read_battery: Callable[[Connection], int],
    model: str,
    serial: str,
    firmware_revision: str,
) -> Profile:
    props = Characteristic.Properties
    perms = Characteristic.Permissions
    # Not WRITE_REQUIRES_ENCRYPTION: docs/protocol.md §3 lets a well-formed STOP through on any
    # link, so the write callback applies the encryption rule itself (ATT error 0x0F).
    control: Characteristic[bytes] = Characteristic(
        p.CONTROL_POINT_UUID,
        props.WRITE,
        perms.WRITEABLE,
        CharacteristicValue[bytes](write=on_control_write),
    )
    response: Characteristic[bytes] = Characteristic(p.RESPONSE_UUID, props.INDICATE, perms(0), b"")
    telemetry: Characteristic[bytes] = Characteristic(p.TELEMETRY_UUID, props.NOTIFY, perms(0), b"")
    status: Characteristic[bytes] = Characteristic(
        p.STATUS_UUID,
        props.READ | props.NOTIFY,
        perms.READABLE,
        CharacteristicValue[bytes](read=read_status),
    )
    limits: Characteristic[bytes] = Characteristic(
        p.LIMITS_UUID, props.READ, perms.READABLE, CharacteristicValue[bytes](read=read_limits)
    )
    battery = BatteryService(read_battery)
    info = DeviceInformationService(
        manufacturer_name="mcgw simulator",
        model_number=model,
        serial_number=serial,
        firmware_revision=firmware_revision,
    )
    microcurrent = Service(p.SERVICE_UUID, [control, response, telemetry, status, limits])
    return Profile(
        services=[info, battery, microcurrent],
        response=response,
        telemetry=telemetry,
        status=status,
        battery=battery.battery_level_characteristic,
    )


def advertising_data(name: str, advert: p.AdvertData) -> bytes:
    return bytes(
        AdvertisingData(
            [
                (AdvertisingData.FLAGS, bytes([_FLAGS_LE_GENERAL_NO_BR_EDR])),
                (AdvertisingData.COMPLETE_LOCAL_NAME, name.encode()),
                (
                    AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                    UUID(p.SERVICE_UUID).to_bytes(),
                ),
                (
                    AdvertisingData.MANUFACTURER_SPECIFIC_DATA,
                    p.COMPANY_ID.to_bytes(2, "little") + bytes(advert),
                ),
            ]
        )
    )
