"""The MongoDB-compatible server stopped while the worker is busy: messages wait and retry with
delay; once it is back every alert is processed exactly once in effect, none dead-lettered."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared import mongo
from tests.conftest import wait_until
from tests.integration.test_pipeline import post
from tests.keys import PROJECT_ID, alert_body
from worker import dlq
from worker.app import Worker

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("HH_SERVICES_DIR", Path.home() / ".local/share/hh-callbacks"))


async def services_start() -> None:
    proc = await asyncio.create_subprocess_exec("bash", str(ROOT / "deploy/services.sh"), "start")
    assert await asyncio.wait_for(proc.wait(), 300) == 0


async def test_store_outage_delays_but_loses_nothing(
    make_settings: Callable[..., Any], ingest: TestClient[Any, Any],
) -> None:
    pid_file = STATE / "ferretdb.pid"
    if not pid_file.exists():
        pytest.fail(f"{pid_file} missing: the local server was not started by deploy/services.sh")
    settings = make_settings(mongo={"timeout_ms": 1000},
                             worker={"retry_delays_s": [1, 5], "max_attempts": 30})
    worker = Worker(settings)
    await worker.start(http=False)
    client = mongo.client(settings.mongo)
    db = mongo.Collections.of(client[settings.mongo.database])
    try:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the store dies mid-stream
        for n in range(30):
            for status in ("processing", "success"):
                body = alert_body(f"store-{n}", status, "new" if status == "processing" else None)
                assert await post(ingest, body, "callback" if status == "processing" else
                                  "success") == 200

        async def failing() -> bool:
            return worker.metrics.failures.labels("transient")._value.get() > 0
        await wait_until(failing, 30, "the worker to notice the outage")
        await services_start()

        async def all_final() -> bool:
            return await db.orders.count_documents({"final": True}) == 30
        await wait_until(all_final, 120, "30 orders final after the store returned", every=0.5)
        for n in range(30):
            log = await db.transitions.find({"order_id": f"{PROJECT_ID}:store-{n}"}).to_list()
            assert len(log) <= 2 and log[-1]["to"]["status"] == "success"
        assert await dlq.list_letters(worker.broker) == []
        print(f"\nstore outage: {worker.metrics.failures.labels('transient')._value.get():.0f} "
              "transient failures retried, 0 dead-lettered")
    finally:
        await services_start()  # whatever happened above, leave the server running
        await client.drop_database(settings.mongo.database)
        await client.close()
        await worker.stop()
