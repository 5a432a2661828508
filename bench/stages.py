"""The stages measured against their ceilings: the worker's drain rate beside a bare baseline,
end-to-end latency, and cost as the stored data grows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import aiohttp
import pymongo

from bench.loadgen import (
    Request,
    alert_value,
    consume_timed,
    http_sender,
    open_loop,
    percentiles,
)
from shared import mongo
from shared.alert import parse_alert
from shared.envelope import AlertEnvelope
from shared.settings import Settings
from shared.topology import (
    CALLBACKS_EXCHANGE,
    IDEMPOTENCY_HEADER,
    ORDERS_EXCHANGE,
    PROCESS_QUEUE,
    callback_routing_key,
)
from worker.store import Store

EVENTS_QUEUE = "hh.bench.events"  # stands in for a downstream service's queue


def envelope(payment_id: str) -> tuple[bytes, str]:
    """What ingest would publish for a verified `success` alert, and its idempotency key."""
    value = alert_value(payment_id)
    body = json.dumps(value, separators=(",", ":"))
    key = parse_alert(value).idempotency_key
    return AlertEnvelope(
        body=body, route="success", timestamp=str(int(time.time())), key_id="rsa:bench",
        received_at=time.time(), correlation_id=uuid.uuid4().hex).to_bytes(), key


async def prefill(channel: aio_pika.abc.AbstractChannel, payment_ids: Sequence[str]) -> None:
    """Fill the process queue as ingest would (confirmed publishes, 64 in flight)."""
    exchange = await channel.get_exchange(CALLBACKS_EXCHANGE)
    routing_key = callback_routing_key("success")

    async def one(payment_id: str) -> None:
        body, key = envelope(payment_id)
        await exchange.publish(aio_pika.Message(
            body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={IDEMPOTENCY_HEADER: key}), routing_key=routing_key)

    for start in range(0, len(payment_ids), 64):
        await asyncio.gather(*(one(p) for p in payment_ids[start:start + 64]))


async def events_queue(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractQueue:
    queue = await channel.declare_queue(
        EVENTS_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    await queue.bind(ORDERS_EXCHANGE, "order.#")
    await queue.purge()
    return queue


async def processed_count(http: aiohttp.ClientSession, metrics_url: str) -> float:
    async with http.get(metrics_url) as response:
        text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("hh_worker_alerts_total{"))


async def drain_rate(metrics_url: str, expected: int, limit_s: float = 900
                     ) -> dict[str, float]:
    """Alerts per second of a running worker emptying the queue: counted from the first
    reading of its metrics to the reading that shows all `expected` processed."""
    async with aiohttp.ClientSession() as http:
        first_count, first_at = await processed_count(http, metrics_url), time.perf_counter()
        deadline = first_at + limit_s
        while (count := await processed_count(http, metrics_url)) < expected:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"worker drained {count} of {expected} in {limit_s}s")
            await asyncio.sleep(0.05)  # sampling a counter; the resolution is in the figure
        elapsed = time.perf_counter() - first_at
    done = count - first_count
    return {"alerts": done, "elapsed_s": round(elapsed, 3), "rate": round(done / elapsed, 1),
            "ms_per_alert": round(1000 * elapsed / done, 3)}


async def bare_baseline(settings: Settings, expected: int) -> dict[str, float]:
    """The least a worker could do per alert, written here: consume, one insert, one update,
    one confirmed publish, ack; same prefetch, same broker and database."""
    client: Any = mongo.client(settings.mongo)
    db = client[settings.mongo.database]
    connection = await aio_pika.connect_robust(settings.amqp.url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=settings.amqp.prefetch)
        publish_channel = await connection.channel(publisher_confirms=True)
        orders = await publish_channel.get_exchange(ORDERS_EXCHANGE)
        queue = await channel.get_queue(PROCESS_QUEUE)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            raw = json.loads(message.body)
            alert = json.loads(raw["body"])
            order_id = f"{alert['project_id']}:{alert['general']['payment_id']}"
            await db.bench_inbox.insert_one({"_id": message.headers[IDEMPOTENCY_HEADER],
                                             "body": raw["body"]})
            await db.bench_orders.update_one({"_id": order_id},
                                             {"$set": {"status": "success"}}, upsert=True)
            await orders.publish(aio_pika.Message(
                message.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="order.success", mandatory=True)
            await message.ack()

        elapsed = await consume_timed(queue, expected, on_message)
    finally:
        await connection.close()
        await client.close()
    return {"alerts": expected, "elapsed_s": round(elapsed, 3),
            "rate": round(expected / elapsed, 1),
            "ms_per_alert": round(1000 * elapsed / expected, 3)}


class EventClock:
    """Arrival time (loop time) of each order's event on the downstream queue."""

    def __init__(self, expected: int) -> None:
        self.arrived: dict[str, float] = {}
        self.expected = expected
        self.all_arrived = asyncio.Event()

    async def on_event(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        payment_id = json.loads(message.body)["payment_id"]
        self.arrived[payment_id] = asyncio.get_running_loop().time()
        await message.ack()
        if len(self.arrived) >= self.expected:
            self.all_arrived.set()


async def end_to_end(
    base_url: str, queue: aio_pika.abc.AbstractQueue, requests: Sequence[Request], rate: float,
) -> dict[str, Any]:
    """POST at a fixed rate; latency from each POST's due time to its event on hh.orders."""
    clock = EventClock(len(requests))
    tag = await queue.consume(clock.on_event)
    async with aiohttp.ClientSession() as http:
        sent = await open_loop("end to end", http_sender(http, base_url), requests, rate)
        with contextlib.suppress(TimeoutError):  # the report says how many arrived
            await asyncio.wait_for(clock.all_arrived.wait(), 120)
    await queue.cancel(tag)
    latencies = [clock.arrived[p] - due for p, due in sent.due_at.items() if p in clock.arrived]
    return {"offered_rps": rate, "requests": len(requests), "events": len(latencies),
            "statuses": dict(sent.statuses),
            "latency_ms": {k: round(v * 1000, 1) for k, v in percentiles(latencies).items()}}


# The time a batch of writes may take, per document: the client's fixed 10 s timeout killed
# this stage on a machine three times slower than usual; sized to the work, it cannot.
SECONDS_PER_STORED_DOCUMENT = 0.01


def batch_timeout_s(documents: int) -> float:
    return max(60.0, documents * SECONDS_PER_STORED_DOCUMENT)


async def store_orders(settings: Settings, count: int, batch: int = 2000) -> float:
    """Store `count` settled orders as the worker would have left them (view, log entry, inbox
    record, published marker, request-id index); a few are due for a poll. Returns seconds
    taken."""
    client: Any = mongo.client(settings.mongo)
    c = mongo.Collections.of(client[settings.mongo.database])
    now = datetime.now(UTC)
    with pymongo.timeout(batch_timeout_s(0)):  # the first command also connects
        existing = await c.orders.estimated_document_count()
    started = time.perf_counter()
    for first in range(existing, count, batch):
        ids = [f"grown-{n}" for n in range(first, min(count, first + batch))]
        order_ids = [f"bench:{p}" for p in ids]
        pairs = list(zip(order_ids, ids, strict=True))
        with pymongo.timeout(batch_timeout_s(5 * len(ids))):  # five collections written
            await _store_batch(c, now, pairs)
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


async def _store_batch(typed: mongo.Collections, now: datetime, pairs: list[tuple[str, str]]
                       ) -> None:
    # Documents cut to what the sweep and the costs read: not their stored shape.
    c: Any = typed
    ids = [p for _, p in pairs]
    order_ids = [o for o, _ in pairs]
    await asyncio.gather(
            c.orders.insert_many([{
                "_id": o, "project_id": "bench", "payment_id": p, "request_id": f"req-{p}",
                "status": "processing", "sub_status": "new", "final": False,
                "needs_review": False, "updated_at": now, "polls": 0,
                "seq": 1, "next_poll_at": now - timedelta(minutes=1) if n % 1000 == 0
                else now + timedelta(days=1)} for n, (o, p) in enumerate(pairs)]),
            c.transitions.insert_many([{
                "_id": f"{o}:1", "order_id": o, "seq": 1, "recorded_at": now,
                "source": "callback", "idempotency_key": f"{o}:processing:new",
                "routing_key": "order.processing", "event": {"event_id": uuid.uuid4().hex},
                "to": {"status": "processing", "sub_status": "new"}} for o in order_ids]),
            c.callbacks.insert_many([{"_id": f"{o}:processing:new", "payment_id": p}
                                     for o, p in pairs]),
            c.published.insert_many([{"_id": uuid.uuid4().hex, "at": now} for _ in ids]),
            c.request_ids.insert_many([{"_id": f"bench:req-{p}", "order_id": o}
                                       for o, p in pairs]),
        )


async def due_query_ms(settings: Settings, repeats: int = 3) -> dict[str, float]:
    """The hourly sweep's query for overdue orders (the only query left that finds orders to
    poll; due polls themselves come from the broker)."""
    client: Any = mongo.client(settings.mongo)
    collections = mongo.Collections.of(client[settings.mongo.database])
    store = Store.of(collections, {}, settings.poller)
    # The local server answers it by a scan of every order: its time grows with them.
    with pymongo.timeout(batch_timeout_s(0)):
        budget = batch_timeout_s(await collections.orders.estimated_document_count())
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        with pymongo.timeout(budget):
            due = [view async for view in store.views.overdue(datetime.now(UTC), 500)]
        times.append(time.perf_counter() - started)
    await client.close()
    return {"median_ms": round(1000 * statistics.median(times), 2), "found": len(due)}

