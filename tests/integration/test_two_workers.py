"""Two worker processes race on the same orders: every order ends right, the log has no gap
and no duplicate step (coordination by unique inserts only)."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.mongo import Collections
from shared.settings import Settings
from tests.conftest import LOG_LINES, EventTap, toml_text, wait_until, write_config
from tests.integration.test_pipeline import post
from tests.keys import alert_body

pytestmark = pytest.mark.services
ORDERS = 40
STEPS = [("processing", "new"), ("processing", "requisites"), ("processing", "paid")]


@pytest.fixture
async def two_workers(
    settings: Settings, tmp_path: Path, old_rsa_pem: bytes
) -> AsyncIterator[list[list[bytes]]]:
    """Two `python -m worker` processes; yields each one's output lines as they come."""
    raw = write_config(tmp_path, old_rsa_pem, mongo={"database": settings.mongo.database})
    config = tmp_path / "worker.toml"
    config.write_text(toml_text(raw))
    env = {**os.environ, "HH_CONFIG": str(config), "HH_LOG_FORMAT": "json"}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker", env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        for _ in range(2)
    ]
    output: list[list[bytes]] = [[], []]
    for i, proc in enumerate(procs):  # wait for each to say it consumes
        assert proc.stdout is not None
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            output[i].append(line)
            assert line, b"".join(output[i]).decode()
            if b'"worker_started"' in line:
                break
    readers = [asyncio.create_task(_collect(p, output[i])) for i, p in enumerate(procs)]
    yield output
    for proc in procs:
        proc.terminate()
    codes = [await asyncio.wait_for(p.wait(), 30) for p in procs]
    await asyncio.gather(*readers)
    LOG_LINES.extend(line.decode(errors="replace") for out in output for line in out)
    assert codes == [0, 0], [b"".join(o).decode()[-3000:] for o in output]


async def _collect(proc: asyncio.subprocess.Process, sink: list[bytes]) -> None:
    assert proc.stdout is not None
    async for line in proc.stdout:
        sink.append(line)


async def test_two_worker_processes_agree(
    ingest: TestClient[Any, Any], two_workers: list[list[bytes]], events: EventTap,
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

    shares = [sum(b'"alert_processed"' in line for line in out) for out in two_workers]
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
