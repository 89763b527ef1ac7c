"""A private D-Bus bus for the BlueZ-shaped service, and what a host with BlueZ has around it.

``PrivateBus.start(tmp_path)`` runs ``dbus-daemon`` on a socket in ``tmp_path`` with a policy
that lets anyone own and call anything (the stock system bus policy would need root), and
reads its address. ``env()`` gives what a process needs to take it for the system bus:
``DBUS_SYSTEM_BUS_ADDRESS``, and ``PATH`` with a ``bluetoothctl`` that answers ``--version``
with ``bluetoothctl: 5.66``, because bleak's BlueZ backend asks that program for BlueZ's
version before its first connect (bleak/backends/bluezdbus/version.py) and nothing else of
BlueZ is installed here. Tests that need ``dbus-daemon`` call ``unavailable`` without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import unavailable

BLUEZ_VERSION = "5.66"
_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


@dataclass
class PrivateBus:
    process: subprocess.Popen[str]
    address: str
    bin_dir: Path

    @classmethod
    def start(cls, tmp_path: Path) -> PrivateBus:
        daemon = shutil.which("dbus-daemon")
        if daemon is None:
            unavailable("dbus-daemon is not installed (apt install dbus)")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        tool = bin_dir / "bluetoothctl"
        tool.write_text(f"#!/bin/sh\necho 'bluetoothctl: {BLUEZ_VERSION}'\n")
        tool.chmod(0o755)
        config = tmp_path / "bus.conf"
        config.write_text(_CONFIG.format(socket=tmp_path / "system_bus_socket"))
        process = subprocess.Popen(
            [daemon, f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        address = process.stdout.readline().strip()
        if not address:
            process.kill()
            raise AssertionError(f"dbus-daemon did not start: {process.communicate()[1]}")
        return cls(process, address, bin_dir)

    def env(self) -> dict[str, str]:
        return {
            "DBUS_SYSTEM_BUS_ADDRESS": self.address,
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
