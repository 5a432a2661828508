"""Two worker processes race on the same orders: every order ends right, the log has no gap
and no duplicate step (coordination by unique inserts only)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.mongo import Collections
from shared.settings import Settings
from tests.conftest import EventTap, toml_text, wait_until, write_config
from tests.integration.test_pipeline import post
from tests.keys import alert_body
from tests.processes import ServiceProcess

pytestmark = pytest.mark.services
ORDERS = 40
STEPS = [("processing", "new"), ("processing", "requisites"), ("processing", "paid")]


@pytest.fixture
async def two_workers(
    settings: Settings, tmp_path: Path, old_rsa_pem: bytes
) -> AsyncIterator[list[ServiceProcess]]:
    """Two `python -m worker` processes on the test's database."""
    raw = write_config(tmp_path, old_rsa_pem, mongo={"database": settings.mongo.database})
    config = tmp_path / "worker.toml"
    config.write_text(toml_text(raw))
    workers = [await ServiceProcess.start(config) for _ in range(2)]
    yield workers
    codes = [await w.stop() for w in workers]
    assert codes == [0, 0], [w.output()[-3000:] for w in workers]


async def test_two_worker_processes_agree(
    ingest: TestClient[Any, Any], two_workers: list[ServiceProcess], events: EventTap,
    db: Collections,
) -> None:
    rng = random.Random(7)
    now = int(time.time())
    alerts: list[tuple[bytes, str, int]] = []
    expected: dict[str, str] = {}
    for n in range(ORDERS):
        payment_id = f"race-{n}"
        final = "success" if n % 2 else "decline"
        expected[payment_id] = final
        for offset, (status, sub) in enumerate(STEPS):
            alerts.append((alert_body(payment_id, status, sub), "callback", now - 10 + offset))
        alerts.append((alert_body(payment_id, final, None), final, now - 5))
    distinct = len(alerts)
    alerts += rng.sample(alerts, distinct // 4)  # a quarter again, as HighHelp's repeats
    rng.shuffle(alerts)
    for start in range(0, len(alerts), 25):
        batch = alerts[start:start + 25]
        codes = await asyncio.gather(*(post(ingest, b, r, ts) for b, r, ts in batch))
        assert codes == [200] * len(batch)

    async def all_settled() -> bool:
        return await db.callbacks.count_documents({"outcome": {"$ne": None}}) == distinct
    await wait_until(all_settled, 90, f"{distinct} distinct alerts settled by two workers")

    shares = [worker.count("alert_processed") for worker in two_workers]
    assert all(shares), f"both workers must take part: {shares}"
    print(f"alerts processed per worker: {shares}")

    for payment_id, final in expected.items():
        view = await db.orders.find_one({"payment_id": payment_id})
        assert view is not None and view["status"] == final, payment_id
        log = await db.transitions.find({"order_id": view["_id"]}).sort("seq", 1).to_list()
        assert [t["seq"] for t in log] == list(range(1, len(log) + 1)), "gap in the log"
        steps = [(t["to"]["status"], t["to"]["sub_status"]) for t in log]
        assert len(set(steps)) == len(steps), f"duplicate step {steps}"
        assert steps[-1] == (final, None) and view["seq"] == len(log)

    async def all_events() -> list[dict[str, Any]] | None:
        want = await db.transitions.count_documents({})
        got = await events.drain()
        return got if len({e["event_id"] for e in got}) >= want else None
    published = await wait_until(all_events, 30, "every transition's event")
    logged_ids = {t["event"]["event_id"] for t in await db.transitions.find({}).to_list()}
    assert {e["event_id"] for e in published} == logged_ids
