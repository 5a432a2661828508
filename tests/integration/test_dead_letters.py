"""Poison and exhausted messages go to hh.callbacks.dead with their reason; an operator lists,
redrives and purges them (hh-admin dlq)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest
from aiohttp.test_utils import TestClient

from admin import dlq
from shared.broker import PublishFailed
from shared.mongo import Collections
from shared.topology import CALLBACKS_EXCHANGE, ORDERS_EXCHANGE
from tests.conftest import EventTap, wait_until
from tests.integration.test_pipeline import post
from tests.keys import alert_body
from worker.app import Worker

pytestmark = pytest.mark.services


async def letters(worker: Worker, count: int) -> list[dlq.DeadLetter]:
    async def enough() -> list[dlq.DeadLetter] | None:
        found = await dlq.list_letters(worker.broker)
        return found if len(found) >= count else None
    result: list[dlq.DeadLetter] = await wait_until(enough, 20, f"{count} dead letters")
    return result


async def test_poison_messages_are_dead_lettered_with_their_reason(
    worker: Worker, amqp: aio_pika.abc.AbstractChannel,
) -> None:
    exchange = await amqp.get_exchange(CALLBACKS_EXCHANGE)
    await exchange.publish(aio_pika.Message(b"not an envelope"), "callback.x")
    bad_alert = {"v": 1, "body": '{"general": {}}', "route": "callback", "timestamp": "1",
                 "key_id": "k", "received_at": 1.0, "correlation_id": "c-poison"}
    await exchange.publish(aio_pika.Message(json.dumps(bad_alert).encode()), "callback.x")
    found = await letters(worker, 2)
    reasons = sorted(letter.reason for letter in found)
    assert reasons[0].startswith("invalid: bad envelope")
    assert reasons[1] == "invalid: missing_status"
    assert all(letter.attempts == 1 and letter.dead_at for letter in found)
    assert len(await dlq.list_letters(worker.broker)) == 2  # listing takes nothing off
    assert await dlq.purge(worker.broker) == 2
    assert await dlq.list_letters(worker.broker) == []


async def test_exhausted_message_is_redriven_after_the_fix(
    make_settings: Callable[..., Any], ingest: TestClient[Any, Any], events: EventTap,
    db: Collections,
) -> None:
    settings = make_settings(worker={"quick_retries_s": [], "retry_delays_s": [1],
                                     "max_attempts": 2})
    worker = Worker(settings)
    await worker.start(http=False)
    try:
        healthy = worker.broker.publish

        async def events_down(exchange: str, *args: Any, **kwargs: Any) -> None:
            if exchange == ORDERS_EXCHANGE:
                raise PublishFailed("simulated outage")
            await healthy(exchange, *args, **kwargs)

        worker.broker.publish = events_down  # type: ignore[method-assign]
        assert await post(ingest, alert_body("pay-dead", "success", None), "success") == 200
        [letter] = await letters(worker, 1)
        assert letter.attempts == 2 and "exhausted 2 attempts: PublishFailed" in letter.reason

        worker.broker.publish = healthy  # type: ignore[method-assign]  # the fix
        sent = await dlq.redrive(worker.broker, dlq.matcher([letter.message_id], None, False))
        assert [s.message_id for s in sent] == [letter.message_id]
        [event] = await events.wait(1)
        assert (event["payment_id"], event["status"]) == ("pay-dead", "success")
        assert await dlq.list_letters(worker.broker) == []
    finally:
        await worker.mongo_client.drop_database(settings.mongo.database)
        await worker.stop()
