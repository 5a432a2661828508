"""`hh-ingest` / `python -m ingest`: serve the alert endpoint configured by HH_CONFIG.

SIGTERM/SIGINT: /readyz turns 503 at once while alerts are still served for `ingest.drain_s`
(a load balancer's time to notice), then the listener closes, requests in flight finish with
their publisher confirms, the broker connection closes, and the process exits 0.
SIGHUP: keys are read again (files or environment)."""

from __future__ import annotations

import asyncio
import signal

import structlog
import uvloop
from aiohttp import web

from ingest.app import KEYS, LIFECYCLE, create_app
from shared import logs
from shared.settings import Settings, load_settings

log = structlog.get_logger("ingest")
SHUTDOWN_TIMEOUT_S = 30.0  # the longest a request in flight is waited for


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None,  # each alert is logged once, by its handler
                           handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app[KEYS].reload)
    try:
        await web.TCPSite(runner, settings.ingest.host, settings.ingest.port).start()
        log.info("ingest_started", host=settings.ingest.host, port=settings.ingest.port)
        await stop.wait()
        app[LIFECYCLE].draining = True
        log.info("ingest_draining", drain_s=settings.ingest.drain_s)
        await asyncio.sleep(settings.ingest.drain_s)  # a deliberate grace period, not a sync
    finally:
        await runner.cleanup()  # stop listening, finish requests in flight, close the broker
    log.info("ingest_stopped")


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_format, settings.log_level)
    uvloop.run(serve(settings))  # libuv's loop: ~13 % more alerts/s here (docs/benchmarks.md)


if __name__ == "__main__":
    main()
