"""``mcgw scan --all``: every advertiser the radio hears, as a table or JSON.

The scan itself is ``ble.advertisers.listen_to_all`` on the backends the BLE mode opened; this
module only runs it on a runtime's radios and prints what it heard. It deliberately does not
keep what it heard: nothing here touches the hub's database.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from rich.table import Table

from ble.advertisers import Advertiser, company_name, describe_uuid, listen_to_all

if TYPE_CHECKING:
    from rich.console import Console

    from gateway.runtime import Runtime

__all__ = ["listen", "show"]


async def listen(runtime: Runtime, timeout_s: float) -> list[dict[str, Any]]:
    """Every advertiser heard on ``runtime``'s radios that are up (all at once, each
    advertiser at the signal of the radio that heard it loudest), JSON-ready, strongest first.
    A radio that could not be opened is left out: it has no backend of its own yet, and
    bleak's platform default in its place would be another radio (BlueZ), or none."""
    assert runtime.stacks, "open_ble() first"
    up = [
        stack
        for radio, stack in zip(runtime.devices.radios, runtime.stacks, strict=True)
        if radio.up
    ]
    lists = await asyncio.gather(
        *(listen_to_all(timeout_s, backend=stack.backends.scanner) for stack in up)
    )
    loudest: dict[str, Advertiser] = {}
    for heard in lists:
        for advertiser in heard:
            known = loudest.get(advertiser.address)
            if known is None or advertiser.rssi > known.rssi:
                loudest[advertiser.address] = advertiser
    ranked = sorted(loudest.values(), key=lambda a: (-a.rssi, a.address))
    return [advertiser.as_dict() for advertiser in ranked]


def show(rows: list[dict[str, Any]], *, as_json: bool, out: Console, console: Console) -> None:
    """``rows`` (from :func:`listen`) as JSON on ``out``, or a table there and a count on
    ``console``."""
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("address", "name", "rssi", "services", "manufacturer")
    for row in rows:
        table.add_row(
            row["address"],
            row["name"] or "-",
            f"{row['rssi']} dBm",
            ", ".join(describe_uuid(u) for u in row["service_uuids"]) or "-",
            ", ".join(company_name(c) for c in row["manufacturer_ids"]) or "-",
        )
    out.print(table)
    microcurrent = sum(1 for row in rows if row["microcurrent"])
    console.print(f"{len(rows)} advertiser(s) heard, {microcurrent} microcurrent device(s)")
