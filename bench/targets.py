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

MB_PER_MIB = 1.048576


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


def judge_stop(benches: dict[str, Any]) -> Judged:
    e2e = benches.get("telemetry_e2e", {})
    stop = median(dig(e2e, "stop", "output_off_ms", "p99"))
    rtt = median(dig(benches, "floors", "in_process", "write_rtt_ms", "p99"))
    ok = None if stop is None or rtt is None else stop - rtt < 5
    measured = f"{fmt(stop, 'ms')} vs {fmt(rtt, 'ms')} ({delta((stop or 0) - (rtt or 0))})"
    return judged(measured, ok, lambda: limits_stop(e2e))


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


def judge_rss(benches: dict[str, Any]) -> Judged:
    foot = benches.get("footprint", {})
    rss = median(dig(foot, "hci", "seven_devices", "rss_mib"))
    ok = None if rss is None else rss < 90 / MB_PER_MIB
    measured = f"{fmt(rss, 'MiB')} ({fmt(rss * MB_PER_MIB if rss else None, 'MB')})"
    return judged(measured, ok, lambda: limits_rss(foot))


def judge_idle(benches: dict[str, Any]) -> Judged:
    foot = benches.get("footprint", {})
    cpu = median(dig(foot, "hci", "seven_devices", "idle_cpu_pct"))
    return judged(fmt(cpu, "%"), None if cpu is None else cpu < 2, lambda: limits_idle(foot))


def judge_ready(benches: dict[str, Any]) -> Judged:
    ready = median(dig(benches, "footprint", "sim7", "ready_s"))
    return fmt(ready, "s"), verdict(None if ready is None else ready < 2), ""


def judge_capacity(benches: dict[str, Any]) -> Judged:
    cap = benches.get("capacity", {})
    best = cap.get("capacity", {})
    gateway_only = best.get("sim-process")
    text = ", ".join(f"{k}: {v} devices" for k, v in best.items())
    ok = None if gateway_only is None else gateway_only >= 50
    return judged(text, ok, lambda: limits_capacity(cap))


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
        "API stop -> output off p99 < 5 ms above a write round trip", judge_stop),
    Aim("Stop, gateway level", (),
        "SessionManager.stop -> output off p99 < 5 ms above a write round trip (no HTTP)",
        judge_core_stop, only_when_measured=True),
    Aim("Live telemetry", ("floors", "telemetry_e2e"), TELEMETRY_AIM, judge_telemetry,
        "p99 < 5 ms above the notification floor"),
    Aim("Scheduler", ("gateway_core",), "no output gap through radio stalls up to 500 ms",
        judge_scheduler),
    Aim("Footprint: RSS", ("footprint",), "< 90 MB with 7 devices (gateway alone)", judge_rss,
        ""),
    Aim("Footprint: idle CPU", ("footprint",), "< 2 % of a core (gateway alone, 7 devices)",
        judge_idle, ""),
    Aim("Footprint: ready", ("footprint",), "< 2 s (mcgw serve --ble sim:7 -> health 200)",
        judge_ready, ""),
    Aim("Web page: first screen", ("webapp",), "< 150 KB on the wire (compressed), all it loads",
        judge_web),
    Aim("Capacity", ("capacity",), "50 devices at 50 Hz, no lost frame, one gateway process",
        judge_capacity, "50 devices at 50 Hz, no lost frame"),
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
    http = median(dig(e2e, "stop", "http_answer_ms", "p50"))
    off = median(dig(e2e, "stop", "output_off_ms", "p50"))
    off99 = median(dig(e2e, "stop", "output_off_ms", "p99"))
    ws50 = median(dig(e2e, "stop_ws", "output_off_ms", "p50"))
    ws99 = median(dig(e2e, "stop_ws", "output_off_ms", "p99"))
    text = (
        f"Over REST the STOP reaches the device {fmt(off, 'ms')} (p50) / {fmt(off99, 'ms')} (p99) "
        f"after the request is sent, and the HTTP answer comes at {fmt(http, 'ms')} (p50). The "
        f"same stop sent on an already authenticated WebSocket turns output off in "
        f"{fmt(ws50, 'ms')} (p50) / {fmt(ws99, 'ms')} (p99): the session layer and the radio are "
        "not what is slow. The difference is the REST request before the route runs: the "
        "middleware stack and, above all, the bearer-token check, a round trip through the "
        "storage thread (a SQLite read, plus a commit when last_used_at is due) on every "
        "request. Authenticating from an in-memory cache of token hashes (invalidated on revoke) "
        "and recording last_used_at off the request path would remove most of it."
    )
    profile = e2e.get("stop_profile")
    if profile:
        text += (
            "\n\nThe request path during stops (cProfile of the hub's event-loop thread, "
            "cumulative per stop; waits for the storage thread are not in it, and calls count "
            "coroutine resumptions):\n\n" + code(profile)
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


def limits_rss(foot: dict[str, Any]) -> str:
    empty = dig(foot, "hci", "no_devices", "rss_mib")
    text = (
        f"The gateway with no device at all already holds {fmt(empty, 'MiB')}: the cost is the "
        "imported stack, not the devices."
    )
    imports = foot.get("import_rss_mib")
    if imports:
        text += " Resident memory after importing, cumulatively:\n\n" + code(
            [f"{name:<28} {mib:6.1f} MiB" for name, mib in imports.items()]
        )
    return text


def limits_idle(foot: dict[str, Any]) -> str:
    empty = median(dig(foot, "hci", "no_devices", "idle_cpu_pct"))
    return (
        f"With no device the gateway idles at {fmt(empty, '%')}; the rest is the 7 connected "
        "devices' telemetry, which the gateway subscribes to at 50 Hz whether or not a session "
        "runs or anyone watches (350 notifications/s to decode, number and ring-buffer). "
        "Lowering the telemetry rate while a device has no session and no subscriber would "
        "bring it down."
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
