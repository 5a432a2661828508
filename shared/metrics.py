"""Prometheus metrics: a registry per process (or per app in tests) and its HTTP handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)


def process_registry() -> CollectorRegistry:
    """A registry with the standard `process_*`, `python_gc_*` and `python_info` series that
    dashboards and alerts expect beside our own."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(GC_COLLECTOR)
    registry.register(PLATFORM_COLLECTOR)
    return registry


def metrics_handler(
    registry: CollectorRegistry,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return handler
