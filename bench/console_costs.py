"""What the console's lookups and lists cost as orders accumulate: store commands (a PyMongo
command listener) and time, at each size of stored history, against the local services.

    python -m bench.console_costs --sizes 100000 1000000     (HH_CONFIG as for make bench)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import monitoring

from bench import stages
from shared import mongo
from shared.settings import RetentionSettings, Settings, load_settings
from worker import story
from worker.activity import minute_id

DATABASE = "hh_console_costs"


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == DATABASE:
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def seed_lists(c: mongo.Collections) -> None:
    """What the lists hold in a busy week: 30 payments given up, 30 anomalies, an hour of
    activity (20 events a minute)."""
    now = datetime.now(UTC)
    await c.attention.delete_many({})
    await c.anomalies.delete_many({})
    await c.attention.insert_many([{"_id": f"bench:review-{n}", "status": "processing",
                                    "sub_status": "new", "at": now, "reviewed": None}
                                   for n in range(30)])
    # Anomalies cut to what the list shows: not their stored shape.
    anomalies: Any = c.anomalies
    await anomalies.insert_many([{
        "_id": f"anomaly:bench:a-{n}:decline:None", "order_id": f"bench:a-{n}",
        "recorded_at": now, "event": {"status": "success", "reported": {"status": "decline"}}}
        for n in range(30)])
    for back in range(60):
        at = time.time() - 60 * back
        await c.activity.replace_one({"_id": minute_id(at)}, {"events": [
            {"at": at, "order_id": f"bench:grown-{n}", "routing_key": "order.success",
             "source": "callback", "type": "transition", "status": "success",
             "sub_status": None} for n in range(20)]}, upsert=True)


async def measure(c: mongo.Collections, listener: Commands, size: int) -> dict[str, Any]:
    probe = f"grown-{size // 2}"
    retention = RetentionSettings()
    reads: dict[str, Callable[[], Awaitable[Any]]] = {
        "find by payment id": lambda: story.find(c, "bench", probe),
        "find by request id": lambda: story.find(c, "bench", f"req-{probe}"),
        "find by idempotency key": lambda: story.find(c, "", f"bench:{probe}:processing:new"),
        "a payment's story": lambda: story.story(c, f"bench:{probe}", retention),
        "needs review (list)": lambda: story.needs_review(c),
        "anomalies (list)": lambda: story.anomalies(c),
        "recent activity (list)": lambda: story.activity(c),
    }
    rows = {}
    for name, read in reads.items():
        found = await read()
        assert found, f"{name}: found nothing"
        times, counts = [], []
        for _ in range(5):
            before = listener.count
            started = time.perf_counter()
            await read()
            times.append((time.perf_counter() - started) * 1000)
            counts.append(listener.count - before)
        rows[name] = {"ms": round(statistics.median(times), 2), "commands": max(counts)}
    return rows


async def run(settings: Settings, sizes: list[int]) -> dict[int, Any]:
    listener = Commands()
    monitoring.register(listener)
    client: Any = mongo.client(settings.mongo)
    c = mongo.Collections.of(client[DATABASE])
    settings = _with_database(settings)
    results: dict[int, Any] = {}
    try:
        for size in sizes:
            filled = await stages.store_orders(settings, size)
            await seed_lists(c)
            results[size] = await measure(c, listener, size)
            print(f"{size:>9,} orders (stored in {filled:.0f} s): " + ", ".join(
                f"{k} {v['ms']} ms/{v['commands']}" for k, v in results[size].items()),
                flush=True)
    finally:
        await client.close()
    return results


def _with_database(settings: Settings) -> Settings:
    return replace(settings, mongo=replace(settings.mongo, database=DATABASE))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.console_costs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=Path("docs/console-costs.json"))
    args = parser.parse_args()
    results = asyncio.run(run(load_settings(), args.sizes))
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
