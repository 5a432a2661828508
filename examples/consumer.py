"""A downstream consumer of hh-callbacks' order events, in a few lines: its own durable queue
bound to hh.orders, each event validated against the published schema, deduplicated by
event_id, and acked only after its own effect is stored (here: a row in SQLite, written in the
same transaction as the event_id that dedupes it).

    python examples/consumer.py [amqp://guest:guest@127.0.0.1:5672/] [orders.sqlite]
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

import aio_pika
from jsonschema import Draft7Validator

SCHEMA = Path(__file__).resolve().parent.parent / "shared" / "schemas" / "order-event.v1.json"
VALIDATOR = Draft7Validator(json.loads(SCHEMA.read_text()))


def open_store(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY)")
    db.execute("CREATE TABLE IF NOT EXISTS payments (id TEXT PRIMARY KEY, status TEXT)")
    return db


def apply(db: sqlite3.Connection, body: bytes) -> str:
    """The consumer's effect, once per event_id: 'applied', 'duplicate' or 'invalid'."""
    try:
        event = json.loads(body)
    except ValueError:
        return "invalid"
    if not VALIDATOR.is_valid(event) or not event["schema_version"].startswith("1."):
        return "invalid"
    with db:  # one transaction: the effect and the event_id that dedupes it
        if db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (event["event_id"],)).rowcount == 0:
            return "duplicate"
        if event["type"] == "transition":  # anomalies and stale orders: a person's job
            db.execute("INSERT OR REPLACE INTO payments VALUES (?, ?)",
                       (f"{event['project_id']}:{event['payment_id']}", event["status"]))
    return "applied"


async def consume(url: str, db: sqlite3.Connection, queue_name: str = "shop.payments",
                  limit: int | None = None) -> None:
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=16)
        queue = await channel.declare_queue(queue_name, durable=True,
                                            arguments={"x-queue-type": "quorum"})
        await queue.bind("hh.orders", "order.#")
        handled = 0
        async with queue.iterator() as messages:
            async for message in messages:
                outcome = apply(db, message.body)
                if outcome == "invalid":
                    await message.reject()  # not ours to fix; a dead-letter policy keeps it
                else:
                    await message.ack()  # only now: the effect is committed
                print(outcome, message.routing_key, flush=True)
                handled += 1
                if limit is not None and handled >= limit:
                    return


if __name__ == "__main__":
    amqp_url = sys.argv[1] if len(sys.argv) > 1 else "amqp://guest:guest@127.0.0.1:5672/"
    store = open_store(sys.argv[2] if len(sys.argv) > 2 else "orders.sqlite")
    asyncio.run(consume(amqp_url, store))
