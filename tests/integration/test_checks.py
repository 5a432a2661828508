"""The poll schedule kept by the broker: what schedules a check, what a due check does with an
order that moved on, and an idle worker that asks the store nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest
from aiohttp.test_utils import TestClient

from shared.registrar import publish_registration
from shared.registration import Registration
from shared.settings import Settings
from shared.topology import DUE_QUEUE
from tests.conftest import wait_until
from tests.integration.test_pipeline import post
from tests.keys import PROJECT_ID, alert_body
from tests.store_commands import counting
from worker.app import Worker
from worker.checks import Check

pytestmark = pytest.mark.services


async def due_checks(channel: aio_pika.abc.AbstractChannel, count: int, prefix: str
                     ) -> list[Check]:
    """The due checks of this test's orders (payment ids starting with `prefix`): another
    test's check may still come out of a wait queue."""
    queue = await channel.get_queue(DUE_QUEUE, ensure=False)
    found: list[Check] = []

    async def enough() -> bool:
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            check = Check.from_bytes(message.body)
            if check.order_id.startswith(f"{PROJECT_ID}:{prefix}"):
                found.append(check)
        return len(found) >= count
    await wait_until(enough, 20, f"{count} due checks")
    return found


@pytest.fixture
async def quiet_worker(make_settings: Callable[..., Settings], amqp: Any
                       ) -> Any:
    """A worker whose due checks wait for the test (no consumer), with short delays and the
    hourly maintenance really hourly."""
    settings = make_settings(poller={"enabled": False, "stale_after_s": 0.3},
                             worker={"maintenance_interval_s": 3600})
    worker = Worker(settings)
    await worker.start(http=False)
    yield worker
    await worker.mongo_client.drop_database(settings.mongo.database)
    await worker.stop()


async def test_changes_and_registrations_schedule_a_check_finals_do_not(
    quiet_worker: Worker, ingest: TestClient[Any, Any], amqp: aio_pika.abc.AbstractChannel,
) -> None:
    assert await post(ingest, alert_body("chk-1", "processing", "new")) == 200
    assert await post(ingest, alert_body("chk-2", "success", None), "success") == 200
    await publish_registration(quiet_worker.broker, Registration(
        PROJECT_ID, "chk-3", "p2p", "payin", 100, "RUB"))
    checks = await due_checks(amqp, 2, "chk-")
    await asyncio.sleep(0.5)  # one more wait period: a check for the final order would be here
    checks += await due_checks(amqp, 0, "chk-")
    assert sorted((c.order_id, c.seq, c.step) for c in checks) == [
        (f"{PROJECT_ID}:chk-1", 1, 0), (f"{PROJECT_ID}:chk-3", 0, 0)]


async def test_a_check_for_an_order_that_moved_on_or_settled_is_dropped(
    quiet_worker: Worker, ingest: TestClient[Any, Any], amqp: aio_pika.abc.AbstractChannel,
) -> None:
    order_id = f"{PROJECT_ID}:chk-moved"
    assert await post(ingest, alert_body("chk-moved", "processing", "new")) == 200
    assert await post(ingest, alert_body("chk-moved", "processing", "requisites")) == 200
    [first, second] = sorted(await due_checks(amqp, 2, "chk-moved"), key=lambda c: c.seq)
    poller = quiet_worker.poller
    with counting(quiet_worker.settings.mongo.database) as commands:
        assert await poller.on_check(first) == "dropped"  # seq 1: the order is at 2
    assert [c[0] for c in commands.seen] == ["find"] and not commands.not_by_id()
    assert await post(ingest, alert_body("chk-moved", "success", None), "success") == 200

    async def settled() -> bool:
        view = await quiet_worker.store.collections.orders.find_one({"_id": order_id})
        return bool(view and view["final"])
    await wait_until(settled, 20, "the order settled")
    assert await poller.on_check(second) == "dropped"
    assert await quiet_worker.store.collections.polls.count_documents({}) == 0


async def test_an_idle_worker_asks_the_store_nothing(
    quiet_worker: Worker, ingest: TestClient[Any, Any], amqp: aio_pika.abc.AbstractChannel,
) -> None:
    for n in range(5):
        assert await post(ingest, alert_body(f"idle-{n}", "processing", "new")) == 200
    await due_checks(amqp, 5, "idle-")
    with counting(quiet_worker.settings.mongo.database) as commands:
        await asyncio.sleep(3)  # idle: no query on a timer, short or long, between maintenances
    assert commands.seen == []
