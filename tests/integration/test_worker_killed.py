"""A worker killed with SIGKILL mid-stream, then a fresh one started: no alert lost, no
duplicate transition, and every event of a transition carries that transition's event_id."""

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
ORDERS = 60


@pytest.fixture
async def worker_config(
    settings: Settings, tmp_path: Path, old_rsa_pem: bytes
) -> AsyncIterator[Path]:
    raw = write_config(tmp_path, old_rsa_pem, mongo={"database": settings.mongo.database})
    path = tmp_path / "worker.toml"
    path.write_text(toml_text(raw))
    yield path


async def test_worker_killed_mid_stream_loses_nothing(
    ingest: TestClient[Any, Any], worker_config: Path, events: EventTap, db: Collections,
) -> None:
    rng = random.Random(3)
    now = int(time.time())
    alerts, expected = [], {}
    for n in range(ORDERS):
        final = "success" if n % 3 else "decline"
        expected[f"kill-{n}"] = final
        alerts += [(alert_body(f"kill-{n}", "processing", "new"), "callback", now - 9),
                   (alert_body(f"kill-{n}", "processing", "requisites"), "callback", now - 8),
                   (alert_body(f"kill-{n}", final, None), final, now - 7)]
    distinct = len(alerts)
    alerts += rng.sample(alerts, distinct // 4)
    rng.shuffle(alerts)

    first = await ServiceProcess.start(worker_config)
    half = len(alerts) // 2
    for start in range(0, half, 20):
        batch = alerts[start:min(start + 20, half)]
        codes = await asyncio.gather(*(post(ingest, b, r, t) for b, r, t in batch))
        assert codes == [200] * len(batch)

    async def busy() -> bool:
        return first.count("alert_processed") >= 30
    await wait_until(busy, 30, "the first worker to be mid-stream")
    await first.kill()  # SIGKILL: no drain, unacked messages return to the queue
    killed_after = first.count("alert_processed")

    second = await ServiceProcess.start(worker_config)
    try:
        for start in range(half, len(alerts), 20):
            batch = alerts[start:start + 20]
            assert await asyncio.gather(*(post(ingest, b, r, t) for b, r, t in batch)) == (
                [200] * len(batch))

        async def all_recorded() -> bool:
            return await db.callbacks.count_documents({}) == distinct
        await wait_until(all_recorded, 60, f"all {distinct} distinct alerts recorded")
    finally:
        assert await second.stop() == 0, second.output()[-3000:]
    print(f"\nkilled after {killed_after} alerts processed; the second worker processed "
          f"{second.count('alert_processed')}")

    for payment_id, final in expected.items():
        view = await db.orders.find_one({"payment_id": payment_id})
        assert view is not None and view["status"] == final, payment_id
        log = await db.transitions.find({"order_id": view["_id"]}).sort("seq", 1).to_list()
        assert [t["seq"] for t in log] == list(range(1, len(log) + 1))
        steps = [(t["to"]["status"], t["to"]["sub_status"]) for t in log]
        assert len(set(steps)) == len(steps), f"duplicate transition in {payment_id}: {steps}"

    logged = {t["event"]["event_id"] for t in await db.transitions.find({}).to_list()}

    async def every_event() -> list[dict[str, Any]] | None:
        got = await events.drain()
        return got if {e["event_id"] for e in got} >= logged else None
    published = await wait_until(every_event, 30, "every transition's event")
    assert {e["event_id"] for e in published} == logged  # re-published maybe, never new ones
