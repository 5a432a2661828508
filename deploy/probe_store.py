"""Probe the local MongoDB-compatible server and the worker's processing rate on it.

    .venv/bin/python deploy/probe_store.py [--url mongodb://127.0.0.1:27017]

Prints the cost of a find, update and replace by _id and of a filtered find at two collection
sizes (the _id operations should not grow with size), then the rate of Processor.handle_alert
at several concurrencies. Figures for the closing notes and for later benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo import AsyncMongoClient

from shared import logs
from shared.envelope import AlertEnvelope
from shared.settings import MongoSettings, ProjectSettings, Settings
from worker.app import Worker

PROJECT = "57aff4db-b45d-42bf-bc5f-b7a499a01782"


async def per_op(op: Callable[[int], Awaitable[Any]], n: int = 50) -> float:
    started = time.perf_counter()
    for i in range(n):
        await op(i)
    return (time.perf_counter() - started) * 1000 / n


async def store_costs(url: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    coll = client[f"probe_{uuid.uuid4().hex[:6]}"]["t"]
    for size in (200, 5000):
        await coll.drop()
        for start in range(0, size, 500):
            await coll.insert_many([{"_id": f"k{j}", "v": 0, "pad": "x" * 300}
                                    for j in range(start, min(size, start + 500))])
        costs = {
            "find by _id": await per_op(lambda i: coll.find_one({"_id": f"k{i}"})),
            "update by _id": await per_op(
                lambda i: coll.update_one({"_id": f"k{i}"}, {"$set": {"v": 1}})),
            "replace by _id": await per_op(lambda i: coll.replace_one({"_id": f"k{i}"}, {"v": 2})),
            "filtered find": await per_op(lambda i: coll.find_one({"v": 99}), 10),
        }
        print(f"{size:>5} documents: " + ", ".join(f"{k} {v:.1f} ms" for k, v in costs.items()))
    await client.drop_database(coll.database.name)
    await client.close()


def envelope(payment_id: str, now: int) -> AlertEnvelope:
    body = json.dumps({"project_id": PROJECT,
                       "general": {"project_id": PROJECT, "payment_id": payment_id},
                       "status": {"status": "processing", "sub_status": "new"}})
    return AlertEnvelope(body, "callback", str(now), "probe", time.time(), uuid.uuid4().hex)


async def processing_rate(url: str) -> None:
    settings = Settings(mongo=MongoSettings(url=url, database=f"probe_{uuid.uuid4().hex[:6]}"),
                        projects={PROJECT: ProjectSettings(PROJECT, ())})
    worker = Worker(settings)
    await worker.start(http=False)
    now = int(time.time())
    try:
        for concurrency in (1, 4, 16):
            gate = asyncio.Semaphore(concurrency)

            async def one(i: int, c: int = concurrency, g: asyncio.Semaphore = gate) -> None:
                async with g:
                    await worker.processor.handle_alert(envelope(f"c{c}-{i}", now))

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(300)))
            rate = 300 / (time.perf_counter() - started)
            print(f"Processor.handle_alert, new orders, concurrency {concurrency}: {rate:.0f}/s")
    finally:
        await worker.mongo_client.drop_database(settings.mongo.database)
        await worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="mongodb://127.0.0.1:27017")
    args = parser.parse_args()
    logs.configure("json", "error")
    asyncio.run(store_costs(args.url))
    asyncio.run(processing_rate(args.url))


if __name__ == "__main__":
    main()
