"""The entry point of every helper process the benchmarks start (never run by hand).

``python bench/helper.py KIND CONFIG [--loop L]``: ``hub`` (the gateway under uvicorn), ``sim``
(simulated devices over HCI over TCP), ``phones`` (many WebSocket/MQTT clients), ``bare`` (the
bare Starlette broadcast, the fan-out floor) or ``mqtt-pub`` (a raw MQTT publisher). CONFIG is a
JSON object; its ``cpus`` key (a list of CPU numbers) pins the helper to those cores before it
starts anything (a Pi-class run: ``[0]``). The helper speaks JSON lines
(bench/harness/processes.py) until its stdin closes. It only dispatches: what each helper does
lives in bench/harness/.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Coroutine
from typing import Any

from harness.hub import hub_main, sim_main
from harness.phones import phones_main
from harness.processes import run_loop
from harness.servers import bare_main, mqtt_publisher_main

MAINS: dict[str, Callable[[dict[str, Any]], Coroutine[Any, Any, None]]] = {
    "hub": hub_main,
    "sim": sim_main,
    "phones": phones_main,
    "bare": lambda _config: bare_main(),
    "mqtt-pub": lambda _config: mqtt_publisher_main(),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(MAINS))
    parser.add_argument("config", nargs="?", default="{}")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    if config.get("cpus"):
        os.sched_setaffinity(0, set(config["cpus"]))  # before any thread: they all inherit it
    run_loop(MAINS[args.kind](config), args.loop)


if __name__ == "__main__":
    main()
