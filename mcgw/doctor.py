"""``mcgw doctor``: run ``gateway.doctor.examine`` and print one line per check.

Each line is ``<status> <check>: <what was seen>``, and for a ``warn`` or ``fail`` the fix after
``fix:`` on the same line; ``--json`` prints ``{"ok": ..., "ble": ..., "checks": [...]}``. The
exit code is 1 when any check failed (0 with warnings only), so scripts can gate on it.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from gateway.doctor import Status, examine

if TYPE_CHECKING:
    from rich.console import Console

    from gateway.config import Settings

__all__ = ["run"]

_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "dim"}


def run(settings: Settings, *, scan_s: float, as_json: bool, out: Console) -> None:
    """Examine the host for ``settings``, print the findings, exit 1 if any check failed."""
    checks = asyncio.run(examine(settings, scan_s=scan_s))
    failed = any(check.status is Status.FAIL for check in checks)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "ok": not failed,
                    "ble": str(settings.ble.mode),
                    "checks": [check.as_dict() for check in checks],
                }
            )
        )
    else:
        width = max(len(check.name) for check in checks)
        for check in checks:
            style = _STYLE[check.status]
            line = (
                f"[{style}]{check.status.value:<4}[/] {check.name:<{width}}  {escape(check.detail)}"
            )
            if check.fix:
                line += f"  [bold]fix:[/] {escape(check.fix)}"
            out.print(line, soft_wrap=True, highlight=False)
    if failed:
        raise typer.Exit(code=1)
