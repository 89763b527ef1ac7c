"""The bridge's outbox: retained state coalesces per topic, transient messages are bounded."""

from __future__ import annotations

import pytest

from gateway.mqtt.outbox import Outbox


class Broker:
    def __init__(self, fail_on: str | None = None) -> None:
        self.got: list[tuple[str, bytes, bool]] = []
        self.fail_on = fail_on

    async def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        if topic == self.fail_on:
            raise TimeoutError("the broker did not answer")
        self.got.append((topic, payload, retain))


async def test_retained_state_coalesces_and_goes_before_transient_messages() -> None:
    outbox = Outbox(limit=10)
    outbox.send("events", b"e1")
    for n in range(5):
        outbox.set("state", b"s%d" % n)
    outbox.set("hub", b"h")
    outbox.set("hub", b"h")  # no change: nothing more to send
    broker = Broker()
    await outbox.drain(broker.publish, forever=False)
    assert broker.got == [("state", b"s4", True), ("hub", b"h", True), ("events", b"e1", False)]
    assert len(outbox) == 0
    assert outbox.published == 3


async def test_transient_messages_beyond_the_limit_drop_the_oldest_and_are_counted() -> None:
    outbox = Outbox(limit=3)
    for n in range(5):
        outbox.send("telemetry", b"%d" % n)
    broker = Broker()
    await outbox.drain(broker.publish, forever=False)
    assert [payload for _, payload, _ in broker.got] == [b"2", b"3", b"4"]
    assert outbox.dropped == 2


async def test_a_failed_publish_keeps_the_state_for_the_next_connection() -> None:
    outbox = Outbox(limit=3)
    outbox.set("state", b"s")
    with pytest.raises(TimeoutError):
        await outbox.drain(Broker(fail_on="state").publish, forever=False)
    assert len(outbox) == 1
    broker = Broker()
    await outbox.drain(broker.publish, forever=False)
    assert broker.got == [("state", b"s", True)]
    outbox.resend_all()  # a reconnect: everything retained again
    await outbox.drain(broker.publish, forever=False)
    assert broker.got[-1] == ("state", b"s", True)


async def test_a_cleared_topic_is_published_empty_once_then_forgotten() -> None:
    outbox = Outbox(limit=3)
    outbox.set("config", b"{}")
    broker = Broker()
    await outbox.drain(broker.publish, forever=False)
    outbox.set("config", b"")
    await outbox.drain(broker.publish, forever=False)
    assert broker.got[-1] == ("config", b"", True)
    assert "config" not in outbox.retained
    outbox.resend_all()
    await outbox.drain(broker.publish, forever=False)
    assert len(broker.got) == 2
