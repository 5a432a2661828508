"""`hh-ingest` / `python -m ingest`: serve the alert endpoint configured by HH_CONFIG.

SIGTERM/SIGINT: /readyz turns 503 at once while alerts are still served for `ingest.drain_s`
(a load balancer's time to notice), then the listener closes, requests in flight finish with
their publisher confirms, the broker connection closes, and the process exits 0.
SIGHUP: keys are read again (files or environment).
A failure while starting (port taken, a refused broker declaration) is logged as one
`ingest_start_failed` line and the process exits 1; an unreachable broker is waited for (503)."""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog
import uvloop
from aiohttp import web

from ingest.app import KEYS, LIFECYCLE, create_app
from ingest.slow import GuardedSite
from shared import logs, tracing
from shared.command import settings_from_command_line
from shared.settings import Settings

log = structlog.get_logger("ingest")
SHUTDOWN_TIMEOUT_S = 30.0  # the longest a request in flight is waited for


async def serve(settings: Settings) -> int:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None,  # each alert is logged once, by its handler
                           handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                           keepalive_timeout=settings.ingest.header_timeout_s)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app[KEYS].reload)
    try:
        try:
            await GuardedSite(runner).start()
            log.info("ingest_started", host=settings.ingest.host, port=settings.ingest.port)
            await _until_stopped(stop, app[LIFECYCLE].connecting)
        except StartFailed as exc:
            log.error("ingest_start_failed", error=logs.error_text(exc.__cause__ or exc))
            return 1
        except OSError as exc:  # the listener could not bind
            log.error("ingest_start_failed", error=logs.error_text(exc))
            return 1
        app[LIFECYCLE].draining = True
        log.info("ingest_draining", drain_s=settings.ingest.drain_s)
        await asyncio.sleep(settings.ingest.drain_s)  # a deliberate grace period, not a sync
    finally:
        await runner.cleanup()  # stop listening, finish requests in flight, close the broker
    log.info("ingest_stopped")
    return 0


class StartFailed(Exception):
    pass


async def _until_stopped(stop: asyncio.Event, connecting: asyncio.Task[None] | None) -> None:
    """Wait for a stop signal; raise StartFailed if the broker connection fails for good."""
    stopping = asyncio.create_task(stop.wait())
    try:
        if connecting is not None:
            await asyncio.wait({stopping, connecting}, return_when=asyncio.FIRST_COMPLETED)
            if connecting.done() and not connecting.cancelled() and connecting.exception():
                raise StartFailed from connecting.exception()
        await stopping
    finally:
        stopping.cancel()


def main() -> None:
    settings = settings_from_command_line("hh-ingest", __doc__)
    traced = tracing.start_if_wanted("hh-ingest")  # OTEL_* environment; off by default
    logs.configure(settings.log_format, settings.log_level, trace_ids=traced is not None)
    # libuv's loop: ~13 % more alerts/s here (docs/benchmarks.md)
    code = uvloop.run(serve(settings))
    if traced is not None:
        traced.shutdown()  # the last spans are exported before the process ends
    sys.exit(code)


if __name__ == "__main__":
    main()
