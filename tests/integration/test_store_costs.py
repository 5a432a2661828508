"""Store round trips per alert, counted by a PyMongo command listener (a count, not a time):
reads by `_id` issued concurrently, the writes of the messages in flight batched."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from shared.envelope import AlertEnvelope
from shared.settings import Settings
from tests.keys import alert_body
from tests.store_commands import counting
from worker.app import Worker

pytestmark = pytest.mark.services
BURST = 32


def envelope(payment_id: str, status: str = "processing", sub: str | None = "new"
             ) -> AlertEnvelope:
    return AlertEnvelope(alert_body(payment_id, status, sub).decode(), "callback",
                         str(int(time.time())), "rsa:test", time.time(), uuid.uuid4().hex)


async def test_store_commands_per_alert(make_settings: Callable[..., Settings], amqp: Any
                                        ) -> None:
    # A long batch window: a batch goes once every alert in flight joined it, however slow the
    # machine (CI once counted 6.06 a burst's alert when 10 ms passed before all 32 joined).
    settings = make_settings(poller={"enabled": False},
                             worker={"maintenance_interval_s": 3600, "batch_window_s": 5.0})
    worker = Worker(settings)
    await worker.start(http=False)
    await worker.maintenance_looked.wait()  # the start-up maintenance scans: not counted here
    database = settings.mongo.database
    try:
        with counting(database) as lone:
            assert await worker.processor.handle_alert(envelope("cost-lone")) == "applied"
        with counting(database) as burst:
            outcomes = await asyncio.gather(*(worker.processor.handle_alert(
                envelope(f"cost-burst-{n}")) for n in range(BURST)))
        assert set(outcomes) == {"applied"}
        with counting(database) as duplicate:
            assert await worker.processor.handle_alert(envelope("cost-lone")) == "already_done"
        with counting(database) as step:
            assert await worker.processor.handle_alert(
                envelope("cost-lone", "processing", "requisites")) == "applied"
    finally:
        await worker.mongo_client.drop_database(database)
        await worker.stop()
    per_alert = len(burst.seen) / BURST
    print(f"\nstore commands: lone new alert {len(lone.seen)}, burst of {BURST} new orders "
          f"{per_alert:.2f} per alert, duplicate {len(duplicate.seen)}, next step of a known "
          f"order {len(step.seen)}")
    for commands in (lone, burst, duplicate, step):
        assert commands.not_by_id() == []  # every read by _id
    assert per_alert <= 6  # from 11: writes batched, the view's reads concurrent and fewer
    assert len(duplicate.seen) <= 2
    assert len(lone.seen) <= 11  # a lone alert costs no more than before batching
