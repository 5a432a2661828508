"""RabbitMQ stopped while alerts are being posted: every answer is 200 or 503, /readyz goes 503
and back, and every alert that got a 200 is processed once the broker returns."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.mongo import Collections
from tests.broker_control import broker_accepts, rabbitmqctl
from tests.conftest import wait_until
from tests.integration.test_pipeline import post
from tests.keys import alert_body
from worker.app import Worker

pytestmark = pytest.mark.services


async def test_broker_outage_loses_no_accepted_alert(
    ingest: TestClient[Any, Any], worker: Worker, db: Collections,
) -> None:
    answers: dict[str, int] = {}
    readiness: list[int] = []

    async def send(n: int) -> None:
        payment_id = f"outage-{n}"
        answers[payment_id] = await post(ingest, alert_body(payment_id, "success", None),
                                         "success")

    for n in range(20):
        await send(n)
    await rabbitmqctl("stop_app")  # the node stays up; AMQP connections drop
    try:
        for n in range(20, 40):
            await send(n)
            readiness.append((await ingest.get("/readyz")).status)
    finally:
        returned = asyncio.create_task(broker_accepts())
        await rabbitmqctl("start_app")
        await rabbitmqctl("await_startup")
    back = await returned

    async def ready_again() -> bool:
        return (await ingest.get("/readyz")).status == 200 and worker.broker.ready
    await wait_until(ready_again, 60, "ingest and worker reconnected")
    recovery_s = time.monotonic() - back
    # Reconnection is tried every second while an outage is young (aio-pika's own default is
    # 5 s, during which a sender retrying promptly was refused again and again).
    assert recovery_s < 3.0, f"serving again {recovery_s:.1f}s after the broker returned"
    for n in range(40, 60):
        await send(n)

    assert set(answers.values()) <= {200, 503}, answers
    assert 503 in answers.values() and 503 in readiness  # the outage was seen
    accepted = sorted(p for p, code in answers.items() if code == 200)

    async def all_processed() -> bool:
        return await db.callbacks.count_documents({}) >= len(accepted)
    await wait_until(all_processed, 90, f"{len(accepted)} accepted alerts processed")
    stored = {doc["payment_id"] async for doc in db.callbacks.find({})}
    assert set(accepted) <= stored  # zero lost
    print(f"\noutage: {len(accepted)} accepted, recovered {recovery_s:.2f}s after the broker, "
          f"{sum(c == 503 for c in answers.values())} answered 503, all accepted processed")
