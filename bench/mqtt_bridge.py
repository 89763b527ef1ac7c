"""The MQTT bridge: device state change -> MQTT message, next to a bare publish; gateway CPU.

Runs a Mosquitto of its own on a free port (``/usr/sbin/mosquitto``, persistence off) and a
subscriber in its own process that writes every message it gets with its arrival time
(``time.monotonic_ns``, the same clock across processes on Linux) to a file.

* **latency**: a gateway runtime in this process (``sim:1``, the bridge on that broker) runs a
  session and pauses and resumes it ``--transitions`` times per repeat. Each session state
  change is stamped where the gateway publishes it on its event bus; its latency is the arrival
  of the first retained device state showing the new state. The floor, interleaved with the
  transitions in the same run: this process publishes a payload of the same size, QoS and
  retain flag to the same broker with a bare aiomqtt client, stamped just before the publish.
* **cpu**: ``mcgw serve --ble hci:tcp-client:...`` as a real process with its 7 devices in a sim
  helper process (devices streaming at 50 Hz, a session running on each), CPU % of a core over
  ``--cpu-s`` seconds (three windows): MQTT off (the floor), on at the default 1 Hz telemetry,
  on at 10 Hz.

Prints one JSON object (bench/run.py keeps it); tests/test_bench_smoke.py checks the join.

    python bench/mqtt_bridge.py --transitions 200 --repeats 3 --cpu-s 9
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.hub import start_sim
from harness.processes import CpuMeter, free_port, helper_log, run_timed, stop_process
from harness.report import run_main
from harness.sessions import claim_all, http_client, start_all
from harness.stats import latency_stats, summarize, summarize_quantiles

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PREFIX = "bench"
HUB_ID = "bench-mqtt"
GAP_S = 0.02
"""Between a transition and the next floor publish, and again before the next transition."""
DEVICES = 7
PEPPER = "bench-pepper"
SUBSCRIBER = """\
import asyncio, sys, time
import aiomqtt
async def main(port, out, topics):
    with open(out, "w", buffering=1) as f:
        async with aiomqtt.Client("127.0.0.1", int(port), identifier="bench-sub") as c:
            for t in topics:
                await c.subscribe(t, qos=1)
            print("ready", flush=True)
            async for m in c.messages:
                ns = time.monotonic_ns()
                f.write(f"{ns}\\t{m.topic.value}\\t{bytes(m.payload).decode()}\\n")
asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
"""


@contextlib.contextmanager
def broker(tmp: Path) -> Iterator[int]:
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=helper_log(), stderr=helper_log()
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not start")
            time.sleep(0.05)
        yield port
    finally:
        stop_process(process)


def join(
    changes: list[tuple[int, str]], floor_sent: list[int], lines: list[str], state_topic: str
) -> tuple[list[float], list[float]]:
    """Latencies (ms) of each state change (to the first state message showing it) and of
    each floor publish (to its arrival). ``lines`` are the subscriber's file."""
    import orjson

    states: list[tuple[int, str | None]] = []
    floor_got: dict[int, int] = {}
    for line in lines:
        ns_text, topic, payload = line.rstrip("\n").split("\t", 2)
        if topic == state_topic:
            session = orjson.loads(payload).get("session") or {}
            states.append((int(ns_text), session.get("state")))
        elif topic.endswith("/floor") and payload:
            floor_got[int(payload.split(" ", 1)[0])] = int(ns_text)
    change_ms = []
    index = 0
    for stamped, state in changes:
        while index < len(states) and (states[index][0] < stamped or states[index][1] != state):
            index += 1
        if index == len(states):
            break
        change_ms.append((states[index][0] - stamped) / 1e6)
    floor_ms = [(floor_got[sent] - sent) / 1e6 for sent in floor_sent if sent in floor_got]
    return change_ms, floor_ms


async def latency(transitions: int, repeats: int) -> dict[str, Any]:
    import aiomqtt

    from gateway.config import Settings
    from gateway.events import Event, SessionStateChanged
    from gateway.runtime import Runtime

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mcgw-mqtt-") as tmp, broker(Path(tmp)) as port:
        out = Path(tmp) / "received.tsv"
        state_topic = f"{PREFIX}/{HUB_ID}/device/c04d43000000/state"
        subscriber = subprocess.Popen(  # noqa: ASYNC220 - before anything is measured
            [sys.executable, "-c", SUBSCRIBER, str(port), str(out), state_topic, f"{PREFIX}/floor"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert subscriber.stdout is not None
        assert subscriber.stdout.readline().strip() == "ready"
        settings = Settings(
            hub_id=HUB_ID,
            ble={"mode": "sim:1"},
            mdns=False,
            log_level="WARNING",
            mqtt={"url": f"mqtt://127.0.0.1:{port}", "topic_prefix": PREFIX, "ha_discovery": False},
        )
        changes: list[tuple[int, str]] = []

        def stamp(event: Event) -> None:
            if isinstance(event, SessionStateChanged):
                changes.append((time.monotonic_ns(), event.state.value))

        try:
            async with Runtime(settings, storage=False) as runtime:
                await runtime.wait_connected()
                assert runtime.mqtt is not None
                while not runtime.mqtt.status.up:  # noqa: ASYNC110 - a status, not an event
                    await asyncio.sleep(0.05)
                address = runtime.devices.addresses()[0]
                session = await runtime.sessions.start(
                    owner="1",
                    address=address,
                    program=runtime.programs["quick-lift"],
                    level=1,
                    consented=True,
                )
                runtime.bus.add_listener(stamp)
                size = len(runtime.mqtt.outbox.retained[state_topic])
                nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]  # as the bridge's client
                async with aiomqtt.Client(
                    "127.0.0.1", port, identifier="bench-floor", socket_options=nodelay
                ) as bare:
                    for _ in range(repeats):
                        changes.clear()
                        floor_sent: list[int] = []
                        began = len(out.read_text().splitlines()) if out.exists() else 0
                        for i in range(transitions):
                            if i % 2 == 0:
                                await runtime.sessions.pause(session.id, actor="1")
                            else:
                                await runtime.sessions.resume(session.id, actor="1")
                            await asyncio.sleep(GAP_S)
                            sent = time.monotonic_ns()
                            body = f"{sent} ".encode().ljust(size, b"x")
                            await bare.publish(f"{PREFIX}/floor", body, qos=1, retain=True)
                            floor_sent.append(sent)
                            await asyncio.sleep(GAP_S)
                        await asyncio.sleep(0.5)  # the last messages arrive
                        lines = out.read_text().splitlines()[began:]
                        change_ms, floor_ms = join(list(changes), floor_sent, lines, state_topic)
                        runs.append(
                            {
                                "state_change_ms": latency_stats(change_ms),
                                "bare_publish_ms": latency_stats(floor_ms),
                                "matched": len(change_ms),
                                "changes": len(changes),
                            }
                        )
                    await bare.publish(f"{PREFIX}/floor", b"", qos=1, retain=True)
                await runtime.sessions.stop(session.id, actor="1")
                dropped = runtime.mqtt.status.dropped
        finally:
            subscriber.terminate()
            subscriber.wait(timeout=10)
    return {
        "state_change_ms": summarize_quantiles(runs, "state_change_ms"),
        "bare_publish_ms": summarize_quantiles(runs, "bare_publish_ms"),
        "matched": [r["matched"] for r in runs],
        "changes": [r["changes"] for r in runs],
        "state_message_bytes": size,
        "dropped": dropped,
    }


async def cpu_launch(cpu_s: float, mqtt_url: str | None, telemetry_hz: int) -> dict[str, Any]:
    """CPU % of a core of `mcgw serve` with 7 devices in session, MQTT as given, over three
    consecutive windows of ``cpu_s / 3``."""
    from harness import ROOT

    sim = await start_sim(DEVICES, record=False)
    async with sim:
        with tempfile.TemporaryDirectory() as tmp:
            db_path = Path(tmp) / "mcgw.db"
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("MCGW_")}
            env.update(
                MCGW_DB__URL=f"sqlite:///{db_path}",
                MCGW_MDNS="false",
                MCGW_BLE__AUTO_CONNECT="false",
                MCGW_HUB_ID=HUB_ID,
                MCGW_TOKEN_PEPPER=PEPPER,
                MCGW_LOG_LEVEL="WARNING",
                MCGW_MQTT__TOPIC_PREFIX=PREFIX,
                MCGW_MQTT__TELEMETRY_HZ=str(telemetry_hz),
                PYTHONPATH=str(ROOT),
            )
            if mqtt_url:
                env["MCGW_MQTT__URL"] = mqtt_url
            moniker = f"hci:tcp-client:127.0.0.1:{sim.ready['port']}"
            serve = ["serve", "--ble", moniker, "--host", "127.0.0.1", "--port", str(port)]
            process = subprocess.Popen(  # noqa: ASYNC220 - before anything is measured
                [sys.executable, "-c", "from mcgw.cli import main; main()", *serve, "--bootstrap"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=helper_log(),
                text=True,
            )
            try:
                assert process.stdout is not None
                token = ""
                for line in process.stdout:
                    if line.startswith("admin token:"):
                        token = line.split()[-1]
                        break
                async with http_client(f"http://127.0.0.1:{port}", token) as http:
                    await wait_health(http)
                    consent = {"version": "2026-11", "accept": True}
                    (await http.post("/api/v1/me/consent", json=consent)).raise_for_status()
                    scan = await http.post("/api/v1/devices/scan", json={"timeout_s": 1.0})
                    scan.raise_for_status()
                    addresses = [d["address"] for d in scan.json()]
                    await claim_all(http, addresses)
                    await wait_bonded(http, len(addresses))
                    await start_all(http, addresses)
                    await asyncio.sleep(1.0)
                    meter = CpuMeter(process.pid)
                    windows = []
                    for _ in range(3):
                        meter.start()
                        await asyncio.sleep(cpu_s / 3)
                        windows.append(meter.stop())
                    return summarize(windows, 2)
            finally:
                stop_process(process)


async def wait_health(http: Any) -> None:
    async with asyncio.timeout(60):
        while True:
            with contextlib.suppress(Exception):
                if (await http.get("/api/v1/health")).status_code == 200:
                    return
            await asyncio.sleep(0.05)


async def wait_bonded(http: Any, count: int) -> None:
    async with asyncio.timeout(60):
        while True:
            devices = (await http.get("/api/v1/devices")).json()
            if sum(d["state"] == "bonded" for d in devices) >= count:
                return
            await asyncio.sleep(0.1)


async def measure_async(transitions: int, repeats: int, cpu_s: float) -> dict[str, Any]:
    if not os.path.exists(MOSQUITTO):  # noqa: ASYNC240 - once, before anything runs
        return {"not_measured": "mosquitto is not installed"}
    result: dict[str, Any] = {
        "bench": "mqtt_bridge",
        "config": {"transitions": transitions, "repeats": repeats, "cpu_s": cpu_s},
        "latency": await latency(transitions, repeats),
    }
    with tempfile.TemporaryDirectory(prefix="mcgw-mqtt-cpu-") as tmp, broker(Path(tmp)) as port:
        url = f"mqtt://127.0.0.1:{port}"
        result["cpu"] = {
            "mqtt_off_pct": await cpu_launch(cpu_s, None, 1),
            "mqtt_on_1hz_pct": await cpu_launch(cpu_s, url, 1),
            "mqtt_on_10hz_pct": await cpu_launch(cpu_s, url, 10),
            "devices": DEVICES,
        }
    return result


def measure(transitions: int, repeats: int, cpu_s: float) -> dict[str, Any]:
    return run_timed(measure_async(transitions, repeats, cpu_s))


def lines(result: dict[str, Any]) -> list[tuple[str, Any, str] | str]:
    if "not_measured" in result:
        return [f"not measured: {result['not_measured']}"]
    lat = result["latency"]
    cpu = result["cpu"]
    return [
        ("state change -> MQTT p99", lat["state_change_ms"]["p99"], "ms"),
        ("bare publish p99 (floor)", lat["bare_publish_ms"]["p99"], "ms"),
        ("gateway CPU, 7 devices, MQTT off", cpu["mqtt_off_pct"], "%"),
        ("gateway CPU, 7 devices, MQTT on, 1 Hz", cpu["mqtt_on_1hz_pct"], "%"),
        ("gateway CPU, 7 devices, MQTT on, 10 Hz", cpu["mqtt_on_10hz_pct"], "%"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transitions", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-s", type=float, default=9.0)
    run_main(parser, measure, lines, argv)


if __name__ == "__main__":
    main()
