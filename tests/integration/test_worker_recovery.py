"""Every worker step is safe to repeat: a crash between two writes, then redelivery."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.broker import PublishFailed
from shared.mongo import Collections
from shared.topology import ORDERS_EXCHANGE
from tests.conftest import EventTap, wait_until
from tests.integration.test_pipeline import post
from tests.keys import PROJECT_ID, alert_body
from worker.app import Worker

pytestmark = pytest.mark.services


class SimulatedCrash(Exception):
    pass


def fail_once(
    target: Callable[..., Awaitable[Any]], when: Callable[..., bool], error: Exception
) -> Callable[..., Awaitable[Any]]:
    state = {"failed": False}

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not state["failed"] and when(*args, **kwargs):
            state["failed"] = True
            raise error
        return await target(*args, **kwargs)

    return wrapper


@pytest.fixture
async def worker_without_relay(make_settings: Callable[..., Any], amqp: Any) -> Any:
    """The outbox relay runs hourly: whatever is published here, redelivery published it."""
    settings = make_settings(worker={"maintenance_interval_s": 3600})
    worker = Worker(settings)
    await worker.start(http=False)
    yield worker
    await worker.mongo_client.drop_database(settings.mongo.database)
    await worker.stop()


@pytest.mark.parametrize("crash_at", ["event publish", "published mark"])
async def test_crash_between_transition_insert_and_ack_has_one_effect(
    ingest: TestClient[Any, Any], worker_without_relay: Worker, events: EventTap,
    crash_at: str,
) -> None:
    worker = worker_without_relay
    db = worker.store.collections
    if crash_at == "event publish":  # after the transition insert, before the event is out
        worker.broker.publish = fail_once(  # type: ignore[method-assign]
            worker.broker.publish, lambda exchange, *a, **k: exchange == ORDERS_EXCHANGE,
            PublishFailed("simulated crash"))
    else:  # the event is out, the crash comes before it is marked published
        worker.store.outbox.mark = fail_once(  # type: ignore[method-assign]
            worker.store.outbox.mark, lambda *a, **k: True, SimulatedCrash())

    assert await post(ingest, alert_body("pay-crash", "success", None), "success") == 200

    async def settled() -> dict[str, Any] | None:
        doc = await db.callbacks.find_one({"payment_id": "pay-crash"})
        return doc if doc and doc["outcome"] else None
    inbox = await wait_until(settled, 30, "the redelivered alert to settle")
    assert inbox["outcome"] == "applied"

    order_id = f"{PROJECT_ID}:pay-crash"
    transitions = await db.transitions.find({"order_id": order_id}).to_list()
    assert len(transitions) == 1
    event_id = transitions[0]["event"]["event_id"]
    assert await db.published.find_one({"_id": event_id}) is not None
    published = await events.drain()
    # Re-publishing after a crash is allowed, but only ever the same event.
    assert {e["event_id"] for e in published} == {transitions[0]["event"]["event_id"]}
    assert len(published) == (1 if crash_at == "event publish" else 2)
    view = await db.orders.find_one({"_id": order_id})
    assert view is not None and view["status"] == "success"
    failures = worker.metrics.failures.labels("transient")._value.get()
    assert failures == 1  # the first try failed, the retry finished the work


async def test_relay_publishes_what_a_crashed_worker_left(
    worker: Worker, events: EventTap, db: Collections,
) -> None:
    """A transition whose writer died before publishing is published by the outbox relay."""
    from shared.alert import Alert
    from worker.records import Observation, transition_record

    obs = Observation(Alert(PROJECT_ID, "pay-orphan", "r", "decline", None, None), 1,
                      "callback", "c")
    # Its writer died before publishing; it is older than the relay's grace (2 s here).
    record = transition_record(obs, None, time.time() - 3)
    await db.transitions.insert_one(record)
    [event] = await events.wait(1)
    assert event["event_id"] == record["event"]["event_id"]

    async def marked() -> bool:
        return await db.published.find_one({"_id": record["event"]["event_id"]}) is not None
    await wait_until(marked, 10, "the relayed event to be marked")


async def test_failure_waits_in_the_retry_queue_then_succeeds(
    make_settings: Callable[..., Any], ingest: TestClient[Any, Any], events: EventTap,
    db: Collections,
) -> None:
    """With no in-place retries, a failed message goes to the 1 s retry queue, not a hot loop,
    and comes back to the work queue by itself."""
    settings = make_settings(worker={"quick_retries_s": []})
    worker = Worker(settings)
    await worker.start(http=False)
    try:
        worker.broker.publish = fail_once(  # type: ignore[method-assign]
            worker.broker.publish, lambda exchange, *a, **k: exchange == ORDERS_EXCHANGE,
            PublishFailed("simulated outage"))
        failed_at = time.monotonic()
        assert await post(ingest, alert_body("pay-later", "decline", None), "decline") == 200
        [event] = await events.wait(1)
        assert event["status"] == "decline"
        assert time.monotonic() - failed_at >= 1.0  # it waited out the retry queue's TTL
        assert worker.metrics.failures.labels("transient")._value.get() == 1
    finally:
        await worker.mongo_client.drop_database(settings.mongo.database)
        await worker.stop()
