"""examples/consumer.py against the real broker: a valid event is applied once, its repeat is
a duplicate, and a body the schema refuses is rejected; acks only after the effect."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aio_pika
import pytest

from examples.consumer import apply, consume, open_store
from shared.alert import Alert
from shared.topology import ORDERS_EXCHANGE
from tests.conftest import AMQP_URL
from tests.keys import PROJECT_ID
from worker.records import Observation, transition_record

pytestmark = pytest.mark.services


def event_body(payment_id: str) -> bytes:
    alert = Alert(PROJECT_ID, payment_id, "r-1", "success", None, None)
    record = transition_record(Observation(alert, 1000, "callback", "corr"), None, 5.0)
    return json.dumps(record["event"]).encode()


async def test_example_consumer_applies_once_dedupes_and_rejects_what_the_schema_refuses(
    tmp_path: Path, amqp: aio_pika.abc.AbstractChannel,
) -> None:
    db = open_store(str(tmp_path / "orders.sqlite"))
    queue_name = "hh-test.example-consumer"
    # The queue as the example declares it, made first so that what is published waits in it.
    queue = await amqp.declare_queue(queue_name, durable=True,
                                     arguments={"x-queue-type": "quorum"})
    await queue.bind(ORDERS_EXCHANGE, "order.#")
    exchange = await amqp.get_exchange(ORDERS_EXCHANGE)
    body = event_body("example-1")
    try:
        for payload in (body, body, b'{"type": "transition"}'):
            await exchange.publish(aio_pika.Message(payload), "order.success")
        await asyncio.wait_for(consume(AMQP_URL, db, queue_name, limit=3), 20)
        assert db.execute("SELECT id, status FROM payments").fetchall() == [
            (f"{PROJECT_ID}:example-1", "success")]
        assert db.execute("SELECT count(*) FROM seen").fetchone() == (1,)
        assert apply(db, body) == "duplicate" and apply(db, b"not json") == "invalid"
        # Acked or rejected, all three: nothing waits in the queue any more.
        assert await queue.get(fail=False) is None
    finally:
        await queue.delete(if_unused=False, if_empty=False)


def test_example_consumer_reads_the_published_schema() -> None:
    from examples import consumer

    assert consumer.SCHEMA.is_file() and consumer.SCHEMA.parent.name == "schemas"
