"""The Bluetooth side of ``mcgw doctor``: what the configured BLE mode needs from the host.

- ``auto``/``bluez[:hciN]`` on Linux: the D-Bus system bus (``DBUS_SYSTEM_BUS_ADDRESS`` or the
  standard socket), BlueZ on it and its version (bleak needs 5.55+; read from ``bluetoothctl
  --version`` as bleak does, or ``bluetoothd --version``), its adapters and whether they are
  powered (``org.bluez`` ``Adapter1`` over ObjectManager; the kernel's /sys/class/bluetooth
  when BlueZ cannot be asked), rfkill (/sys/class/rfkill), the ``bluetooth`` group;
- ``hci:<transport>``: for a local adapter (``usb:``, ``hci-socket:``, ``serial:``) rfkill and
  the permissions that transport needs (CAP_NET_ADMIN/CAP_NET_RAW for the HCI user channel);
  a remote one (``tcp-client:``...) needs nothing of the host;
- ``sim``: nothing at all (the radio is in the process).

Last, in every mode, the radio itself: opened as the hub opens it, it must answer and hear
advertisers within the scan time (``ble.advertisers``). It is not tried when a check before it
failed. Nothing here changes the host: no adapter is powered, no rfkill unblocked.
"""

from __future__ import annotations

import asyncio
import grp
import os
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ble.mode import BleMode, BleModeKind
from gateway.doctor import Check, Status

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus

__all__ = ["bluetooth_checks"]

DBUS_TIMEOUT_S = 3.0
"""One D-Bus connect or call."""
VERSION_TIMEOUT_S = 3.0
RADIO_OPEN_TIMEOUT_S = 15.0
MIN_BLUEZ = (5, 55)
"""The oldest BlueZ bleak supports (bleak.backends.bluezdbus.version)."""
DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
SYS_BLUETOOTH = Path("/sys/class/bluetooth")
SYS_RFKILL = Path("/sys/class/rfkill")
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
REMOTE_TRANSPORTS = ("tcp-client", "tcp-server", "ws-client", "ws-server", "udp", "file", "pty")
LOCAL_TRANSPORTS = ("usb", "pyusb", "hci-socket", "serial", "vhci")

NO_BUS_FIX = (
    "install and start D-Bus and BlueZ (`sudo apt install bluez`; both start at boot); in a "
    "container, mount the host's bus (`-v /run/dbus:/run/dbus:ro`); or use an HCI dongle "
    "without BlueZ (--ble hci:usb:0) or the simulator (--ble sim:2)"
)
NO_ADAPTER_FIX = (
    "plug in a USB Bluetooth dongle (`lsusb`, `dmesg | grep -i bluetooth` should show it); on a "
    "Raspberry Pi enable the built-in one (no `dtoverlay=disable-bt` in config.txt, then "
    "`sudo systemctl restart hciuart bluetooth`); in a container run with --net=host"
)


async def bluetooth_checks(mode: BleMode, *, scan_s: float) -> list[Check]:
    """The checks ``mode`` needs, then the radio (see the module docstring)."""
    if mode.kind is BleModeKind.SIM:
        checks = [
            Check(
                "bluetooth",
                Status.SKIP,
                f"{mode}: the radio and its devices are simulated in the hub process; "
                "no BlueZ, D-Bus, adapter, rfkill or permission is needed",
            )
        ]
    elif mode.kind is BleModeKind.HCI:
        checks = _hci_host_checks(mode.transport)
    elif not sys.platform.startswith("linux"):
        checks = [
            Check("bluetooth", Status.SKIP, f"{sys.platform}: bleak uses the platform's stack")
        ]
    else:
        checks = await _bluez_checks(mode.adapter)
    if any(check.status is Status.FAIL for check in checks):
        checks.append(Check("radio", Status.SKIP, "not tried: fix the problems above first", ""))
    else:
        checks.append(await _radio_check(mode, scan_s))
    return checks


# --- BlueZ -----------------------------------------------------------------------------------


def system_bus_address() -> str:
    """The system bus bleak (dbus-fast) connects to."""
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS


async def _bluez_checks(adapter: str) -> list[Check]:
    checks: list[Check] = []
    address = system_bus_address()
    bus = await _connect_system_bus()
    if isinstance(bus, str):
        checks.append(
            Check("dbus", Status.FAIL, f"no D-Bus system bus at {address}: {bus}", NO_BUS_FIX)
        )
        checks.append(_bluez_without_bus(await _bluez_version()))
        checks.append(_kernel_adapters(adapter))
    else:
        try:
            checks.append(Check("dbus", Status.OK, f"system bus at {address}"))
            checks += await _bluez_on_bus(bus, adapter)
        finally:
            bus.disconnect()
    checks.append(_rfkill())
    checks.append(_bluetooth_group())
    return checks


async def _connect_system_bus() -> MessageBus | str:
    """The system bus, connected, or why not (one line)."""
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus

    try:
        async with asyncio.timeout(DBUS_TIMEOUT_S):
            return await MessageBus(bus_type=BusType.SYSTEM).connect()
    except TimeoutError:
        return f"no answer within {DBUS_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001 - every failure to connect is the same finding
        return str(exc) or type(exc).__name__


async def _call(bus: MessageBus, **message: Any) -> tuple[bool, Any]:
    """(True, body) or (False, error text) of one D-Bus method call."""
    from dbus_fast import Message, MessageType

    try:
        async with asyncio.timeout(DBUS_TIMEOUT_S):
            reply = await bus.call(Message(**message))
    except TimeoutError:
        return False, f"no answer within {DBUS_TIMEOUT_S:g} s"
    assert reply is not None
    if reply.message_type is MessageType.ERROR:
        return False, f"{reply.error_name}: {' '.join(map(str, reply.body))}"
    return True, reply.body


async def _bluez_on_bus(bus: MessageBus, adapter: str) -> list[Check]:
    owned, body = await _call(
        bus,
        destination="org.freedesktop.DBus",
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        member="NameHasOwner",
        signature="s",
        body=["org.bluez"],
    )
    version = await _bluez_version()
    if not owned or not body[0]:
        return [
            Check(
                "bluez",
                Status.FAIL,
                "BlueZ is not running: nobody owns org.bluez on the system bus",
                "sudo apt install bluez && sudo systemctl enable --now bluetooth",
            ),
            _kernel_adapters(adapter),
        ]
    checks = [_version_check(version)]
    ok, objects = await _call(
        bus,
        destination="org.bluez",
        path="/",
        interface="org.freedesktop.DBus.ObjectManager",
        member="GetManagedObjects",
    )
    if not ok:
        fix = (
            "add this user to the bluetooth group (`sudo usermod -aG bluetooth $USER`, then log "
            "in again) or run the hub as its service user"
            if "AccessDenied" in objects
            else "restart BlueZ: `sudo systemctl restart bluetooth`"
        )
        checks.append(
            Check("adapters", Status.FAIL, f"BlueZ did not list its adapters: {objects}", fix)
        )
        return checks
    checks.append(_adapters_check(_adapters_of(objects[0]), adapter))
    return checks


async def _bluez_version() -> str | None:
    """BlueZ's version as its tools print it (``5.66``), or None when none is installed."""
    for tool in ("bluetoothctl", "bluetoothd"):
        path = shutil.which(tool) or next(
            (
                str(p)
                for p in (Path("/usr/libexec/bluetooth", tool), Path("/usr/lib/bluetooth", tool))
                if p.is_file()
            ),
            None,
        )
        if path is None:
            continue
        try:
            process = await asyncio.create_subprocess_exec(
                path,
                "--version",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                stdin=asyncio.subprocess.DEVNULL,
            )
            async with asyncio.timeout(VERSION_TIMEOUT_S):
                out, _ = await process.communicate()
        except (OSError, TimeoutError):
            continue
        if match := re.search(rb"(\d+)\.(\d+)", out):
            return match.group(0).decode()
    return None


def _bluez_without_bus(version: str | None) -> Check:
    if version is None:
        return Check(
            "bluez",
            Status.FAIL,
            "BlueZ is not installed (neither bluetoothctl nor bluetoothd is here)",
            "sudo apt install bluez (bleak needs 5.55 or later)",
        )
    return Check(
        "bluez",
        Status.WARN,
        f"BlueZ {version} is installed, but cannot be reached without the system bus",
        "start D-Bus (above), then `sudo systemctl enable --now bluetooth`",
    )


def _version_check(version: str | None) -> Check:
    if version is None:
        return Check(
            "bluez",
            Status.WARN,
            "BlueZ runs (org.bluez on the system bus), but its version is unknown: neither "
            "bluetoothctl nor bluetoothd is installed here; bleak then assumes 5.55 or later",
            "install BlueZ's tools on this host (`sudo apt install bluez`) so the version can be "
            "checked, or make sure the BlueZ that owns the bus is 5.55 or later",
        )
    major, minor = (int(part) for part in version.split("."))
    if (major, minor) < MIN_BLUEZ:
        return Check(
            "bluez",
            Status.FAIL,
            f"BlueZ {version} runs, but bleak needs 5.55 or later",
            "upgrade BlueZ (a current Raspberry Pi OS or Debian has 5.66 or later)",
        )
    return Check("bluez", Status.OK, f"BlueZ {version} runs (org.bluez on the system bus)")


def _adapters_of(objects: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """``{"hci0": {"Address": ..., "Powered": ...}}`` from ObjectManager's answer."""
    found: dict[str, dict[str, Any]] = {}
    for path, interfaces in objects.items():
        props = interfaces.get("org.bluez.Adapter1")
        if props is not None:
            found[path.rsplit("/", 1)[-1]] = {k: v.value for k, v in props.items()}
    return dict(sorted(found.items()))


def _adapters_check(adapters: dict[str, dict[str, Any]], wanted: str) -> Check:
    if not adapters:
        return Check("adapters", Status.FAIL, "BlueZ has no Bluetooth adapter", NO_ADAPTER_FIX)
    shown = ", ".join(
        f"{name} ({props.get('Address', '?')}, {'on' if props.get('Powered') else 'off'})"
        for name, props in adapters.items()
    )
    if wanted and wanted not in adapters:
        return Check(
            "adapters",
            Status.FAIL,
            f"no adapter {wanted} in BlueZ; it has {shown}",
            f"use one of them (--ble bluez:{next(iter(adapters))}) or plug in the missing one",
        )
    used = wanted or next(iter(adapters))
    if not adapters[used].get("Powered"):
        return Check(
            "adapters",
            Status.FAIL,
            f"{used} is powered off ({shown})",
            f"`bluetoothctl power on` (with several adapters: `bluetoothctl select` "
            f"{adapters[used].get('Address', used)} first); if it refuses, see rfkill",
        )
    return Check("adapters", Status.OK, f"{shown}; the hub uses {used}")


def _kernel_adapters(wanted: str) -> Check:
    """The adapters the kernel has, for when BlueZ cannot be asked."""
    names = sorted(p.name for p in SYS_BLUETOOTH.iterdir()) if SYS_BLUETOOTH.is_dir() else []
    if not names:
        return Check(
            "adapters",
            Status.FAIL,
            f"no Bluetooth adapter in the kernel ({SYS_BLUETOOTH} is empty or missing)",
            NO_ADAPTER_FIX,
        )
    if wanted and wanted not in names:
        return Check(
            "adapters",
            Status.FAIL,
            f"no adapter {wanted} in the kernel; it has {', '.join(names)}",
            f"use one of them (--ble bluez:{names[0]}) or plug in the missing one",
        )
    return Check(
        "adapters",
        Status.WARN,
        f"the kernel has {', '.join(names)}, but BlueZ cannot be asked whether it is powered",
        "fix BlueZ first (above); then `bluetoothctl show` tells",
    )


# --- rfkill, permissions ---------------------------------------------------------------------


def _rfkill() -> Check:
    switches = []
    if SYS_RFKILL.is_dir():
        for entry in sorted(SYS_RFKILL.iterdir()):
            if _read(entry / "type") == "bluetooth":
                switches.append(
                    (
                        _read(entry / "name") or entry.name,
                        _read(entry / "soft"),
                        _read(entry / "hard"),
                    )
                )
    if not switches:
        where = "none for Bluetooth" if SYS_RFKILL.is_dir() else f"{SYS_RFKILL} missing"
        return Check("rfkill", Status.SKIP, f"no rfkill switch can block Bluetooth here ({where})")
    hard = [name for name, _soft, h in switches if h == "1"]
    soft = [name for name, s, _hard in switches if s == "1"]
    if hard:
        return Check(
            "rfkill",
            Status.FAIL,
            f"Bluetooth is blocked in hardware: {', '.join(hard)}",
            "turn the radio on with the machine's switch or its firmware/BIOS setting",
        )
    if soft:
        return Check(
            "rfkill",
            Status.FAIL,
            f"Bluetooth is blocked by rfkill: {', '.join(soft)}",
            "sudo rfkill unblock bluetooth",
        )
    return Check("rfkill", Status.OK, f"not blocked: {', '.join(s[0] for s in switches)}")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _bluetooth_group() -> Check:
    if os.geteuid() == 0:
        return Check("permissions", Status.OK, "running as root")
    try:
        group = grp.getgrnam("bluetooth")
    except KeyError:
        return Check(
            "permissions",
            Status.WARN,
            "there is no bluetooth group (BlueZ's D-Bus policy grants access through it)",
            "install BlueZ (`sudo apt install bluez`), then add this user to its group",
        )
    if group.gr_gid in os.getgroups():
        return Check("permissions", Status.OK, "this user is in the bluetooth group")
    return Check(
        "permissions",
        Status.WARN,
        "this user is not in the bluetooth group; BlueZ may refuse it",
        "sudo usermod -aG bluetooth $USER, then log in again (or restart the service)",
    )


def _capabilities() -> set[int]:
    for line in _read(Path("/proc/self/status")).splitlines():
        if line.startswith("CapEff:"):
            value = int(line.split()[1], 16)
            return {bit for bit in range(64) if value >> bit & 1}
    return set()


def _hci_host_checks(transport: str) -> list[Check]:
    scheme = transport.partition(":")[0]
    if scheme in REMOTE_TRANSPORTS:
        return [
            Check(
                "bluetooth",
                Status.SKIP,
                f"hci:{transport}: the radio is at the far end of {scheme}; this host needs "
                "no BlueZ, adapter, rfkill or permission for it",
            )
        ]
    checks = [_rfkill()]
    if scheme == "hci-socket":
        missing = {CAP_NET_ADMIN, CAP_NET_RAW} - _capabilities()
        if missing:
            checks.append(
                Check(
                    "permissions",
                    Status.FAIL,
                    "the HCI user channel (hci-socket) needs CAP_NET_ADMIN and CAP_NET_RAW, "
                    "which this process does not have",
                    f"grant them: `sudo setcap cap_net_admin,cap_net_raw+eip "
                    f"{os.path.realpath(sys.executable)}`, or in the systemd unit "
                    "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW",
                )
            )
        else:
            checks.append(
                Check("permissions", Status.OK, "CAP_NET_ADMIN and CAP_NET_RAW for hci-socket")
            )
    return checks


# --- the radio -------------------------------------------------------------------------------


def _open_fix(mode: BleMode) -> str:
    scheme = mode.transport.partition(":")[0]
    if mode.kind is BleModeKind.BLUEZ or mode.kind is BleModeKind.AUTO:
        return "`bluetoothctl show` and `journalctl -u bluetooth` say what BlueZ has against it"
    if scheme.startswith("tcp"):
        return "start `mcgw sim` (or the HCI server) first, and check the host and port"
    if scheme in ("usb", "pyusb"):
        return (
            "check the dongle is plugged in (`lsusb`), that this user may open it (a udev rule "
            "for its group, or root), and that BlueZ does not hold it "
            "(`sudo systemctl stop bluetooth`)"
        )
    if scheme == "hci-socket":
        return "take the adapter from BlueZ first (`sudo btmgmt --index 0 power off`)"
    if scheme == "serial":
        return "check the device path and that this user may open it (the dialout group)"
    return "check the transport moniker (bumble's transports: tcp-client:, usb:, serial:...)"


async def _radio_check(mode: BleMode, scan_s: float) -> Check:
    """Open the radio as the hub does and listen ``scan_s`` seconds for advertisers."""
    from bleak.exc import BleakError

    from ble.advertisers import listen_to_all
    from ble.backends import BleStack
    from ble.errors import BleError

    try:
        async with asyncio.timeout(RADIO_OPEN_TIMEOUT_S + scan_s):
            stack = await BleStack.open(mode, on_down=lambda: None, on_up=lambda _b: None)
            try:
                heard = await listen_to_all(scan_s, backend=stack.backends.scanner)
                address = stack.adapter.address if stack.adapter is not None else ""
            finally:
                await stack.close()
    except (BleError, BleakError, OSError, TimeoutError) as exc:
        return Check(
            "radio",
            Status.FAIL,
            f"{mode} does not answer: {exc or type(exc).__name__}",
            _open_fix(mode),
        )
    answered = f"{mode} answers" + (f" (controller {address})" if address else "")
    ours = sum(1 for advertiser in heard if advertiser.microcurrent)
    if not heard:
        return Check(
            "radio",
            Status.WARN,
            f"{answered} but heard no advertiser in {scan_s:g} s",
            "bring any Bluetooth device near (a phone advertises while its Bluetooth settings "
            "are open) and try again; check the antenna, and `mcgw scan --all --timeout 10`",
        )
    return Check(
        "radio",
        Status.OK,
        f"{answered}; heard {len(heard)} advertiser(s) in {scan_s:g} s, "
        f"{ours} microcurrent device(s)",
    )
