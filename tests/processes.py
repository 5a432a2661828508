"""Real service processes for tests (`python -m worker`, `python -m ingest`): started from a
config file, waited for until they say they started, then stopped (SIGTERM) or killed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar

import aiohttp

from tests.logcapture import LOG_LINES


async def http_status(http: aiohttp.ClientSession, url: str) -> int | None:
    """The status a GET of `url` gets; None if nobody answers."""
    try:
        async with http.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return None


def answers(http: aiohttp.ClientSession, url: str, status: int | None
            ) -> Callable[[], Awaitable[bool]]:
    """A probe for wait_until: does a GET of `url` get `status` (None: nobody listens)?"""
    async def probe() -> bool:
        return await http_status(http, url) == status
    return probe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    alive: ClassVar[set[ServiceProcess]] = set()  # killed after each test if still running

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[bytes] = []
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, config: Path, module: str = "worker", *, by_flag: bool = False,
                    env_config: Path | None = None) -> ServiceProcess:
        """`by_flag`: the config is named by --config, and HH_CONFIG names `env_config` (or
        nothing)."""
        env = {**os.environ, "HH_LOG_FORMAT": "json"}
        env.pop("HH_CONFIG", None)
        if not by_flag:
            env["HH_CONFIG"] = str(config)
        elif env_config is not None:
            env["HH_CONFIG"] = str(env_config)
        args = ["--config", str(config)] if by_flag else []
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        service = cls(proc)
        cls.alive.add(service)
        assert proc.stdout is not None
        started = f'"{module}_started"'.encode()
        while True:  # until it says it serves or consumes
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            service.lines.append(line)
            assert line, b"".join(service.lines).decode()
            if started in line:
                break
        service._reader = asyncio.create_task(service._collect())
        return service

    async def _collect(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line)

    def count(self, event: str) -> int:
        marker = f'"{event}"'.encode()
        return sum(marker in line for line in self.lines)

    def signal(self, number: signal.Signals) -> None:
        self.proc.send_signal(number)

    async def stop(self) -> int:
        """SIGTERM, and the exit code once it has drained."""
        if self.proc.returncode is None:
            self.proc.terminate()
        return await self.wait()

    async def wait(self) -> int:
        code = await asyncio.wait_for(self.proc.wait(), 60)
        await self._finish()
        return code

    async def kill(self) -> None:
        self.proc.kill()
        await self.proc.wait()
        await self._finish()

    async def _finish(self) -> None:
        ServiceProcess.alive.discard(self)
        if self._reader is not None:
            await self._reader
            self._reader = None
            # the session-wide check looks for secrets in what the process logged
            LOG_LINES.extend(line.decode(errors="replace") for line in self.lines)

    @classmethod
    async def kill_leftovers(cls) -> None:
        """A test that failed half-way leaves its processes running; they must not go on
        writing into the next test's queues and database."""
        for service in list(cls.alive):
            if service.proc.returncode is None:
                service.proc.kill()
            await service.proc.wait()
            await service._finish()

    def output(self) -> str:
        return b"".join(self.lines).decode(errors="replace")
