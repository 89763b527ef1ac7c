"""A Mosquitto of the test's own (killed, frozen, restarted at will) and an MQTT watcher.

``Broker`` runs ``mosquitto -c <conf>`` listening on 127.0.0.1 at a port chosen once, so the
same URL works across restarts; persistence is off, so a restarted broker has lost every
retained message (what the bridge must put back). ``kill`` (SIGKILL), ``freeze`` (SIGSTOP) and
``thaw`` (SIGCONT) act on that process only.

``Watcher`` is an aiomqtt subscriber that keeps every message it receives; ``wait_for`` waits
(under a hang guard, never a measurement) for one that matches, ``clear_retained`` publishes an
empty retained message on every topic the test saw, so the shared broker is left clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import orjson

from tests.conftest import service_reachable, unavailable
from tests.e2e.served import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HANG_S = 20.0


def unique_prefixes() -> tuple[str, str]:
    """A topic prefix and a discovery prefix no other test uses."""
    tag = uuid.uuid4().hex[:10]
    return f"t{tag}", f"ha{tag}"


class Broker:
    """One mosquitto process on a fixed port (see the module docstring)."""

    def __init__(self, tmp_path: Path) -> None:
        if not Path(MOSQUITTO).exists():
            unavailable("mosquitto is not installed (apt-get install mosquitto)")
        self.port = free_port()
        self.conf = tmp_path / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        self.log = tmp_path / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + HANG_S
        while not service_reachable("127.0.0.1", self.port, 0.2):
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return orjson.loads(self.payload)


@dataclass
class Watcher:
    client: aiomqtt.Client
    messages: list[Message] = field(default_factory=list)
    _news: asyncio.Event = field(default_factory=asyncio.Event)

    async def _collect(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self.messages.append(Message(message.topic.value, payload, bool(message.retain)))
            self._news.set()

    async def wait_for(
        self, accept: Callable[[Message], bool], *, after: int = 0, timeout_s: float = HANG_S
    ) -> Message:
        """The first message from index ``after`` on that ``accept``s (waits for it)."""
        async with asyncio.timeout(timeout_s):
            index = after
            while True:
                while index < len(self.messages):
                    if accept(self.messages[index]):
                        return self.messages[index]
                    index += 1
                self._news.clear()
                await self._news.wait()

    def mark(self) -> int:
        return len(self.messages)

    async def publish(self, topic: str, payload: dict[str, Any] | bytes | str) -> None:
        body = payload if isinstance(payload, bytes | str) else orjson.dumps(payload)
        await self.client.publish(topic, body, qos=1)

    async def clear_retained(self) -> None:
        # Live messages arrive with the retain flag cleared (MQTT 3.1.1), so every topic seen
        # is cleared; an empty retained message on a topic that holds none does nothing.
        for topic in {m.topic for m in self.messages if m.payload}:
            await self.client.publish(topic, b"", qos=1, retain=True)


@contextlib.asynccontextmanager
async def watch(port: int, *filters: str) -> AsyncIterator[Watcher]:
    """A subscriber to ``filters`` on 127.0.0.1:``port``; clears what it saw retained at exit."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"w-{uuid.uuid4().hex[:8]}") as client:
        watcher = Watcher(client)
        for topic in filters:
            await client.subscribe(topic, qos=1)
        task = asyncio.create_task(watcher._collect())
        try:
            yield watcher
        finally:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(5):
                    await watcher.clear_retained()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
