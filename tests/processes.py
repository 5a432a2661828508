"""Real worker processes for tests: started from a config file, stopped or killed."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[bytes] = []
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, config: Path) -> WorkerProcess:
        env = {**os.environ, "HH_CONFIG": str(config), "HH_LOG_FORMAT": "json"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker", env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        worker = cls(proc)
        assert proc.stdout is not None
        while True:  # until it says it consumes
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            worker.lines.append(line)
            assert line, b"".join(worker.lines).decode()
            if b'"worker_started"' in line:
                break
        worker._reader = asyncio.create_task(worker._collect())
        return worker

    async def _collect(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line)

    def count(self, event: str) -> int:
        marker = f'"{event}"'.encode()
        return sum(marker in line for line in self.lines)

    async def stop(self) -> int:
        """SIGTERM, and the exit code once it has drained."""
        if self.proc.returncode is None:
            self.proc.terminate()
        code = await asyncio.wait_for(self.proc.wait(), 30)
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        self.proc.kill()
        await self.proc.wait()
        if self._reader is not None:
            await self._reader

    def output(self) -> str:
        return b"".join(self.lines).decode(errors="replace")
