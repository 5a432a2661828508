"""The processes under test, started as they run in production (`python -m ingest`, ...), with
their output in a log file and their peak RSS read from /proc."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp


class Service:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name, self.proc, self.log = name, proc, log

    @classmethod
    async def start(cls, module: str, args: list[str], env: dict[str, str], ready_url: str,
                    folder: Path, cwd: Path | None = None) -> Service:
        """`cwd`: run the code found there (`-m` imports from the working directory first)."""
        log = folder / f"{module.replace('.', '_')}.log"
        with log.open("ab") as out:
            # Popen, not asyncio: the benchmark's event loop must not own the child's pipes.
            proc = subprocess.Popen([sys.executable, "-m", module, *args],  # noqa: S603, ASYNC220
                                    env={**os.environ, **env}, stdout=out, stderr=out, cwd=cwd)
        service = cls(module, proc, log)
        await service.wait_ready(ready_url)
        return service

    async def wait_ready(self, url: str, limit_s: float = 60) -> None:
        deadline = time.monotonic() + limit_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited; see {self.log}")
                try:
                    async with http.get(url) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)  # polling a readiness probe, as an orchestrator does
        raise RuntimeError(f"{self.name} not ready after {limit_s}s; see {self.log}")

    def peak_rss_mb(self) -> float:
        """VmHWM: the most resident memory the process has had so far."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(60)
