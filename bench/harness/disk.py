"""A small disk for the database: a 64 MiB tmpfs (needs root) that a fault can fill.

Used by the soak and the stop-under-faults bench to make the database's filesystem full. Where
it cannot be mounted, ``small_disk`` says so and the disk-full fault is skipped.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path


def small_disk(mount: Path) -> bool:
    """A 64 MiB tmpfs for the database (needs root); False if it cannot be mounted."""
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def release_small_disk(mount: Path) -> None:
    """Unmount the database's tmpfs (the processes using it have ended)."""
    for _ in range(20):
        if subprocess.run(["umount", str(mount)], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.25)
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until its filesystem is full (unbuffered: nothing is left to
    flush, and fail, at close)."""
    chunk = b"\0" * (1 << 20)
    with path.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(chunk)
