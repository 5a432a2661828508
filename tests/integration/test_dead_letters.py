"""Poison and exhausted messages go to hh.callbacks.dead with their reason; an operator lists,
redrives and purges them (hh-admin dlq)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest
from aiohttp.test_utils import TestClient

from shared.broker import PublishFailed
from shared.mongo import Collections
from shared.registrar import publish_registration
from shared.registration import Registration
from shared.topology import (
    CALLBACKS_EXCHANGE,
    DUE_QUEUE,
    ORDERS_EXCHANGE,
    PROCESS_QUEUE,
    REGISTER_QUEUE,
)
from tests.conftest import EventTap, wait_until
from tests.integration.test_pipeline import post
from tests.keys import PROJECT_ID, alert_body
from worker import dlq
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


async def test_dead_registration_is_redriven_to_its_own_queue(
    make_settings: Callable[..., Any], amqp: aio_pika.abc.AbstractChannel,
) -> None:
    """A registration that died during a store outage goes back to hh.orders.register, not to
    the alert queue (where it would fail as an invalid envelope and die again)."""
    settings = make_settings(worker={"quick_retries_s": [], "max_attempts": 1})
    worker = Worker(settings)
    await worker.start(http=False)
    try:
        healthy = worker.store.registrations.register

        async def store_down(doc: dict[str, Any]) -> bool:
            raise ConnectionError("simulated store outage")

        worker.store.registrations.register = store_down  # type: ignore[method-assign]
        await publish_registration(worker.broker, Registration(
            PROJECT_ID, "reg-dead", "p2p", "payin", 100, "RUB"))
        [letter] = await letters(worker, 1)
        assert letter.queue == REGISTER_QUEUE
        assert "exhausted 1 attempts" in letter.reason

        worker.store.registrations.register = healthy  # type: ignore[method-assign]  # the fix
        assert len(await dlq.redrive(worker.broker, dlq.matcher([], None, True))) == 1

        async def registered() -> bool:
            key = f"{PROJECT_ID}:reg-dead"
            return await worker.store.collections.registrations.find_one({"_id": key}) is not None
        await wait_until(registered, 20, "the redriven registration recorded")
        assert await dlq.list_letters(worker.broker) == []  # it did not die again
    finally:
        await worker.mongo_client.drop_database(settings.mongo.database)
        await worker.stop()


def test_origin_of_a_dead_letter() -> None:
    assert dlq.origin({"hh-queue": REGISTER_QUEUE}) == REGISTER_QUEUE
    # Dead-lettered by the broker itself at the delivery limit: x-death, newest first.
    by_broker = {"x-death": [
        {"queue": PROCESS_QUEUE, "exchange": CALLBACKS_EXCHANGE, "routing-keys": ["callback.x"],
         "reason": "delivery_limit"},
        {"queue": "hh.retry.1s", "exchange": "hh.callbacks.retry",
         "routing-keys": ["hh.retry.1s"], "reason": "expired"}]}
    assert dlq.origin(by_broker) == PROCESS_QUEUE
    assert dlq.origin({}) == PROCESS_QUEUE  # an older letter: alerts were all there was


async def test_a_registration_retried_later_comes_back_to_its_own_queue(
    make_settings: Callable[..., Any], amqp: aio_pika.abc.AbstractChannel,
) -> None:
    """A failure that may pass sends the message to a retry queue; when it comes back it goes
    to the queue it was taken from (it used to come back to the alert queue, where a
    registration fails as an invalid envelope and dies)."""
    settings = make_settings(worker={"quick_retries_s": [], "retry_delays_s": [1],
                                     "max_attempts": 3})
    worker = Worker(settings)
    await worker.start(http=False)
    try:
        healthy, calls = worker.store.registrations.register, []

        async def fails_once(doc: dict[str, Any]) -> bool:
            calls.append(doc["_id"])
            if len(calls) == 1:
                raise ConnectionError("simulated store outage")
            return await healthy(doc)

        worker.store.registrations.register = fails_once  # type: ignore[method-assign]
        await publish_registration(worker.broker, Registration(
            PROJECT_ID, "reg-later", "p2p", "payin", 100, "RUB"))

        async def registered() -> bool:
            key = f"{PROJECT_ID}:reg-later"
            return await worker.store.collections.registrations.find_one({"_id": key}) is not None
        await wait_until(registered, 20, "the retried registration recorded")
        assert len(calls) == 2
        assert await dlq.list_letters(worker.broker) == []
        assert worker.metrics.failures.labels("permanent")._value.get() == 0
    finally:
        await worker.mongo_client.drop_database(settings.mongo.database)
        await worker.stop()


async def test_a_message_in_the_due_queue_that_is_no_check_is_dead_lettered(
    worker: Worker, amqp: aio_pika.abc.AbstractChannel,
) -> None:
    await amqp.default_exchange.publish(aio_pika.Message(b'{"order_id": 1}'), DUE_QUEUE)
    [letter] = await letters(worker, 1)
    assert (letter.reason, letter.queue, letter.attempts) == (
        "invalid: not a check", DUE_QUEUE, 1)
