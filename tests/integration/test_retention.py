"""Retention: a settled order's records go after their age, what the state machine needs
stays, and a late or repeated alert afterwards changes nothing and publishes nothing new."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.settings import Settings
from tests.conftest import EventTap, wait_until
from tests.integration.test_pipeline import post
from tests.keys import PROJECT_ID, alert_body
from worker.app import Worker
from worker.retention import Retention

pytestmark = pytest.mark.services

STEPS = [("processing", "new", "callback"), ("processing", "requisites", "callback"),
         ("processing", "confirm", "callback"), ("success", None, "success"),
         ("decline", None, "decline")]  # the last conflicts with the final: an anomaly


async def counts(worker: Worker) -> dict[str, int]:
    c = worker.store.collections
    return {name: await getattr(c, name).count_documents({}) for name in
            ("callbacks", "transitions", "polls", "anomalies", "published", "orders")}


async def test_after_retention_a_late_or_repeated_alert_changes_nothing(
    make_settings: Callable[..., Settings], ingest: TestClient[Any, Any], events: EventTap,
    amqp: Any,
) -> None:
    settings = make_settings(
        retention={"inbox_days": 0, "transitions_days": 0, "polls_days": 0,
                   "anomalies_days": 0},
        worker={"maintenance_interval_s": 3600}, poller={"enabled": False})
    worker = Worker(settings)
    await worker.start(http=False)
    c = worker.store.collections
    try:
        for status, sub, route in STEPS:
            assert await post(ingest, alert_body("kept", status, sub), route) == 200
        sent = await events.wait(5)

        async def all_recorded() -> bool:  # the inbox record is written after the event
            return await c.callbacks.count_documents({}) == len(STEPS)
        await wait_until(all_recorded, 20, "every alert recorded")
        order_id = f"{PROJECT_ID}:kept"
        before = await counts(worker)
        view_before = await c.orders.find_one({"_id": order_id})
        assert view_before is not None and (view_before["status"], view_before["seq"]) == (
            "success", 4)

        retention = Retention(worker.store.collections, settings.retention)
        would = await retention.run(time.time() + 1, dry_run=True)
        assert would == {"callbacks": 5, "transitions": 2, "polls": 0, "anomalies": 1,
                         "published": 3}  # the middle steps' and the anomaly's markers
        assert await counts(worker) == before  # a dry run deletes nothing
        assert await retention.run(time.time() + 1) == would
        kept = sorted([t["seq"] async for t in c.transitions.find({})])
        assert kept == [1, 4]  # the log's ends: where the worker finds its head

        # The sender retries everything, late, and one informative alert comes very late.
        for status, sub, route in [*STEPS, ("processing", "late", "callback")]:
            assert await post(ingest, alert_body("kept", status, sub), route) == 200

        async def processed_again() -> bool:
            return await c.callbacks.count_documents({}) == 6
        await wait_until(processed_again, 20, "the late alerts processed")
        await wait_until(lambda: _anomaly_back(worker), 20, "the repeated anomaly recorded")
        after = await events.drain()
        new = after[len(sent):]
        # Nothing new: at most the anomaly again, under the event_id it had.
        assert {e["event_id"] for e in new} <= {e["event_id"] for e in sent}
        assert all(e["type"] == "anomaly" for e in new)
        view = await c.orders.find_one({"_id": order_id})
        assert view is not None and (view["status"], view["seq"], view["final"]) == (
            "success", 4, True)
        assert sorted([t["seq"] async for t in c.transitions.find({})]) == [1, 4]
    finally:
        await worker.mongo_client.drop_database(settings.mongo.database)
        await worker.stop()


async def _anomaly_back(worker: Worker) -> bool:
    return await worker.store.collections.anomalies.count_documents({}) == 1


async def test_retention_drops_old_activity_minutes_and_expired_console_sessions(
    make_settings: Callable[..., Settings], amqp: Any,
) -> None:
    from worker.activity import minute_id
    from worker.records import utc

    settings = make_settings(worker={"maintenance_interval_s": 3600}, poller={"enabled": False})
    worker = Worker(settings)
    await worker.start(http=False)
    c = worker.store.collections
    now = time.time()
    try:
        await c.activity.insert_many([{"_id": minute_id(now - 2 * 86400), "events": []},
                                      {"_id": minute_id(now), "events": []}])
        await c.sessions.insert_many([{"_id": "old", "expires_at": utc(now - 1)},
                                      {"_id": "live", "expires_at": utc(now + 3600)}])
        days = settings.retention.inbox_days
        await c.attention.insert_many([
            {"_id": "reviewed-long-ago", "reviewed": {"at": utc(now - (days + 1) * 86400)}},
            {"_id": "reviewed-today", "reviewed": {"at": utc(now - 3600)}},
            {"_id": "waiting", "reviewed": None}])
        taken = await Retention(worker.store.collections, settings.retention).run(now)
        assert (taken["activity"], taken["console_sessions"]) == (1, 1)
        assert taken["attention"] == 1
        assert sorted([d["_id"] async for d in c.attention.find({})]) == [
            "reviewed-today", "waiting"]
        assert [d["_id"] async for d in c.activity.find({})] == [minute_id(now)]
        assert [d["_id"] async for d in c.sessions.find({})] == ["live"]
    finally:
        await worker.mongo_client.drop_database(settings.mongo.database)
        await worker.stop()
