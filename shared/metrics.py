"""Prometheus metrics: a registry per process (or per app in tests) and its HTTP handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


def process_registry() -> CollectorRegistry:
    """A registry with the standard `process_*`, `python_gc_*` and `python_info` series that
    dashboards and alerts expect beside our own."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(GC_COLLECTOR)
    registry.register(PLATFORM_COLLECTOR)
    return registry


class BrokerNode(Collector):
    """`hh_amqp_node{node="host:port"}`: 1 while connected to that broker node, 0 while its
    connection is down (the node it will try next is then named)."""

    def __init__(self, node: Callable[[], str | None], ready: Callable[[], bool]) -> None:
        self._node, self._ready = node, ready

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("hh_amqp_node", "The broker node this process is on "
                                   "(1 connected, 0 reconnecting)", labels=["node"])
        node = self._node()
        if node is not None:
            family.add_metric([node], 1.0 if self._ready() else 0.0)
        yield family


def export_broker_node(registry: CollectorRegistry, broker: Any) -> None:
    """`broker`: a shared.broker.Broker (its `node` and `ready`)."""
    registry.register(BrokerNode(lambda: broker.node, lambda: broker.ready))


def metrics_handler(
    registry: CollectorRegistry,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return handler
