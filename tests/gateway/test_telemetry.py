"""Tests of gateway.telemetry: numbering, fan-out, replay, drops, listeners and session figures.

Nothing here measures time: "non-blocking" and "slow subscriber" are asserted on counts.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ble.protocol import (
    IMPEDANCE_OPEN,
    NO_SEGMENT,
    DeviceState,
    FaultFlags,
    TelemetrySample,
    Zone,
)
from gateway.figures import APPLY_MORE_GEL, ContactWarning, SessionFigures
from gateway.telemetry import (
    Dropped,
    Gap,
    Subscription,
    TelemetryFrame,
    TelemetryHub,
    TelemetryItem,
)

U32 = 1 << 32


def make_sample(
    frame: int = 0,
    *,
    time_ms: int = 0,
    state: DeviceState = DeviceState.RUNNING,
    current: int = 100,
    peak: int | None = None,
    quality: int = 80,
    impedance: int = 150,
    segment: int = 1,
    faults: FaultFlags = FaultFlags.NONE,
) -> TelemetrySample:
    return TelemetrySample(
        frame=frame,
        device_time_ms=time_ms,
        state=state,
        segment_id=segment,
        segment_elapsed_ms=0,
        current_mean_ua=current,
        current_peak_ua=current if peak is None else peak,
        impedance_10ohm=impedance,
        contact_quality=quality,
        battery_pct=90,
        temperature_dc=312,
        faults=faults,
    )


def publish_counters(
    hub: TelemetryHub,
    counters: list[int] | range,
    *,
    device: str = "dev-a",
    session_id: str | None = "s1",
    zone: Zone | None = Zone.FOREHEAD,
) -> list[TelemetryFrame]:
    return [
        hub.publish(
            device,
            make_sample(counter, time_ms=20 * i),
            session_id=session_id,
            zone=zone,
            received_at=1000.0 + i,
        )
        for i, counter in enumerate(counters)
    ]


def drain(sub: Subscription) -> list[TelemetryItem]:
    items: list[TelemetryItem] = []
    while (item := sub.get_nowait()) is not None:
        items.append(item)
    return items


def seqs(items: list[TelemetryItem]) -> list[int]:
    return [item.seq for item in items if isinstance(item, TelemetryFrame)]


# --- numbering ------------------------------------------------------------------------------------


def test_seq_starts_at_the_frame_counter_and_counts_up() -> None:
    hub = TelemetryHub()
    frames = publish_counters(hub, [7, 8, 9])
    assert [f.seq for f in frames] == [7, 8, 9]
    assert hub.counters.device_frames_lost == 0


def test_frame_counter_wrap_keeps_seq_monotonic_and_loses_nothing() -> None:
    hub = TelemetryHub()
    frames = publish_counters(hub, [65533, 65534, 65535, 0, 1, 2])
    assert [f.seq for f in frames] == [65533, 65534, 65535, 65536, 65537, 65538]
    assert hub.counters.device_frames_lost == 0


def test_device_frame_loss_shows_as_seq_gap_and_is_counted_per_device() -> None:
    hub = TelemetryHub()
    a = publish_counters(hub, [10, 11, 15, 16], device="a")  # 12, 13, 14 lost
    b = publish_counters(hub, [65534, 1], device="b")  # 65535, 0 lost across the wrap
    assert [f.seq for f in a] == [10, 11, 15, 16]
    assert [f.seq for f in b] == [65534, 65537]
    counters = hub.counters
    assert counters.device_frames_lost_by_device == {"a": 3, "b": 2}
    assert counters.device_frames_lost == 5
    assert counters.frames_in == 6


def test_repeated_counter_is_not_taken_as_65535_lost_frames() -> None:
    hub = TelemetryHub()
    frames = publish_counters(hub, [5, 5, 6])
    assert [f.seq for f in frames] == [5, 6, 7]
    assert hub.counters.device_frames_lost == 0


def test_resync_after_a_device_restart_keeps_seq_monotonic_without_counting_loss() -> None:
    hub = TelemetryHub()
    before = publish_counters(hub, [30000, 30001])
    hub.resync_device("dev-a")
    hub.resync_device("never-seen")  # harmless
    after = publish_counters(hub, [0, 1, 3])
    assert [f.seq for f in before + after] == [30000, 30001, 30002, 30003, 30005]
    assert hub.counters.device_frames_lost == 1  # only frame 2 after the restart


@given(st.lists(st.integers(0, 65535), min_size=1, max_size=300))
def test_any_counter_sequence_gives_strictly_increasing_seq(counters: list[int]) -> None:
    hub = TelemetryHub(ring_size=4)
    frames = publish_counters(hub, counters)
    seq = [f.seq for f in frames]
    assert all(b > a for a, b in itertools.pairwise(seq))
    assert all(s % 65536 == c for s, c in zip(seq[:1], counters[:1], strict=True))
    expected_lost = 0
    for prev, cur, s_prev, s_cur in zip(counters, counters[1:], seq, seq[1:], strict=False):
        step = (cur - prev) % 65536 or 1
        assert s_cur - s_prev == step
        expected_lost += step - 1
    assert hub.counters.device_frames_lost == expected_lost


# --- frames and JSON ------------------------------------------------------------------------------


def test_frame_json_is_built_once_and_shared() -> None:
    hub = TelemetryHub()
    subs = [hub.subscribe() for _ in range(3)]
    sample = make_sample(
        4,
        time_ms=123,
        current=210,
        peak=260,
        impedance=IMPEDANCE_OPEN,
        quality=0,
        segment=NO_SEGMENT,
        faults=FaultFlags.LOW_BATTERY | FaultFlags.OVER_TEMPERATURE,
    )
    frame = hub.publish("dev-a", sample, session_id=None, zone=None, received_at=12.5)
    delivered = [drain(sub)[0] for sub in subs]
    assert all(item is frame for item in delivered)
    data = frame.json_text
    assert all(isinstance(item, TelemetryFrame) and item.json_text is data for item in delivered)
    assert orjson.loads(data) == {
        "type": "telemetry",
        "device": "dev-a",
        "seq": 4,
        "session_id": None,
        "zone": None,
        "received_at": 12.5,
        "frame": 4,
        "device_time_ms": 123,
        "state": "running",
        "segment_id": None,
        "segment_elapsed_ms": 0,
        "current_mean_ua": 210,
        "current_peak_ua": 260,
        "impedance_ohm": None,
        "contact_quality": 0,
        "battery_pct": 90,
        "temperature_c": 31.2,
        "faults": ["over_temperature", "low_battery"],
    }


def test_frame_json_names_zone_and_impedance() -> None:
    hub = TelemetryHub()
    (frame,) = publish_counters(hub, [0], zone=Zone.EYE_AREA, session_id="s9")
    data = json.loads(frame.json_bytes)
    assert (data["zone"], data["session_id"], data["impedance_ohm"], data["segment_id"]) == (
        "eye_area",
        "s9",
        1500,
        1,
    )
    assert data["faults"] == []


def test_markers_serialise() -> None:
    assert orjson.loads(Dropped(3).json_bytes) == {"type": "dropped", "count": 3}
    assert orjson.loads(Gap(12).json_bytes) == {"type": "gap", "missed": 12}


# --- fan-out and filters --------------------------------------------------------------------------


def test_fan_out_to_many_subscribers() -> None:
    hub = TelemetryHub()
    subs = [hub.subscribe() for _ in range(50)]
    assert hub.subscriber_count == 50
    frames = publish_counters(hub, range(20))
    for sub in subs:
        assert drain(sub) == frames
    counters = hub.counters
    assert (counters.frames_in, counters.frames_out, counters.frames_dropped) == (20, 1000, 0)


def test_filters_by_device_session_and_both() -> None:
    hub = TelemetryHub()
    everything = hub.subscribe()
    dev_a = hub.subscribe(device="a")
    session_1 = hub.subscribe(session_id="s1")
    a_and_s2 = hub.subscribe(device="a", session_id="s2")
    nobody = hub.subscribe(device="zzz")

    a1 = publish_counters(hub, [0], device="a", session_id="s1")
    a2 = publish_counters(hub, [1], device="a", session_id="s2")
    b1 = publish_counters(hub, [0], device="b", session_id="s1")
    b_none = publish_counters(hub, [1], device="b", session_id=None)

    assert drain(everything) == a1 + a2 + b1 + b_none
    assert drain(dev_a) == a1 + a2
    assert drain(session_1) == a1 + b1
    assert drain(a_and_s2) == a2
    assert drain(nobody) == []


async def test_async_iteration_and_close_wakes_a_waiting_consumer() -> None:
    hub = TelemetryHub()
    sub = hub.subscribe(device="dev-a")
    got: list[TelemetryItem] = []

    async def consume() -> None:
        async for item in sub:
            got.append(item)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    frames = publish_counters(hub, range(3))
    await asyncio.sleep(0)
    sub.close()
    await task
    assert got == frames
    assert hub.subscriber_count == 0
    publish_counters(hub, [3])  # a closed subscription receives nothing and breaks nothing
    assert sub.get_nowait() is None
    sub.close()  # idempotent


async def test_context_managers_and_hub_close_end_subscriptions() -> None:
    hub = TelemetryHub()
    with hub.subscribe() as sync_sub:
        assert hub.subscriber_count == 1
    assert sync_sub.closed
    async with hub.subscribe(device="a") as async_sub:
        assert hub.subscriber_count == 1
    assert async_sub.closed
    assert hub.subscriber_count == 0

    subs = [hub.subscribe(), hub.subscribe(device="a"), hub.subscribe(session_id="s1")]
    publish_counters(hub, [0], device="a", session_id="s1")
    hub.close()
    assert hub.subscriber_count == 0
    for sub in subs:
        assert sub.closed
        assert [item async for item in sub] == []


async def test_only_one_task_may_wait_on_a_subscription() -> None:
    hub = TelemetryHub()
    sub = hub.subscribe()
    first = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already waiting"):
        await anext(sub)
    (frame,) = publish_counters(hub, [0])
    assert await first is frame


async def test_a_cancelled_consumer_leaves_the_subscription_usable() -> None:
    hub = TelemetryHub()
    sub = hub.subscribe()
    waiting = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    (frame,) = publish_counters(hub, [0])
    assert await anext(sub) is frame


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="ring_size"):
        TelemetryHub(ring_size=0)
    with pytest.raises(ValueError, match="queue_size"):
        TelemetryHub().subscribe(queue_size=0)


# --- slow subscribers -----------------------------------------------------------------------------


async def test_slow_subscriber_loses_oldest_frames_and_is_told_exactly_how_many() -> None:
    total, slow_size = 200, 8
    hub = TelemetryHub(queue_size=slow_size)
    slow = hub.subscribe(device="dev-a")  # never reads until the end
    fast = hub.subscribe(device="dev-a", queue_size=2)  # small queue, but keeps up
    got: list[TelemetryItem] = []

    async def consume() -> None:
        async for item in fast:
            got.append(item)
            if len(got) == total:
                return

    consumer = asyncio.create_task(consume())
    assert not inspect.iscoroutinefunction(hub.publish)
    published = []
    for i in range(total):
        frame = hub.publish(
            "dev-a", make_sample(i), session_id=None, zone=None, received_at=float(i)
        )
        published.append(frame)  # publish returned: it never waited for the slow subscriber
        await asyncio.sleep(0)  # one turn of the loop for the fast consumer
    await consumer

    assert got == published
    assert drain(slow) == [Dropped(total - slow_size), *published[-slow_size:]]
    assert slow.dropped_total == total - slow_size
    assert fast.dropped_total == 0
    counters = hub.counters
    assert counters.frames_dropped == total - slow_size
    assert counters.frames_out == total + slow_size


def test_publish_never_waits_even_with_only_stalled_subscribers() -> None:
    hub = TelemetryHub(queue_size=4)
    stalled = [hub.subscribe() for _ in range(20)]
    frames = publish_counters(hub, [i % 65536 for i in range(10_000)])
    assert len(frames) == 10_000
    assert hub.counters.frames_dropped == 20 * (10_000 - 4)
    for sub in stalled:
        assert drain(sub) == [Dropped(10_000 - 4), *frames[-4:]]


@given(
    ops=st.lists(st.sampled_from(["publish", "read"]), max_size=200),
    queue_size=st.integers(1, 6),
)
def test_drops_are_reported_exactly_where_frames_went_missing(
    ops: list[str], queue_size: int
) -> None:
    hub = TelemetryHub(queue_size=queue_size)
    sub = hub.subscribe()
    received: list[TelemetryItem] = []
    published = 0
    for op in ops:
        if op == "publish":
            publish_counters(hub, [published % 65536])
            published += 1
        elif (item := sub.get_nowait()) is not None:
            received.append(item)
    received += drain(sub)

    expected_next = 0
    pending_drop = 0
    for item in received:
        if isinstance(item, Dropped):
            assert item.count > 0
            assert pending_drop == 0  # never two markers in a row
            pending_drop = item.count
        else:
            assert isinstance(item, TelemetryFrame)
            assert item.seq == expected_next + pending_drop
            expected_next, pending_drop = item.seq + 1, 0
    assert pending_drop == 0  # a Dropped marker is always followed by a frame
    assert expected_next == published
    assert sum(i.count for i in received if isinstance(i, Dropped)) == sub.dropped_total
    assert hub.counters.frames_dropped == sub.dropped_total


def test_a_dropped_marker_is_always_followed_by_the_frame_it_refers_to() -> None:
    hub = TelemetryHub(queue_size=1)
    sub = hub.subscribe()
    frames = publish_counters(hub, [0, 1])  # frame 0 dropped
    assert sub.get_nowait() == Dropped(1)
    frames += publish_counters(hub, [2])  # must not drop frame 1, which the marker announced
    assert drain(sub) == frames[1:]
    assert sub.dropped_total == 1


# --- replay ---------------------------------------------------------------------------------------


def test_replay_from_a_seq_in_the_ring_has_no_gap_and_joins_live_frames() -> None:
    hub = TelemetryHub(ring_size=10)
    frames = publish_counters(hub, range(5))
    sub = hub.subscribe(device="dev-a", from_seq=2)
    live = publish_counters(hub, [5, 6])
    assert drain(sub) == frames[2:] + live


def test_replay_beyond_the_ring_starts_with_a_gap_of_the_missing_count() -> None:
    hub = TelemetryHub(ring_size=10)
    frames = publish_counters(hub, range(25))  # the ring holds seq 15..24
    sub = hub.subscribe(device="dev-a", from_seq=5)
    assert drain(sub) == [Gap(10), *frames[15:]]


def test_replay_of_the_whole_ring_exactly_has_no_gap() -> None:
    hub = TelemetryHub(ring_size=10)
    frames = publish_counters(hub, range(25))
    assert drain(hub.subscribe(device="dev-a", from_seq=15)) == frames[15:]


def test_replay_skips_over_frames_the_device_lost_without_a_gap() -> None:
    hub = TelemetryHub(ring_size=10)
    frames = publish_counters(hub, [0, 1, 2, 6, 7])
    assert drain(hub.subscribe(device="dev-a", from_seq=4)) == frames[3:]


def test_replay_longer_than_the_queue_is_delivered_whole() -> None:
    hub = TelemetryHub(ring_size=100, queue_size=4)
    frames = publish_counters(hub, range(50))
    sub = hub.subscribe(device="dev-a", from_seq=0)
    live = publish_counters(hub, [50, 51])
    assert drain(sub) == frames + live
    assert sub.dropped_total == 0


def test_replay_then_live_overflow_reports_drops_after_the_replay() -> None:
    hub = TelemetryHub(ring_size=100, queue_size=2)
    frames = publish_counters(hub, range(5))
    sub = hub.subscribe(device="dev-a", from_seq=3)
    live = publish_counters(hub, range(5, 10))
    assert drain(sub) == [*frames[3:], Dropped(3), *live[-2:]]


def test_replay_from_before_the_first_frame_or_after_the_newest() -> None:
    hub = TelemetryHub(ring_size=10)
    frames = publish_counters(hub, range(1000, 1005))
    assert drain(hub.subscribe(device="dev-a", from_seq=0)) == frames  # nothing was ever lost
    ahead = hub.subscribe(device="dev-a", from_seq=99_999)  # e.g. a seq from before a restart
    assert drain(ahead) == []
    live = publish_counters(hub, [1005])
    assert drain(ahead) == live
    assert drain(hub.subscribe(device="unknown", from_seq=3)) == []


def test_replay_honours_the_session_filter() -> None:
    hub = TelemetryHub(ring_size=10)
    s1 = publish_counters(hub, range(3), session_id="s1")
    publish_counters(hub, range(3, 6), session_id="s2")
    sub = hub.subscribe(device="dev-a", session_id="s1", from_seq=0)
    live = publish_counters(hub, [6], session_id="s1")
    assert drain(sub) == s1 + live


def test_from_seq_needs_a_device() -> None:
    hub = TelemetryHub()
    with pytest.raises(ValueError, match="needs device"):
        hub.subscribe(session_id="s1", from_seq=0)


# --- listeners ------------------------------------------------------------------------------------


def test_listeners_see_every_frame_and_a_raising_one_breaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = TelemetryHub()
    seen: list[TelemetryFrame] = []
    fail = [True]

    def broken(frame: TelemetryFrame) -> None:
        if fail[0]:
            raise RuntimeError("listener bug")

    remove_broken = hub.add_listener(broken)
    remove_good = hub.add_listener(seen.append)
    sub = hub.subscribe()
    with caplog.at_level(logging.INFO, logger="gateway.telemetry"):
        frames = publish_counters(hub, range(5))
        fail[0] = False
        frames += publish_counters(hub, [5])
    assert seen == frames
    assert drain(sub) == frames
    assert hub.counters.listener_errors == 5
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1  # logged once per failure streak
    assert failures[0].exc_info is not None
    assert any("recovered" in r.getMessage() for r in caplog.records)

    remove_good()
    remove_good()  # idempotent
    remove_broken()
    publish_counters(hub, [6])
    assert len(seen) == 6


def test_a_listener_may_unsubscribe_during_publish() -> None:
    hub = TelemetryHub()
    sub = hub.subscribe()
    calls: list[int] = []

    def once(frame: TelemetryFrame) -> None:
        calls.append(frame.seq)
        sub.close()
        remove()

    remove = hub.add_listener(once)
    frames = publish_counters(hub, range(3))
    assert calls == [0]
    assert hub.subscriber_count == 0
    assert sub.get_nowait() is None
    assert hub.counters.frames_in == len(frames)


# --- session figures ------------------------------------------------------------------------------


def frame_at(
    time_ms: int,
    *,
    current: int = 100,
    peak: int | None = None,
    quality: int = 80,
    zone: Zone | None = Zone.FOREHEAD,
    state: DeviceState = DeviceState.RUNNING,
    seq: int = 0,
) -> TelemetryFrame:
    sample = make_sample(
        seq % 65536, time_ms=time_ms, current=current, peak=peak, quality=quality, state=state
    )
    return TelemetryFrame("dev-a", seq, sample, "s1", zone, 0.0)


def test_dose_integration_matches_a_hand_computation() -> None:
    figures = SessionFigures()
    frames = [
        # time                current  zone           interval integrated (newer sample's current)
        frame_at(U32 - 40, current=100, peak=450),  # first frame: nothing to integrate
        frame_at(U32 - 20, current=100),  # 20 ms x 100 = 2000 µA·ms forehead
        frame_at(0, current=200),  # wrap: 20 ms x 200 = 4000 forehead
        frame_at(20, current=0),  # 20 ms off: contact yes, output no
        frame_at(40, current=300, zone=Zone.CHEEKS),  # 20 x 300 = 6000 cheeks
        frame_at(2040, current=300, zone=Zone.CHEEKS),  # 2000 ms step > 1 s: gap, skipped
        frame_at(2080, current=300, quality=0, zone=Zone.CHEEKS),  # 40 x 300 = 12000, no contact
        frame_at(3060, current=50, zone=Zone.CHEEKS),  # 980 x 50 = 49000 cheeks
        frame_at(3060, current=50, zone=Zone.CHEEKS),  # duplicate time: nothing
    ]
    for frame in frames:
        assert figures.update(frame) == []
    snapshot = figures.snapshot()
    assert snapshot == {
        "charge_uas_by_zone": {"forehead": 6.0, "cheeks": 67.0},
        "charge_uas_total": 73.0,
        "contact_s": 1.06,  # 20+20+20+20+980 ms
        "output_s": 1.08,  # 20+20+20+40+980 ms
        "mean_current_ua": pytest.approx(73000 / 1080),
        "peak_current_ua": 450,
        "frames": 9,
        "gaps": 1,
        "contact_warnings": 0,
    }
    assert orjson.loads(orjson.dumps(snapshot))["charge_uas_total"] == 73.0


def test_a_device_clock_going_backwards_is_a_gap() -> None:
    figures = SessionFigures()
    figures.update(frame_at(5000))
    figures.update(frame_at(100))  # device restarted its clock
    figures.update(frame_at(120, zone=None))
    snapshot = figures.snapshot()
    assert snapshot["gaps"] == 1
    assert snapshot["charge_uas_by_zone"] == {"unknown": 2.0}


def test_empty_figures_snapshot() -> None:
    snapshot = SessionFigures().snapshot()
    assert snapshot["mean_current_ua"] is None
    assert snapshot["charge_uas_total"] == 0


def feed(
    figures: SessionFigures,
    start_ms: int,
    duration_ms: int,
    *,
    quality: int,
    state: DeviceState = DeviceState.RUNNING,
) -> list[int]:
    """Feed 50 Hz frames over [start, start + duration]; return the unwrapped times that warned."""
    warned = []
    for t in range(start_ms, start_ms + duration_ms + 1, 20):
        warnings = figures.update(frame_at(t % U32, quality=quality, state=state))
        for warning in warnings:
            assert warning.message == APPLY_MORE_GEL
            warned.append(t)
    return warned


def test_gel_warning_fires_once_then_re_arms_after_recovery() -> None:
    figures = SessionFigures()
    assert feed(figures, 0, 1000, quality=90) == []
    assert feed(figures, 1020, 8000, quality=25) == [1020 + 3000]  # once, not every frame
    assert feed(figures, 9040, 500, quality=0) == []  # off the skin: not a gel problem
    assert feed(figures, 9560, 5000, quality=25) == []  # not re-armed without recovery
    assert feed(figures, 14580, 200, quality=40) == []  # recovered: re-armed
    assert feed(figures, 14800, 5000, quality=10) == [14800 + 3000]
    assert figures.snapshot()["contact_warnings"] == 2


def test_gel_warning_carries_context() -> None:
    figures = SessionFigures(gel_threshold=50, gel_hold_ms=100)
    warnings: list[ContactWarning] = []
    for t in range(0, 200, 20):
        warnings += figures.update(frame_at(t, quality=30, zone=Zone.JAWLINE))
    assert warnings == [
        ContactWarning(APPLY_MORE_GEL, zone=Zone.JAWLINE, contact_quality=30, device_time_ms=100)
    ]
    assert str(warnings[0]) == "apply more gel"


def test_no_gel_warning_off_the_skin_or_while_output_is_not_wanted() -> None:
    figures = SessionFigures()
    assert feed(figures, 0, 10_000, quality=0) == []
    assert feed(figures, 10_020, 10_000, quality=20, state=DeviceState.PAUSED) == []
    assert feed(figures, 20_040, 10_000, quality=20, state=DeviceState.IDLE) == []


def test_gel_hold_restarts_after_a_break_or_a_gap_and_survives_a_clock_wrap() -> None:
    figures = SessionFigures()
    assert feed(figures, 0, 2000, quality=20) == []
    assert feed(figures, 2020, 100, quality=20, state=DeviceState.PAUSED) == []
    assert feed(figures, 2140, 2000, quality=20) == []  # hold restarted at 2140
    assert feed(figures, 6140, 2000, quality=20) == []  # 2 s data gap: hold restarts
    start = U32 - 1000
    warned = feed(figures, start, 4000, quality=20)  # another gap, then a wrap inside the hold
    assert warned == [start + 3000]


def test_bad_figures_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="gel_threshold"):
        SessionFigures(gel_threshold=0)
