"""`hh-ingest` / `python -m ingest`: serve the alert endpoint configured by HH_CONFIG."""

from __future__ import annotations

from aiohttp import web

from ingest.app import create_app
from shared import logs
from shared.settings import load_settings


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_format, settings.log_level)
    web.run_app(
        create_app(settings),
        host=settings.ingest.host,
        port=settings.ingest.port,
        access_log=None,  # every alert is logged once, with its ids, by the handler
        print=None,
        shutdown_timeout=30,
    )


if __name__ == "__main__":
    main()
