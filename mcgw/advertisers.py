"""``mcgw scan --all``: every advertiser the radio hears, as a table or JSON.

The scan itself is ``ble.advertisers.listen_to_all`` on the backends the BLE mode opened; this
module only runs it on a runtime's radio and prints what it heard. It deliberately does not
keep what it heard: nothing here touches the hub's database.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.table import Table

from ble.advertisers import company_name, describe_uuid, listen_to_all

if TYPE_CHECKING:
    from rich.console import Console

    from gateway.runtime import Runtime

__all__ = ["listen", "show"]


async def listen(runtime: Runtime, timeout_s: float) -> list[dict[str, Any]]:
    """Every advertiser heard on ``runtime``'s open radio, JSON-ready, strongest first."""
    assert runtime.ble is not None, "open_ble() first"
    heard = await listen_to_all(timeout_s, backend=runtime.ble.backends.scanner)
    return [advertiser.as_dict() for advertiser in heard]


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
