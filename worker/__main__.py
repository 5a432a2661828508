"""`hh-worker` / `python -m worker`: consume alerts and registrations, poll stale orders.

SIGTERM/SIGINT: /readyz turns 503, consumers stop, messages in flight finish, exit 0.
A failure while starting (port taken, indexes, a refused broker declaration) is logged as one
`worker_start_failed` line and the process exits 1; an unreachable store or broker is waited for.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog
import uvloop

from shared import logs, tracing
from shared.command import settings_from_command_line
from shared.settings import Settings
from worker.app import Worker

log = structlog.get_logger("worker")


async def run(settings: Settings) -> int:
    worker = Worker(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(worker.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if starting.done() and (error := starting.exception()) is not None:
        log.error("worker_start_failed", error=logs.error_text(error))
        code = 1
    else:
        await stopping
    for task in (starting, stopping):
        task.cancel()
    await asyncio.gather(starting, stopping, return_exceptions=True)
    await worker.stop()
    return code


def main() -> None:
    settings = settings_from_command_line("hh-worker", __doc__)
    traced = tracing.start_if_wanted("hh-worker")  # OTEL_* environment; off by default
    logs.configure(settings.log_format, settings.log_level, trace_ids=traced is not None)
    code = uvloop.run(run(settings))  # libuv's loop: less overhead per message
    if traced is not None:
        traced.shutdown()  # the last spans are exported before the process ends
    sys.exit(code)


if __name__ == "__main__":
    main()
