"""The BRIEF's targets, judged against one run's results, and what limits a missed one.

``TARGETS`` is a table: each target names the benchmarks it needs, its aim, and a judge that
reads the results into what was measured and a verdict (MET, MISSED, or "not measured: <why>"
when a benchmark it needs did not run). A missed target carries a diagnosis from the
``limits_*`` functions: the figures, profiles, GC pauses and loop lag that explain it. This
module judges; it does not format tables or write the document (bench/document.py does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.report import code, delta, dig, flatten, fmt, median, verdict


@dataclass
class Target:
    name: str
    aim: str
    measured: str
    verdict: str
    """MET, MISSED, or "not measured: <why>"."""
    limits: str = ""


Judged = tuple[str, str, str]
"""What was measured, the verdict, and (for a missed target) what limits it."""


def judged(measured: str, ok: bool | None, limits: Callable[[], str]) -> Judged:
    return measured, verdict(ok), limits() if ok is False else ""


REST_STOP_MS = 3.0
WS_STOP_MS = 1.5


def judge_stop(benches: dict[str, Any], part: str = "stop", budget: float = REST_STOP_MS) -> Judged:
    e2e = benches.get("telemetry_e2e", {})
    stop = median(dig(e2e, part, "output_off_ms", "p99"))
    rtt = median(dig(benches, "floors", "in_process", "write_rtt_ms", "p99"))
    ok = None if stop is None or rtt is None else stop - rtt < budget
    measured = f"{fmt(stop, 'ms')} vs {fmt(rtt, 'ms')} ({delta((stop or 0) - (rtt or 0))})"
    return judged(measured, ok, lambda: limits_stop(e2e))


def judge_ws_stop(benches: dict[str, Any]) -> Judged:
    return judge_stop(benches, "stop_ws", WS_STOP_MS)


def judge_core_stop(benches: dict[str, Any]) -> Judged | None:
    core = benches.get("gateway_core") or {}
    above = dig(core, "stop", "output_off_p99_above_isolated_write_p99_ms")
    if not isinstance(above, int | float):
        return None
    off = median(dig(core, "stop", "request_to_output_off_ms", "p99"))
    iso = median(dig(core, "floor", "isolated_write_round_trip_ms", "p99"))
    return f"{fmt(off, 'ms')} vs {fmt(iso, 'ms')} ({delta(above)})", verdict(above < 5), ""


def judge_telemetry(benches: dict[str, Any]) -> Judged:
    e2e = benches.get("telemetry_e2e", {})
    p99 = median(dig(e2e, "telemetry", "e2e_ms", "p99"))
    floor = median(dig(benches, "floors", "in_process", "notify_latency_ms", "p99"))
    ok = None if p99 is None or floor is None else p99 - floor < 5
    lost = dig(e2e, "telemetry", "lost")
    measured = (
        f"{fmt(p99, 'ms')} vs {fmt(floor, 'ms')} ({delta((p99 or 0) - (floor or 0))}), {lost} lost"
    )
    return judged(measured, ok, lambda: limits_telemetry(e2e))


def judge_scheduler(benches: dict[str, Any]) -> Judged:
    core = benches["gateway_core"]
    return core_summary(core), core_verdict(core), ""


IDLE_RSS_MIB = 80
STREAMING_RSS_MIB = 90
IDLE_CPU_PCT = 1.0
SIM_DEVICE_CPU_PCT = 1.0
FRAME_CPU_RATIO = 1.2
FRAME_P99_RATIO = 1.3


def pinned_note(foot: dict[str, Any], *path: str, unit: str) -> str:
    value = median(dig(foot, "hci_pinned", *path))
    return f"; pinned to one core: {fmt(value, unit)}" if value is not None else ""


def judge_rss(benches: dict[str, Any]) -> Judged:
    foot = benches.get("footprint", {})
    rss = median(dig(foot, "hci", "seven_devices", "rss_mib"))
    ok = None if rss is None else rss < IDLE_RSS_MIB
    measured = fmt(rss, "MiB") + pinned_note(foot, "seven_devices", "rss_mib", unit="MiB")
    return judged(measured, ok, lambda: limits_rss(foot))


def judge_streaming_rss(benches: dict[str, Any]) -> Judged:
    foot = benches.get("footprint", {})
    rss = median(dig(foot, "hci", "streaming", "rss_mib"))
    ok = None if rss is None else rss < STREAMING_RSS_MIB
    measured = fmt(rss, "MiB") + pinned_note(foot, "streaming", "rss_mib", unit="MiB")
    return judged(measured, ok, lambda: limits_streaming_rss(foot))


def judge_idle(benches: dict[str, Any]) -> Judged:
    foot = benches.get("footprint", {})
    cpu = median(dig(foot, "hci", "seven_devices", "idle_cpu_pct"))
    measured = fmt(cpu, "%") + pinned_note(foot, "seven_devices", "idle_cpu_pct", unit="%")
    ok = None if cpu is None else cpu < IDLE_CPU_PCT
    return judged(measured, ok, lambda: limits_idle(foot))


def judge_sim_idle(benches: dict[str, Any]) -> Judged:
    foot = benches.get("footprint", {})
    per = median(dig(foot, "sim7", "idle_cpu_pct_per_device"))
    total = median(dig(foot, "sim7", "idle_cpu_pct"))
    measured = f"{fmt(per, '%')} per device ({fmt(total, '%')} for sim:7, gateway included)"
    ok = None if per is None else per < SIM_DEVICE_CPU_PCT
    return judged(measured, ok, lambda: limits_idle(foot))


def judge_frame_cost(benches: dict[str, Any]) -> Judged:
    systems = dig(benches, "ws_fanout", "systems") or {}
    ours, bare = systems.get("gateway") or {}, systems.get("bare") or {}
    cpu = [median(dig(x, "steps", "0", "server_cpu_pct")) for x in (ours, bare)]
    p99 = [median(dig(x, "steps", "0", "p99_ms")) for x in (ours, bare)]
    at = dig(ours, "steps", "0", "offered_per_s")
    if None in cpu or None in p99 or not cpu[1] or not p99[1]:
        return "-", verdict(None), ""
    cpu_ratio, p99_ratio = cpu[0] / cpu[1], p99[0] / p99[1]  # type: ignore[operator]
    measured = (
        f"at {fmt(at)} frames/s: CPU {fmt(cpu[0], '%')} vs {fmt(cpu[1], '%')} "
        f"({cpu_ratio:.2f}x), p99 {fmt(p99[0], 'ms')} vs {fmt(p99[1], 'ms')} ({p99_ratio:.2f}x)"
    )
    ok = cpu_ratio <= FRAME_CPU_RATIO and p99_ratio <= FRAME_P99_RATIO
    return judged(measured, ok, lambda: limits_frame_cost(benches))


def judge_saturation(benches: dict[str, Any]) -> Judged:
    systems = dig(benches, "ws_fanout", "systems") or {}
    parts, real = [], True
    for name, label in (("gateway", "mcgw"), ("bare", "bare"), ("mosquitto", "Mosquitto")):
        figures = systems.get(name)
        if not figures:
            continue
        ended = figures.get("ended_by") or []
        real = real and all(
            why not in ("the ladder's top was reached without a failure",)
            and not why.startswith("a load generator")
            for why in ended
        )
        parts.append(
            f"{label} {fmt(median(figures.get('max_delivered_per_s')), '/s')} "
            f"(sustained {fmt(median(figures.get('sustained_capacity_per_s')), '/s')}; "
            f"{'; '.join(sorted(set(ended))) or '-'})"
        )
    if not parts:
        return "-", verdict(None), ""
    return judged(", ".join(parts), real, lambda: limits_saturation(benches))


def judge_ready(benches: dict[str, Any]) -> Judged:
    ready = median(dig(benches, "footprint", "sim7", "ready_s"))
    again = median(dig(benches, "footprint", "sim7", "ready_restart_s"))
    measured = fmt(ready, "s") + (f" (restart: {fmt(again, 's')})" if again is not None else "")
    ok = None if ready is None else ready < 2
    return judged(measured, ok, lambda: limits_ready(ready, again))


def limits_ready(ready: float | None, again: float | None) -> str:
    return (
        f"The first start on a new database takes {fmt(ready, 's')}, a restart on the migrated "
        f"database {fmt(again, 's')}. The difference is the migrations: they run in a child "
        "process (a second interpreter importing SQLAlchemy and Alembic), so that Alembic never "
        "stays resident in the hub; a restart reads the schema revision with one SELECT."
    )


def judge_capacity(benches: dict[str, Any]) -> Judged:
    cap = benches.get("capacity", {})
    best = cap.get("capacity", {})
    gateway_only = best.get("sim-process")
    text = ", ".join(f"{k}: {v} devices" for k, v in best.items())
    ok = None if gateway_only is None else gateway_only >= 50
    return judged(text, ok, lambda: limits_capacity(cap))


RESUME_WINDOW_S = 30.0
"""The product's default link resume window: a session whose link is not back by then ends."""


def judge_radios(benches: dict[str, Any]) -> Judged:
    radios = benches.get("radios", {})
    steady, failover = radios.get("steady") or {}, radios.get("failover") or {}
    lost = (steady.get("lost_at_phones"), steady.get("device_frames_lost"))
    devices = dig(radios, "config", "devices")
    back = failover.get("all_running_s")
    moved = failover.get("moved")
    ok = (
        None
        if not steady or not failover
        else lost == (0, 0)
        and steady.get("sessions_running") == devices
        and back is not None
        and back < RESUME_WINDOW_S
        and moved == failover.get("devices")
    )
    text = (
        f"lost {lost[0]} + {lost[1]}, e2e p99 {fmt(median(dig(steady, 'e2e_ms', 'p99')), 'ms')}; "
        f"{failover.get('sessions_running_again')}/{failover.get('devices')} sessions of the "
        f"dropped radio running again after {fmt(back, 's')}"
    )
    return judged(text, ok, lambda: limits_radios(radios))


def limits_radios(radios: dict[str, Any]) -> str:
    steady, failover = radios.get("steady") or {}, radios.get("failover") or {}
    never = {
        device: figures
        for device, figures in (failover.get("per_device") or {}).items()
        if figures.get("running_s") is None
    }
    return (
        f"- steady: lost {steady.get('lost_at_phones')} at phones and "
        f"{steady.get('device_frames_lost')} at the hub, {steady.get('sessions_running')} "
        f"sessions running, gateway CPU {fmt(median(steady.get('hub_cpu_pct')), '%')}; "
        f"{loop_and_gc(steady)}\n"
        f"- failover: ended on {failover.get('ended_on')}; never running again: {never or 'none'}"
    )


def judge_web(benches: dict[str, Any]) -> Judged:
    weight = dig(benches, "webapp", "weight") or {}
    wire = [dig(weight, screen, "wire_bytes") for screen in ("pair_screen", "devices_screen")]
    heaviest = max((w for w in wire if isinstance(w, int | float)), default=None)
    ok = None if heaviest is None else heaviest < 150 * 1024
    return fmt(heaviest / 1024 if heaviest else None, "KiB"), verdict(ok), ""


@dataclass(frozen=True)
class Aim:
    """A target of the BRIEF: what it needs, what it aims at, how it is judged."""

    name: str
    needs: tuple[str, ...]
    aim: str
    judge: Callable[[dict[str, Any]], Judged | None]
    aim_not_measured: str | None = None
    """The aim shown when a benchmark it needs did not run (None: the same aim; "": none)."""
    only_when_measured: bool = False


TELEMETRY_AIM = (
    "device -> phone p99 < 5 ms above the notification floor, 7 x 50 Hz, 20 phones, 2 cores"
)

# fmt: off
TARGETS = (
    Aim("Stop", ("floors", "telemetry_e2e"),
        "REST stop -> output off p99 < 3 ms above a write round trip", judge_stop),
    Aim("Stop, WebSocket", ("floors", "telemetry_e2e"),
        "WebSocket stop -> output off p99 < 1.5 ms above a write round trip", judge_ws_stop),
    Aim("Stop, gateway level", (),
        "SessionManager.stop -> output off p99 < 5 ms above a write round trip (no HTTP)",
        judge_core_stop, only_when_measured=True),
    Aim("Live telemetry", ("floors", "telemetry_e2e"), TELEMETRY_AIM, judge_telemetry,
        "p99 < 5 ms above the notification floor"),
    Aim("Scheduler", ("gateway_core",), "no output gap through radio stalls up to 500 ms",
        judge_scheduler),
    Aim("Footprint: RSS", ("footprint",),
        "< 80 MiB with 7 idle devices (gateway alone, devices in a `mcgw sim` process)", judge_rss,
        ""),
    Aim("Footprint: RSS streaming", ("footprint",),
        "< 90 MiB while 7 sessions stream to 20 phones (gateway alone)", judge_streaming_rss, ""),
    Aim("Footprint: idle CPU", ("footprint",), "< 1 % of a core (gateway alone, 7 devices)",
        judge_idle, ""),
    Aim("Simulator idle cost", ("footprint",),
        "< 1 % of a core per simulated device (`mcgw serve --ble sim:7`, idle)", judge_sim_idle,
        ""),
    Aim("Per frame", ("ws_fanout",),
        "CPU per delivered frame <= 1.2x, p99 <= 1.3x the bare broadcast at 10,000 frames/s",
        judge_frame_cost, ""),
    Aim("Fan-out saturation", ("ws_fanout",),
        "measured to a real saturation (frames lost or p99 > 50 ms), not the ladder's top nor "
        "the load generators", judge_saturation, ""),
    Aim("Footprint: ready", ("footprint",), "< 2 s (mcgw serve --ble sim:7 -> health 200)",
        judge_ready, ""),
    Aim("Web page: first screen", ("webapp",), "< 150 KB on the wire (compressed), all it loads",
        judge_web),
    Aim("Capacity", ("capacity",), "50 devices at 50 Hz, no lost frame, one gateway process",
        judge_capacity, "50 devices at 50 Hz, no lost frame"),
    Aim("Radio failover", ("radios",),
        "3 radios x 7 devices at 50 Hz with no lost frame; a dropped radio's sessions all run "
        "again on other radios within the link resume window (30 s)", judge_radios),
)
# fmt: on


def missing(benches: dict[str, Any], names: tuple[str, ...]) -> str | None:
    """Why a target cannot be judged: the first benchmark it needs that did not run."""
    for name in names:
        reason = dig(benches, name, "not_measured")
        if reason or name not in benches:
            return f"not measured: {reason or f'{name} was not run'}"
    return None


def targets(results: dict[str, Any]) -> list[Target]:
    benches = results.get("benches", {})
    out: list[Target] = []
    for aim in TARGETS:
        why = missing(benches, aim.needs)
        if why is not None:
            shown = aim.aim if aim.aim_not_measured is None else aim.aim_not_measured
            out.append(Target(aim.name, shown, "-", why))
            continue
        result = aim.judge(benches)
        if result is None:
            continue
        measured, verdict_text, limits = result
        out.append(Target(aim.name, aim.aim, measured, verdict_text, limits))
    return out


def core_summary(core: dict[str, Any]) -> str:
    """A line from bench/gateway_core.py's JSON (its known shape, else any gap/lateness key)."""
    gaps = dig(core, "scheduler", "output_gaps")
    if isinstance(gaps, int):
        stalls = dig(core, "scheduler", "stalls") or {}
        runs = max((s.get("runs", 0) for s in stalls.values()), default=0)
        names = "/".join(k.removeprefix("stall_").removesuffix("ms") for k in stalls)
        late = dig(core, "scheduler", "dispatch_lateness_ms") or {}
        return (
            f"{gaps} output gaps (stalls of {names} ms, {runs} runs each, and every unstalled "
            f"session); dispatch lateness p50 {fmt(median(late.get('p50')), 'ms')}, "
            f"p99 {fmt(median(late.get('p99')), 'ms')}"
        )
    parts = []
    for path, value in flatten(core):
        if any(word in path for word in ("gap", "lateness", "stop")) and len(parts) < 4:
            parts.append(f"{path} = {value:g}")
    return "; ".join(parts) or "see the gateway core section"


def core_verdict(core: dict[str, Any]) -> str:
    gaps = dig(core, "scheduler", "output_gaps")
    if isinstance(gaps, int):
        return verdict(gaps == 0)
    for path, value in flatten(core):
        if path.endswith(("max_gap_ms", "gaps", "gap_count", "output_gaps")):
            return verdict(value == 0)
    return "see below"


def limits_stop(e2e: dict[str, Any]) -> str:
    def q(part: str, key: str = "output_off_ms", quantile: str = "p99") -> str:
        return fmt(median(dig(e2e, part, key, quantile)), "ms")

    text = (
        f"Over REST (a raw HTTP/1.1 client) the STOP reaches the device {q('stop', quantile='p50')}"
        f" (p50) / {q('stop')} (p99) after the request is sent, and the answer comes at "
        f"{q('stop', 'http_answer_ms', 'p50')} (p50). Through httpx, as a Python script would "
        f"send it, output is off at {q('stop_httpx', quantile='p50')} / {q('stop_httpx')}: the "
        "difference is the client's own work before the bytes leave. The same stop sent on an "
        f"already authenticated WebSocket turns output off in {q('stop_ws', quantile='p50')} / "
        f"{q('stop_ws')}: the session layer and the radio are the same; what REST adds is "
        "HTTP parsing, the middleware, routing, the dependency tree (bearer check from the "
        "in-memory access policy, no storage) and the response model. A stop waits on no "
        "storage on either path. What both paths share is the hub's event loop: a stop that "
        "arrives while the loop runs other work (the simulated devices, telemetry, the "
        "pulse scheduler's writes) waits for it, and a STOP write waits for a segment write "
        "already in flight on that link (ATT allows one request at a time); while the "
        f"telemetry windows ran, {loop_and_gc(e2e)}."
    )
    profile = e2e.get("stop_profile") or {}
    if isinstance(profile, list):  # results from before the loop's own time was kept
        profile = {"request_path": profile}
    if profile.get("request_path"):
        text += (
            "\n\nThe request path during stops (cProfile of the hub's event-loop thread, "
            "cumulative per stop; calls count coroutine resumptions):\n\n"
            + code(profile["request_path"])
        )
    if profile.get("own_time"):
        text += (
            "\n\nWhat the hub's event loop ran in that window (own time): a stop that arrives "
            "while it runs waits for it, on REST and on the WebSocket alike. With `sim:7` the "
            "simulated devices and both sides of bumble's stack share the hub's thread; "
            "bumble formats every HCI and ATT packet for its debug log even when that log is "
            "off (f-strings in `logger.debug`: `colors.py`, `format_fields`, `__str__`), which "
            "shows as its own lines here:\n\n" + code(profile["own_time"])
        )
    return text


def limits_telemetry(e2e: dict[str, Any]) -> str:
    t = e2e.get("telemetry", {})
    text = (
        f"BLE leg p99 {fmt(median(dig(t, 'ble_leg_ms', 'p99')), 'ms')}, gateway leg p99 "
        f"{fmt(median(dig(t, 'gateway_leg_ms', 'p99')), 'ms')}, hub CPU "
        f"{fmt(median(t.get('hub_cpu_pct')), '%')} of a core; {loop_and_gc(e2e)}."
    )
    if e2e.get("profile"):
        text += "\n\nProfile of the hub under this load (cProfile, own time):\n\n" + code(
            e2e["profile"]
        )
    return text


STACK_FLOOR_STEP = "+ bumble"
"""The step of footprint.py's import ladder where every third-party package of hci mode is in."""
RADIO_PACKAGES = ("bumble", "cryptography", "_cffi_backend")
"""What the hci: and sim: modes need and a BlueZ hub never imports (bumble's SMP crypto)."""


def limits_rss(foot: dict[str, Any]) -> str:
    empty = dig(foot, "hci", "no_devices", "rss_mib")
    seven = dig(foot, "hci", "seven_devices", "rss_mib")
    profile = foot.get("import_profile") or {}
    packages = profile.get("packages") or {}
    imports = profile.get("imports_mib")
    radio = sum(float(packages.get(name, 0.0)) for name in RADIO_PACKAGES)
    text = (
        f"The gateway with no device at all holds {fmt(empty, 'MiB')} ({fmt(seven, 'MiB')} with "
        f"7): the cost is the imported stack, not the devices. Of the process's "
        f"{fmt(profile.get('rss_mib'), 'MiB')}, {fmt(imports, 'MiB')} is what its imports "
        "left resident (booked per package below, measured inside `mcgw serve`); the rest is "
        "the heap the running hub built. The stack this gateway is built on (FastAPI, "
        "pydantic, SQLAlchemy/SQLModel, uvicorn) is most of it. This run's devices sit behind "
        f"an HCI-over-TCP transport, which needs bumble and its SMP crypto ({radio:.1f} MiB of "
        "the table); a Pi on BlueZ never imports them (bleak's BlueZ backend instead)."
    )
    table = profile.get("table")
    if table:
        text += "\n\nResident memory per imported package (self, MiB):\n\n" + code(
            [f"{name:<28} {mib:6.2f} MiB" for name, mib in table]
        )
    via = profile.get("via") or {}
    shown = [f"{name:<14} <- {via[name]}" for name, _ in (table or [])[:8] if name in via]
    if shown:
        text += "\n\nWho first imported each of the largest:\n\n" + code(shown)
    cumulative = foot.get("import_rss_mib")
    if cumulative:
        text += "\n\nA fresh interpreter after importing, cumulatively:\n\n" + code(
            [f"{name:<28} {mib:6.1f} MiB" for name, mib in cumulative.items()]
        )
        floor = cumulative.get(STACK_FLOOR_STEP)
        if isinstance(floor, int | float):
            below = floor >= IDLE_RSS_MIB
            text += (
                f"\n\nThe third-party stack this mode needs (up to `{STACK_FLOOR_STEP}` above), "
                f"imported into a fresh interpreter with no mcgw module, holds {floor:.1f} MiB"
                + (
                    f": the {IDLE_RSS_MIB} MiB target is below the floor of this stack, before "
                    "any of the hub's own code, models or devices."
                    if below
                    else f", {IDLE_RSS_MIB - floor:.1f} MiB under the target."
                )
            )
    return text


def limits_streaming_rss(foot: dict[str, Any]) -> str:
    idle = dig(foot, "hci", "seven_devices", "rss_mib")
    streaming = dig(foot, "hci", "streaming", "rss_mib")
    grown = None if idle is None or streaming is None else streaming - idle
    text = (
        f"Streaming adds {fmt(grown, 'MiB')} to the idle {fmt(idle, 'MiB')}: each device's "
        "replay ring (3,000 frames, each with its sample and its JSON text), the phones' "
        "sockets and queues. The idle figure itself is the imported stack: see Footprint: RSS."
    )
    ring = foot.get("ring") or {}
    if ring.get("bytes_per_frame"):
        text += (
            f" A ring frame holds {ring['bytes_per_frame']} bytes ({ring['json_bytes_per_frame']} "
            f"of them its JSON text; tracemalloc), so 7 full rings of {ring['ring_frames']} "
            f"frames hold {fmt(ring['full_rings_mib'], 'MiB')}: at 50 Hz they fill in a minute, "
            "longer than this benchmark streams, so a hub that has streamed for a minute holds "
            "up to that much more than the figure above."
        )
    return text


def limits_idle(foot: dict[str, Any]) -> str:
    empty = median(dig(foot, "hci", "no_devices", "idle_cpu_pct"))
    seven = median(dig(foot, "hci", "seven_devices", "idle_cpu_pct"))
    return (
        f"With no device the gateway idles at {fmt(empty, '%')}, with 7 connected idle devices "
        f"at {fmt(seven, '%')}. Idle devices stream at `MCGW_BLE__IDLE_TELEMETRY_HZ` (1 Hz) "
        "until a session or a watcher raises them, so what is left is the event loop's own "
        "timers (health, access sync, journal, metrics) and, for sim:N, the simulators' ticks."
    )


def limits_frame_cost(benches: dict[str, Any]) -> str:
    e2e = benches.get("telemetry_e2e", {})
    text = (
        "Per frame the gateway does more than the bare broadcast: it numbers the frame and "
        "keeps it in the replay ring, offers it to each subscriber's bounded queue (a slow phone "
        "only loses its own frames), wakes one pump task per subscriber, asks the access policy "
        "whether that phone may still see it, and sends the bytes serialised once per frame. The "
        "bare broadcast sends the same bytes in one loop with no queue, no task switch and no "
        "check."
    )
    systems = dig(benches, "ws_fanout", "systems") or {}
    profiles = {name: (systems.get(name) or {}).get("profile") for name in ("gateway", "bare")}
    ours, bare = profiles["gateway"], profiles["bare"]
    if ours and bare:
        text += (
            f"\n\nBoth servers profiled at {fmt(ours.get('offered_per_s'))} frames/s (cProfile "
            "of the event-loop thread, which slows every call alike): busy "
            f"{fmt(ours.get('busy_us_per_frame'), 'µs')} per delivered frame for mcgw against "
            f"{fmt(bare.get('busy_us_per_frame'), 'µs')} for the bare broadcast. The lines that "
            "only mcgw has are its per-subscriber queue and pump (`telemetry.py` `_offer`, "
            "`__anext__`, `get_nowait`, the future's `set_result` that wakes the pump: the wake-up "
            "itself runs inside the event loop, partly in C), the per-connection send lock and "
            "the access check "
            "(`live.py` `_pump_frames`, `send_text`); the send itself (Starlette, uvicorn's "
            "`websockets` protocol, the socket) is the same code in both."
        )
        for label, profile in (("mcgw", ours), ("bare broadcast", bare)):
            text += f"\n\n{label}, own time:\n\n" + code(profile.get("top") or [])
    elif e2e.get("profile"):
        text += "\n\nProfile of the hub under the telemetry load (cProfile, own time):\n\n" + code(
            e2e["profile"]
        )
    return text


def limits_saturation(benches: dict[str, Any]) -> str:
    systems = dig(benches, "ws_fanout", "systems") or {}
    config = dig(benches, "ws_fanout", "config") or {}
    lines = []
    for name, figures in systems.items():
        for step in figures.get("steps", []):
            if any(step.get("generator_bound") or []):
                lines.append(
                    f"{name} at {fmt(step['offered_per_s'])} frames/s: the busiest load "
                    f"generator used {fmt(median(step.get('generator_cpu_pct_max')), '%')} of a "
                    "core"
                )
    return (
        f"A ladder that ended at its top ({fmt(config.get('max_rate_per_client_hz'))} frames/s "
        "per client) or on a busy load generator did not find the server's saturation. "
        + ("; ".join(lines) if lines else "")
    )


GC_ADVICE = (
    "Full (generation 2) collections walk a heap that holds every device's 3,000-frame replay "
    "ring (50 devices: 150,000 frames, each with its sample and cached JSON). Keeping the ring as "
    "bytes, or gc.freeze() after start-up with a higher generation-2 threshold, are the "
    "candidate fixes; a stall that long also delays a STOP (S3) and the scheduler."
)


def limits_capacity(cap: dict[str, Any]) -> str:
    lines, gc_bound = [], False
    for setup, steps in (cap.get("steps") or {}).items():
        failed = next((s for s in steps if not s.get("carried")), None)
        if failed is None:
            continue
        if "error" in failed:
            lines.append(f"{setup} at {failed['devices']} devices: {failed['error']}")
            continue
        cpu = median(failed["hub_cpu_pct"]) or 0.0
        lag_max = (failed.get("hub_loop_lag_ms") or {}).get("max") or 0.0
        gc_max = ((failed.get("hub_gc_pauses") or {}).get("gen2") or {}).get("max_ms") or 0.0
        sim_lag_max = (failed.get("sim_loop_lag_ms") or {}).get("max") or 0.0
        if cpu >= 80:
            cause = f"the gateway process is CPU-bound ({fmt(cpu, '%')} of a core)"
            if setup == "in-process":
                cause += ", the simulators sharing its core"
        elif sim_lag_max > lag_max:
            cause = (
                f"the simulator process ({fmt(median(failed['sim_cpu_pct']), '%')} of a core) "
                f"stalls for up to {fmt(sim_lag_max, 'ms')} and then sends in bursts, which the "
                f"gateway ({fmt(cpu, '%')} CPU, loop stalls up to {fmt(lag_max, 'ms')}) works "
                "through late: on 2 cores the simulator, not the gateway, runs out first"
            )
        elif gc_max and gc_max >= lag_max / 2:
            gc_bound = True
            cause = (
                f"the event loop stalls for up to {fmt(lag_max, 'ms')} at {fmt(cpu, '%')} CPU, "
                f"in line with full GC pauses (longest {fmt(gc_max, 'ms')})"
            )
        else:
            cause = (
                f"the event loop stalls for up to {fmt(lag_max, 'ms')} at {fmt(cpu, '%')} CPU "
                "with no GC pause to match: profile the hub at this step"
            )
        lines.append(
            f"{setup} at {failed['devices']} devices: {cause}. Lost {failed['lost_at_phones']} "
            f"at phones and {failed['device_frames_lost']} at the hub, "
            f"{failed['sessions_running']} sessions running, e2e p99 "
            f"{fmt(median(failed['e2e_ms']['p99']), 'ms')}"
            + (
                f", sim process CPU {fmt(median(failed['sim_cpu_pct']), '%')}"
                if failed.get("sim_cpu_pct")
                else ""
            )
            + f"; {loop_and_gc(failed)}."
        )
    text = "\n".join(f"- {line}" for line in lines)
    return text + ("\n\n" + GC_ADVICE if gc_bound else "")


def loop_and_gc(step: dict[str, Any]) -> str:
    lag = step.get("hub_loop_lag_ms") or {}
    gc = (step.get("hub_gc_pauses") or {}).get("gen2") or {}
    return (
        f"hub event-loop lag p99 {fmt(lag.get('p99'), 'ms')}, max {fmt(lag.get('max'), 'ms')}; "
        f"full GC pauses: {gc.get('count', 0)}, longest {fmt(gc.get('max_ms'), 'ms')}"
    )
