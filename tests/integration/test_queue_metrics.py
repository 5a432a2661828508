"""The queues' depth, consumers and backlog delay, as both processes export them for alerts
and dashboards (real broker)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from ingest.app import METRICS, WATCH
from shared.settings import Settings
from shared.topology import DEAD_QUEUE, PROCESS_QUEUE
from tests.conftest import wait_until
from tests.integration.test_pipeline import post, wait_processed
from tests.keys import alert_body
from worker.app import Worker

pytestmark = pytest.mark.services


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_work_queue_depth_and_consumers_are_exported_by_ingest_then_drained_by_worker(
    ingest: TestClient[Any, Any], settings: Settings,
) -> None:
    watch = ingest.server.app[WATCH]
    registry = ingest.server.app[METRICS].registry
    for n in range(3):
        assert await post(ingest, alert_body(f"pay-depth-{n}", "processing", "requisites")) == 200

    async def depth_is(expected: int) -> bool:
        await watch.read_once()
        return sample(registry, "hh_queue_messages", queue=PROCESS_QUEUE) == expected
    # A quorum queue's count, read by passive declare, may lag the confirms a moment.
    await wait_until(lambda: depth_is(3), 10, "three alerts waiting")
    # No worker: the ingest still tells, so that "not consuming" fires.
    assert sample(registry, "hh_queue_consumers", queue=PROCESS_QUEUE) == 0
    assert sample(registry, "hh_queue_messages", queue=DEAD_QUEUE) == 0

    worker = Worker(settings)
    await worker.start(http=False)
    try:
        await wait_processed(worker, 3)
        mine = worker.metrics.registry
        assert sample(mine, "hh_worker_consuming") == 1
        assert sample(mine, "hh_worker_message_wait_seconds_count", queue=PROCESS_QUEUE) == 3
        await worker.watch.read_once()
        assert sample(mine, "hh_queue_consumers", queue=PROCESS_QUEUE) == 1
        assert sample(mine, "hh_queue_oldest_message_age_seconds", queue=PROCESS_QUEUE) == 0
        await wait_until(lambda: depth_is(0), 10, "the queue drained")
    finally:
        await worker.stop()
    assert sample(worker.metrics.registry, "hh_worker_consuming") == 0
