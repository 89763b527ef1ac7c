"""The ``mcgw`` command line: serve, sim, scan, config.

Each command imports only what it needs (bumble and the web stack cost start-up time on a Pi).
Errors print one line saying what went wrong and what to do, and exit non-zero; they never dump
a traceback for a mistake the user can fix.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from gateway.config import DEFAULT_PORT, Settings

app = typer.Typer(
    name="mcgw",
    help="mcgw: the microcurrent BLE gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


def fail(message: str, hint: str = "") -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    if hint:
        console.print(f"[yellow]hint:[/] {hint}")
    raise typer.Exit(code=2)


def load(**overrides: object) -> Settings:
    """Settings from the environment and config file, with command-line overrides applied."""
    try:
        base = Settings()
        if not overrides:
            return base
        data = base.model_dump()
        for dotted, value in overrides.items():
            if value is None:
                continue
            target = data
            *parents, leaf = dotted.split(".")
            for parent in parents:
                target = target[parent]
            target[leaf] = value
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        fail(
            f"invalid settings: {problems}",
            "see `mcgw config show` and the settings table in README.md",
        )


def setup_logging(settings: Settings) -> None:
    from gateway.logs import configure_logging

    configure_logging(level=settings.log_level, json_format=settings.log_json)


@app.command()
def sim(
    devices: Annotated[int, typer.Option(min=1, max=50, help="Simulated devices to host.")] = 3,
    hci_port: Annotated[int, typer.Option(help="HCI-over-TCP port for bumble hosts.")] = 9100,
    control_port: Annotated[int, typer.Option(help="Local scenario control port.")] = 9101,
    host: Annotated[str, typer.Option(help="Address to bind both ports to.")] = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="Seed for the devices' physics.")] = 1,
) -> None:
    """Run a virtual radio with simulated devices, reachable over HCI-over-TCP."""
    from ble.sim.process import run_sim_process

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(
            run_sim_process(
                devices=devices,
                host=host,
                hci_port=hci_port,
                control_port=control_port,
                seed=seed,
                announce=lambda line: out.print(line, highlight=False),
            )
        )
    except OSError as exc:
        fail(f"cannot open the sim ports: {exc}", "pick free ports with --hci-port/--control-port")
    except KeyboardInterrupt:
        pass


@app.command()
def scan(
    ble: Annotated[str | None, typer.Option(help="auto | bluez | hci:<transport>.")] = None,
    timeout: Annotated[float, typer.Option(min=0.5, max=60, help="Seconds to scan.")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Scan for microcurrent devices and list them."""
    from gateway.runtime import BluetoothUnavailable, Runtime

    settings = load(**{"ble.mode": ble})

    async def go() -> list[dict[str, object]]:
        runtime = Runtime(settings)
        await runtime._open_ble()
        try:
            with console.status(f"scanning for {timeout:g} s ..."):
                found = await runtime.devices.scan(timeout_s=timeout)
        finally:
            await runtime.stop()
        return [d.__dict__ if hasattr(d, "__dict__") else _as_dict(d) for d in found]

    try:
        found = asyncio.run(go())
    except BluetoothUnavailable as exc:
        fail(str(exc))
    if as_json:
        out.print_json(json.dumps(found))
        return
    table = Table("address", "name", "rssi", "battery", "state")
    for item in found:
        table.add_row(
            *(str(item.get(k, "")) for k in ("address", "name", "rssi", "battery_pct", "state"))
        )
    out.print(table)
    console.print(f"{len(found)} device(s) found")


def _as_dict(obj: object) -> dict[str, object]:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    return {"value": str(obj)}


config_app = typer.Typer(help="Inspect settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective settings (environment + config file), secrets masked."""
    settings = load()
    data = json.loads(settings.model_dump_json())
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table("setting", "value")

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict) and value and prefix != "safety.zone_caps_ua":
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            table.add_row(prefix, json.dumps(value))

    walk("", data)
    out.print(table)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["DEFAULT_PORT", "app", "main"]
