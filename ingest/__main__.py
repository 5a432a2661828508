"""`hh-ingest` / `python -m ingest`: serve the alert endpoint configured by HH_CONFIG."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from ingest.app import KEYS, create_app
from shared import logs
from shared.settings import load_settings


async def _reload_on_sighup(app: web.Application) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, app[KEYS].reload)


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_format, settings.log_level)
    app = create_app(settings)
    app.on_startup.append(_reload_on_sighup)  # keys from files or env, read again on SIGHUP
    web.run_app(
        app,
        host=settings.ingest.host,
        port=settings.ingest.port,
        access_log=None,  # every alert is logged once, with its ids, by the handler
        print=None,
        shutdown_timeout=30,
    )


if __name__ == "__main__":
    main()
