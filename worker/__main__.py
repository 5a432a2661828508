"""`hh-worker` / `python -m worker`: consume alerts and registrations configured by HH_CONFIG."""

from __future__ import annotations

import asyncio
import signal

import uvloop

from shared import logs
from shared.settings import load_settings
from worker.app import Worker


async def run() -> None:
    settings = load_settings()
    logs.configure(settings.log_format, settings.log_level)
    worker = Worker(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(worker.start())
    await stop.wait()
    if not starting.done():
        starting.cancel()
    await worker.stop()


def main() -> None:
    uvloop.run(run())  # libuv's loop: less overhead per message (docs/benchmarks.md)


if __name__ == "__main__":
    main()
