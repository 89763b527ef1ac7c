"""The hub's web page in a real browser: weight, time to first render and to live data, and the
main thread's time while a session streams at 50 Hz.

A real ``mcgw serve --ble sim:2`` process and Debian's Chromium (headless, through Playwright),
both on this machine, so the times are this machine's and say nothing of a phone's radio:

* weight: the bytes on the wire (compressed bodies and headers, Chromium's own count) of the
  first screen, everything it loads including its API calls, for a browser that is not paired
  yet (the Pair screen) and for one that is (Devices); and the same files uncompressed;
* first render, ``--repeats`` fresh loads of Devices: navigation -> first contentful paint, and
  -> the screen drawn with its devices; the floor is the same browser's first paint of a bare
  JSON page from the same hub (``/api/v1/health``): what any page costs here;
* live data: loading the Live screen of a running session -> the first current reading drawn;
* main thread: Chromium's ``TaskDuration`` (DevTools Performance metrics, seconds of main-thread
  work) per second of wall time over ``--seconds`` while the Live screen shows a session
  streaming 50 frames a second, with the frames per second the page received; the floor is the
  same page origin running a bare WebSocket client that receives and parses the same stream
  and draws nothing.

Prints one JSON object (bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
from harness import ROOT
from harness.processes import free_port, stop_process
from harness.report import run_main
from harness.stats import summarize

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}
READY_TIMEOUT_S = 60.0

FIRST_READING = """() => {
  const out = document.querySelectorAll("main output.big")[1];
  return out && out.textContent !== "" ? performance.now() : false;
}"""
DEVICES_DRAWN = """() => document.querySelector("main li.device") ? performance.now() : false"""
FCP = """() => new Promise((resolve) => {
  const seen = performance.getEntriesByName("first-contentful-paint")[0];
  if (seen) return resolve(seen.startTime);
  new PerformanceObserver((list) => resolve(list.getEntries()[0].startTime))
    .observe({type: "paint", buffered: true});
})"""
BARE_CLIENT = """(address) => new Promise((resolve) => {
  window.frames_seen = 0;
  const ws = new WebSocket(location.origin.replace("http", "ws") + "/api/v1/ws", ["mcgw.v1"]);
  ws.onmessage = (event) => {
    const m = JSON.parse(event.data);
    if (m.type === "hello") ws.send(JSON.stringify({type: "subscribe", id: "s", device: address}));
    if (m.type === "ping") ws.send('{"type": "pong"}');
    if (m.type === "telemetry") window.frames_seen += 1;
    if (m.type === "ack") resolve(true);
  };
})"""


class Hub:
    """A `mcgw serve --ble sim:2 --bootstrap` process on a free port and a fresh database."""

    def __init__(self, tmp: str) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCGW_")}
        env.update(
            MCGW_DB__URL=f"sqlite:///{tmp}/hub.db",
            MCGW_DB__JOURNAL_PATH=f"{tmp}/hub.journal",
            XDG_DATA_HOME=f"{tmp}/xdg",
            MCGW_MDNS="false",
            MCGW_TOKEN_PEPPER="bench-pepper",
            MCGW_LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mcgw",
                "serve",
                "--ble",
                "sim:2",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--bootstrap",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("admin token:"):
                self.token = line.split()[-1]
                break
        self.api = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=20
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                devices = self.api.get("/api/v1/devices").json()
                if isinstance(devices, list) and sum(d["state"] == "bonded" for d in devices) == 2:
                    self.devices = sorted(d["address"] for d in devices)
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the hub did not get ready")

    def code(self) -> str:
        made = self.api.post("/api/v1/pairing-codes", json={"name": "bench", "is_admin": True})
        made.raise_for_status()
        code: str = made.json()["code"]
        return code

    def close(self) -> None:
        self.api.close()
        stop_process(self.process)


def paired_context(browser: Any, hub: Hub) -> Any:
    """A browser context holding the page's cookie (paired, notice accepted)."""
    context = browser.new_context(viewport=PHONE, base_url=hub.base_url)
    page = context.new_page()
    page.goto(f"/#/pair/{hub.code()}")
    page.wait_for_url("**/#/consent")
    page.get_by_label("I have read the notice").check()
    page.get_by_role("button", name="I accept").click()
    page.locator("main li.device").first.wait_for()
    page.close()
    return context


def transfer(context: Any, path: str, ready: str) -> dict[str, int]:
    """Bytes on the wire (and uncompressed) of everything a fresh load of ``path`` fetches
    until ``ready`` holds."""
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    sizes: dict[str, dict[str, int]] = {}
    cdp.on("Network.responseReceived", lambda e: sizes.setdefault(e["requestId"], {}))
    cdp.on(
        "Network.loadingFinished",
        lambda e: sizes.setdefault(e["requestId"], {}).update(wire=int(e["encodedDataLength"])),
    )
    cdp.on(
        "Network.dataReceived",
        lambda e: sizes.setdefault(e["requestId"], {}).update(
            body=sizes[e["requestId"]].get("body", 0) + int(e["dataLength"])
        ),
    )
    page.goto(path)
    page.wait_for_function(ready, polling="raf")
    page.wait_for_load_state("networkidle")
    page.close()
    return {
        "requests": len(sizes),
        "wire_bytes": sum(s.get("wire", 0) for s in sizes.values()),
        "uncompressed_body_bytes": sum(s.get("body", 0) for s in sizes.values()),
    }


def first_render(context: Any, hub: Hub) -> tuple[float, float, float]:
    """(floor first paint, page first paint, Devices drawn), ms from navigation start."""
    page = context.new_page()
    page.goto("/api/v1/health")
    floor = float(page.evaluate(FCP))
    page.goto("about:blank")
    page.goto("/#/devices")
    drawn = float(page.wait_for_function(DEVICES_DRAWN, polling="raf").json_value())
    fcp = float(page.evaluate(FCP))
    page.close()
    return floor, fcp, drawn


def first_reading(context: Any, session_id: str) -> float:
    page = context.new_page()
    page.goto(f"/#/live/{session_id}")
    at = float(page.wait_for_function(FIRST_READING, polling="raf").json_value())
    page.close()
    return at


def task_seconds(cdp: Any) -> float:
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return float(next(m["value"] for m in metrics if m["name"] == "TaskDuration"))


def main_thread(context: Any, path: str, seconds: float, bare: str | None) -> tuple[float, float]:
    """(main-thread ms per s, telemetry frames per s) over ``seconds`` on ``path``; with
    ``bare`` (a device address) a bare WebSocket client runs there instead of the page."""
    page = context.new_page()
    frames = [0]

    def count(ws: Any) -> None:
        ws.on(
            "framereceived",
            lambda payload: frames.__setitem__(0, frames[0] + ('"telemetry"' in str(payload))),
        )

    page.on("websocket", count)
    page.goto(path)
    if bare:
        page.evaluate(BARE_CLIENT, bare)
    else:
        try:
            page.wait_for_function(FIRST_READING, polling="raf", timeout=20_000)
        except Exception:
            print(
                f"the Live screen drew no reading: {page.locator('main').inner_text()}",
                file=sys.stderr,
            )
            raise
    page.wait_for_timeout(1000)  # past the first render and the replay
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
    start, frames_start, wall = task_seconds(cdp), frames[0], time.perf_counter()
    page.wait_for_timeout(seconds * 1000)
    busy, wall = task_seconds(cdp) - start, time.perf_counter() - wall
    received = frames[0] - frames_start
    page.close()
    return busy * 1000 / wall, received / wall


def measure(repeats: int, seconds: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        return {"not_measured": f"no Chromium at {CHROMIUM} (apt-get install chromium)"}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        hub = Hub(tmp)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            fresh = browser.new_context(viewport=PHONE, base_url=hub.base_url)
            pair_screen = transfer(fresh, "/#/pair", "() => !!document.querySelector('main form')")
            fresh.close()
            context = paired_context(browser, hub)
            devices_screen = transfer(context, "/#/devices", DEVICES_DRAWN)
            renders = [first_render(context, hub) for _ in range(repeats)]
            address = hub.devices[0]
            hub.api.post(f"/api/v1/devices/{address}/claim").raise_for_status()
            notice = hub.api.get("/api/v1/me").json()["consent"]["current_version"]
            hub.api.post("/api/v1/me/consent", json={"version": notice, "accept": True})
            started = hub.api.post(
                "/api/v1/sessions",
                json={"device": address, "program": "deep-sculpt", "level": 3},
                headers={"Idempotency-Key": f"bench-{time.time()}"},
            )
            started.raise_for_status()
            session = started.json()["id"]
            readings = [first_reading(context, session) for _ in range(repeats)]
            live = [
                main_thread(context, f"/#/live/{session}", seconds, None) for _ in range(repeats)
            ]
            floor = [
                main_thread(context, "/api/v1/health", seconds, address) for _ in range(repeats)
            ]
            hub.api.post(f"/api/v1/sessions/{session}/stop")
            context.close()
        finally:
            browser.close()
            hub.close()
    return {
        "chromium": browser.version,
        "weight": {"pair_screen": pair_screen, "devices_screen": devices_screen},
        "render": {
            "floor_first_paint_ms": summarize(r[0] for r in renders),
            "first_contentful_paint_ms": summarize(r[1] for r in renders),
            "devices_drawn_ms": summarize(r[2] for r in renders),
        },
        "live": {"first_reading_ms": summarize(readings)},
        "main_thread": {
            "live_ms_per_s": summarize(m[0] for m in live),
            "live_frames_per_s": summarize(m[1] for m in live),
            "floor_ms_per_s": summarize(m[0] for m in floor),
            "floor_frames_per_s": summarize(m[1] for m in floor),
        },
    }


def lines(result: dict[str, Any]) -> list[tuple[str, Any, str] | str]:
    if "not_measured" in result:
        return [f"not measured: {result['not_measured']}"]
    weight = result["weight"]
    return [
        f"first screen (Pair): {weight['pair_screen']['wire_bytes']} B on the wire "
        f"({weight['pair_screen']['uncompressed_body_bytes']} B uncompressed), "
        f"{weight['pair_screen']['requests']} requests",
        f"first screen (Devices, paired): {weight['devices_screen']['wire_bytes']} B on the wire",
        ("floor: first paint of a bare page", result["render"]["floor_first_paint_ms"], "ms"),
        ("first contentful paint", result["render"]["first_contentful_paint_ms"], "ms"),
        ("Devices drawn", result["render"]["devices_drawn_ms"], "ms"),
        ("Live: first reading drawn", result["live"]["first_reading_ms"], "ms"),
        ("main thread, Live at 50 Hz", result["main_thread"]["live_ms_per_s"], "ms/s"),
        ("frames received, Live", result["main_thread"]["live_frames_per_s"], "/s"),
        ("floor: main thread, bare client", result["main_thread"]["floor_ms_per_s"], "ms/s"),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    run_main(parser, measure, lines)
