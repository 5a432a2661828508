"""What one alert, one due poll and an idle minute cost the store, at the orders stored now:
store commands (a PyMongo command listener) and time, measured in-process against the local
services, and the store server's CPU while the worker idles.

    python -m bench.costs --sizes 10000 100000 1000000     (HH_CONFIG as for make bench)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from pymongo import monitoring

from bench import stages
from shared import logs, mongo
from shared.envelope import AlertEnvelope
from shared.settings import Settings, load_settings
from shared.wire import alert_value, compact_json
from worker.app import Worker
from worker.checks import Check
from worker.records import utc

PROJECT_ID = "57aff4db-b45d-42bf-bc5f-b7a499a01782"


class _Count(monitoring.CommandListener):
    def __init__(self) -> None:
        self.database = ""
        self.commands = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.database and event.command_name not in (
                "hello", "ismaster", "ping", "endSessions"):
            self.commands += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


COUNT = _Count()
monitoring.register(COUNT)


def _envelope(payment_id: str) -> AlertEnvelope:
    value = alert_value(PROJECT_ID, payment_id, None, "processing", "new",
                        payment={"amount": 100, "currency": "RUB"})
    return AlertEnvelope(compact_json(value).decode(), "callback", str(int(time.time())),
                         "rsa:bench", time.time(), uuid.uuid4().hex)


def _store_cpu_s() -> float:
    """CPU seconds the local store server (FerretDB) has used so far."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"ferretdb-" not in (proc / "cmdline").read_bytes().split(b"\0")[0]:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return float("nan")


async def measure(settings: Settings, alerts: int = 200, idle_s: float = 30.0) -> dict[str, Any]:
    """Per new alert, per due poll (a widget order: the whole poll but the HTTP call), and an
    idle worker's store load per minute."""
    settings = replace(settings, poller=replace(settings.poller, enabled=False),
                       worker=replace(settings.worker, maintenance_interval_s=86400.0),
                       retention=replace(settings.retention, enabled=False))
    worker = Worker(settings)
    await worker.start(http=False)
    await worker.maintenance_looked.wait()
    COUNT.database = settings.mongo.database
    run = uuid.uuid4().hex[:6]
    try:
        COUNT.commands, started = 0, time.perf_counter()
        for n in range(alerts):  # one at a time: the cost of one alert, not of a batch
            await worker.processor.handle_alert(_envelope(f"cost-{run}-{n}"))
        alert_ms = (time.perf_counter() - started) * 1000 / alerts
        alert_commands = COUNT.commands / alerts

        polls = []
        for n in range(20):
            order_id = f"{PROJECT_ID}:poll-{run}-{n}"
            await worker.store.registrations.register({
                "_id": order_id, "project_id": PROJECT_ID, "payment_id": f"poll-{run}-{n}",
                "product": "widget", "flow": "payin", "amount": 1, "currency": "RUB",
                "registered_at": utc(time.time())})
            await worker.store.views.refresh(order_id)
            COUNT.commands, started = 0, time.perf_counter()
            assert await worker.poller.on_check(Check(order_id, 0, 0)) == "polled"
            polls.append((time.perf_counter() - started, COUNT.commands))
        poll_ms = 1000 * statistics.median(p[0] for p in polls)
        poll_commands = statistics.median(p[1] for p in polls)

        # What the work above noted for the console's activity goes out now, not a few seconds
        # into the idle minute (where it counted as 3 commands a minute of "idle" load).
        await worker.processor.activity.flush()
        COUNT.commands, cpu = 0, _store_cpu_s()
        await asyncio.sleep(idle_s)
        idle_per_min = COUNT.commands * 60 / idle_s
        idle_cpu_per_min = (_store_cpu_s() - cpu) * 60 / idle_s
    finally:
        COUNT.database = ""
        await worker.stop()
    return {"alert_ms": round(alert_ms, 2), "alert_commands": round(alert_commands, 2),
            "poll_ms": round(poll_ms, 2), "poll_commands": poll_commands,
            "idle_commands_per_min": round(idle_per_min, 1),
            "idle_store_cpu_s_per_min": round(idle_cpu_per_min, 3)}


async def main(sizes: list[int], alerts: int, idle_s: float) -> list[dict[str, Any]]:
    settings = load_settings()
    logs.configure("json", "warning")
    database = f"hh_costs_{uuid.uuid4().hex[:6]}"
    settings = replace(settings, mongo=replace(settings.mongo, database=database,
                                               timeout_ms=600_000))
    rows = []
    try:
        for size in sizes:
            fill_s = await stages.store_orders(settings, size)
            row = {"orders": size, "fill_s": round(fill_s, 1),
                   **await measure(settings, alerts, idle_s)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        client = mongo.client(settings.mongo)
        await client.drop_database(database)
        await client.close()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    measured = asyncio.run(main(args.sizes, args.alerts, args.idle_s))
    if args.out is not None:
        args.out.write_text(json.dumps(measured, indent=2) + "\n")
