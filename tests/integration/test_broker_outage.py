"""RabbitMQ stopped while alerts are being posted: every answer is 200 or 503, /readyz goes 503
and back, and every alert that got a 200 is processed once the broker returns."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.mongo import Collections
from tests.conftest import wait_until
from tests.integration.test_pipeline import post
from tests.keys import alert_body
from worker.app import Worker

pytestmark = pytest.mark.services


async def rabbitmqctl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert await asyncio.wait_for(proc.wait(), 120) == 0, f"rabbitmqctl {' '.join(args)}"


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
        await rabbitmqctl("start_app")
        await rabbitmqctl("await_startup")

    async def ready_again() -> bool:
        return (await ingest.get("/readyz")).status == 200
    await wait_until(ready_again, 60, "ingest reconnected")
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
    print(f"\noutage: {len(accepted)} accepted, "
          f"{sum(c == 503 for c in answers.values())} answered 503, all accepted processed")
