"""Helper processes: start them, talk to them in JSON lines, read their CPU and RSS, stop them.

The parent side is ``Child`` (events on the child's stdout, commands on its stdin) and
``start_helper`` (a helper of bench/helper.py, once it said ``ready``); the child side is
``emit`` and ``commands``. Bulk results go through pickle files (``fetch``). CPU and RSS are read
from /proc, so they are the process's own whoever runs it. The event loop is chosen here (uvloop
when installed, as uvicorn does). Nothing here knows what a helper measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from harness import BENCH

_T = TypeVar("_T")

HELPER_LOG_ENV = "MCGW_BENCH_HELPER_LOG"
"""Where helper processes' stderr goes: a file path, or ``-`` for our own stderr."""
DEFAULT_HELPER_LOG = BENCH / "results" / "helpers.log"
READY_TIMEOUT_S = 120.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_helper_log: Any = None


# --- the event loop -----------------------------------------------------------------------------


def loop_name(choice: str = "auto") -> str:
    """The event loop: uvloop for ``auto`` when installed (as uvicorn picks), else asyncio."""
    if choice == "auto":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
        return "uvloop"
    return choice


def add_loop_argument(parser: argparse.ArgumentParser) -> None:
    """``--loop {auto,asyncio,uvloop}``: the event loop of the helper processes (and servers)."""
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")


def run_loop(coro: Coroutine[Any, Any, _T], loop: str = "auto") -> _T:
    """``asyncio.run`` on the chosen loop."""
    if loop_name(loop) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


def run_timed(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """``asyncio.run(coro)``, its result with the seconds it took as ``elapsed_s``."""
    started = time.perf_counter()
    result = asyncio.run(coro)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


# --- what a process uses --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def memory_mib(pid: int) -> dict[str, float]:
    """Resident set size now (``rss``) and its peak (``hwm``), MiB, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key = "rss" if line.startswith("VmRSS") else "hwm"
            out[key] = round(int(line.split()[1]) / 1024, 1)
    return out


class CpuMeter:
    """CPU use of one process between ``start()`` and ``stop()``, in % of one core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu = 0.0
        self._wall = 0.0

    def start(self) -> None:
        self._cpu = cpu_seconds(self.pid)
        self._wall = time.monotonic()

    def stop(self) -> float:
        wall = time.monotonic() - self._wall
        return (cpu_seconds(self.pid) - self._cpu) / wall * 100 if wall > 0 else math.nan


class CpuMeters:
    """Several ``CpuMeter`` started and stopped together (a window of a benchmark)."""

    def __init__(self, *pids: int | None) -> None:
        self.meters = [CpuMeter(pid) if pid else None for pid in pids]

    def start(self) -> None:
        for meter in self.meters:
            if meter is not None:
                meter.start()

    def stop(self) -> list[float | None]:
        return [meter.stop() if meter is not None else None for meter in self.meters]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- helper logs ---------------------------------------------------------------------------------


def helper_log() -> Any:
    """The file helpers write their logs to (the warnings of a loaded hub are many)."""
    global _helper_log
    target = os.environ.get(HELPER_LOG_ENV, str(DEFAULT_HELPER_LOG))
    if target == "-":
        return None
    if _helper_log is None:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        _helper_log = open(target, "ab")  # noqa: SIM115 - kept open for every helper
    return _helper_log


def close_helper_log() -> None:
    global _helper_log
    if _helper_log is not None:
        _helper_log.close()
        _helper_log = None


def _log_line(line: bytes) -> None:
    sink = helper_log()
    if sink is None:
        sys.stderr.write(line.decode(errors="replace"))
    else:
        sink.write(line)
        sink.flush()


# --- the parent side -----------------------------------------------------------------------------


class ChildError(RuntimeError):
    """A helper process died or said something unexpected."""


class Child:
    """A helper process: JSON-line events on its stdout, JSON-line commands on its stdin.

    Lines that are not JSON objects go to the helper log (logs, tracebacks). The child exits
    when its stdin closes (``close()``); it is killed if it does not within the timeout.
    ``ready`` holds the child's ``ready`` event once ``start_helper`` has seen it.
    """

    def __init__(self, process: asyncio.subprocess.Process, what: str) -> None:
        self.process = process
        self.what = what
        self.ready: dict[str, Any] = {}

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> Child:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=helper_log(),
            env=env,
            limit=2**24,
        )
        return cls(process, " ".join(Path(a).name for a in args[1:3]))

    @property
    def pid(self) -> int:
        return self.process.pid

    async def event(self, name: str, timeout_s: float) -> dict[str, Any]:
        """Read lines until the event ``name``; raise if the child says ``error`` or dies."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    code = await self.process.wait()
                    raise ChildError(f"{self.what} exited ({code}) before {name!r}")
                try:
                    message = json.loads(line)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    _log_line(line)
                    continue
                if message.get("event") == "error":
                    raise ChildError(f"{self.what}: {message.get('message')}")
                if message.get("event") == name:
                    return message

    async def command(
        self, message: dict[str, Any], reply: str | None = None, timeout_s: float = 60.0
    ) -> dict[str, Any] | None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()
        return await self.event(reply, timeout_s) if reply else None

    async def fetch(self, command: str, reply: str, timeout_s: float) -> Any:
        """Bulk data: ``{"cmd": command, "path": ...}``, the child pickles to ``path``."""
        with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as handle:
            path = handle.name
        try:
            await self.command({"cmd": command, "path": path}, reply, timeout_s)
            return load_pickle(path)
        finally:
            os.unlink(path)

    async def close(self, timeout_s: float = 15.0) -> int:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._drain_and_wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode or 0

    async def _drain_and_wait(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                json.loads(line)
            except ValueError:
                _log_line(line)
        await self.process.wait()

    async def __aenter__(self) -> Child:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


def bench_script(name: str) -> str:
    """Path of a script in bench/, for ``Child.start(sys.executable, ...)``."""
    return str(BENCH / name)


async def start_helper(
    kind: str,
    config: dict[str, Any] | None = None,
    *,
    loop: str = "auto",
    timeout_s: float = READY_TIMEOUT_S,
) -> Child:
    """``python bench/helper.py KIND CONFIG --loop L``, once it has said ``ready``."""
    args = [sys.executable, bench_script("helper.py"), kind, json.dumps(config or {})]
    child = await Child.start(*args, "--loop", loop_name(loop))
    child.what = kind
    try:
        child.ready = await child.event("ready", timeout_s)
    except BaseException:
        await child.close()
        raise
    return child


# --- the child side ------------------------------------------------------------------------------


def emit(event: str, **data: Any) -> None:
    """Child side: tell the parent about ``event`` (one JSON line on stdout)."""
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


async def commands() -> AsyncIterator[dict[str, Any]]:
    """Child side: the parent's commands, until it closes our stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict):
                yield message


def save_pickle(path: str, data: Any) -> None:
    """Bulk results between helper processes (local temporary files, trusted)."""
    with open(path, "wb") as out:
        pickle.dump(data, out)


def load_pickle(path: str) -> Any:
    with open(path, "rb") as handle:
        return pickle.load(handle)
