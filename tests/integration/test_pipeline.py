"""A signed alert becomes durable order state and one downstream event (real services)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.mongo import Collections
from shared.wire import CALLBACK_PATHS
from tests.conftest import EventTap, wait_until
from tests.keys import PROJECT_ID, alert_body, gateway_hmac, gateway_rsa, signed_headers
from tests.logcapture import captured
from worker.app import Worker

pytestmark = pytest.mark.services



async def post(client: TestClient[Any, Any], body: bytes, route: str = "callback",
               ts: int | None = None, key: Any = None) -> int:
    response = await client.post(
        CALLBACK_PATHS[route], data=body, headers=signed_headers(body, key or gateway_rsa(), ts))
    return response.status


def processed(worker: Worker) -> float:
    return sum(s.value for m in worker.metrics.alerts.collect() for s in m.samples
               if s.name.endswith("_total"))


async def wait_processed(worker: Worker, count: int) -> None:
    async def probe() -> bool:
        return processed(worker) >= count
    await wait_until(probe, 30, f"{count} alerts processed")


async def order(db: Collections, payment_id: str) -> dict[str, Any] | None:
    return await db.orders.find_one({"_id": f"{PROJECT_ID}:{payment_id}"})


@pytest.mark.parametrize(
    ("route", "status", "sub_status"),
    [("callback", "processing", "requisites"), ("success", "success", "success"),
     ("decline", "decline", None)],
)
async def test_alert_on_each_route_reaches_mongo_and_downstream(
    ingest: TestClient[Any, Any], worker: Worker, events: EventTap, db: Collections,
    route: str, status: str, sub_status: str | None,
) -> None:
    body = alert_body(f"pay-{route}", status, sub_status)
    assert await post(ingest, body, route) == 200
    [event] = await events.wait(1)
    assert event["_routing_key"] == f"order.{status}"
    assert event["status"] == status and event["sub_status"] == sub_status
    assert (event["project_id"], event["payment_id"], event["request_id"]) == (
        PROJECT_ID, f"pay-{route}", "req-1")
    assert event["final"] is (status != "processing") and event["source"] == "callback"
    assert event["previous"] is None and event["event_id"] == event["_message_id"]
    await wait_processed(worker, 1)
    view = await order(db, f"pay-{route}")
    assert view is not None and (view["status"], view["sub_status"]) == (status, sub_status)
    inbox = await db.callbacks.find_one({"_id": f"{PROJECT_ID}:pay-{route}:{status}:{sub_status}"})
    assert inbox is not None and inbox["route"] == route and inbox["raw_body"] == body.decode()
    assert inbox["key_id"] == gateway_rsa().key_id and inbox["outcome"] == "applied"


async def test_same_alert_five_times_has_one_effect(
    ingest: TestClient[Any, Any], worker: Worker, events: EventTap, db: Collections,
) -> None:
    body = alert_body("pay-dup", "success", None)
    for _ in range(5):
        assert await post(ingest, body, "success") == 200
    statuses = await asyncio.gather(*(post(ingest, body, "success") for _ in range(5)))
    assert statuses == [200] * 5
    await wait_processed(worker, 10)
    assert len(await events.drain()) == 1
    assert await db.callbacks.count_documents({"payment_id": "pay-dup"}) == 1
    assert await db.transitions.count_documents({"order_id": f"{PROJECT_ID}:pay-dup"}) == 1


async def test_final_is_not_regressed_and_older_status_is_stale(
    ingest: TestClient[Any, Any], worker: Worker, events: EventTap, db: Collections,
) -> None:
    now = int(time.time())
    assert await post(ingest, alert_body("pay-a", "success", None), "success", now - 10) == 200
    assert await post(ingest, alert_body("pay-a", "processing", "paid"), ts=now) == 200
    assert await post(ingest, alert_body("pay-b", "processing", "new"), ts=now) == 200
    assert await post(ingest, alert_body("pay-b", "processing", "requisites"), ts=now - 5) == 200
    await wait_processed(worker, 4)
    a, b = await order(db, "pay-a"), await order(db, "pay-b")
    assert a is not None and (a["status"], a["final"]) == ("success", True)
    assert b is not None and (b["status"], b["sub_status"]) == ("processing", "new")
    late = await db.callbacks.find_one({"_id": f"{PROJECT_ID}:pay-b:processing:requisites"})
    assert late is not None and late["outcome"] == "stale"  # recorded, not applied
    keys = sorted(e["_routing_key"] for e in await events.drain())
    assert keys == ["order.processing", "order.success"]


async def test_conflicting_final_is_an_anomaly(
    ingest: TestClient[Any, Any], worker: Worker, events: EventTap, db: Collections,
) -> None:
    assert await post(ingest, alert_body("pay-x", "success", None), "success") == 200
    await events.wait(1)
    with captured() as logged:
        assert await post(ingest, alert_body("pay-x", "decline", None), "decline") == 200
        found = await events.wait(2)
    anomaly = found[1]
    assert anomaly["_routing_key"] == "order.anomaly" and anomaly["type"] == "anomaly"
    # The status fields state what the order kept; the conflicting report stands apart.
    assert (anomaly["status"], anomaly["final"]) == ("success", True)
    assert anomaly["reported"]["status"] == "decline"
    view = await order(db, "pay-x")
    assert view is not None and view["status"] == "success"
    assert (view["amount"], view["currency"]) == (150000, "RUB")  # from the alert itself
    assert await db.anomalies.count_documents({"order_id": f"{PROJECT_ID}:pay-x"}) == 1
    assert any(e["event"] == "order_anomaly" and e["log_level"] == "error" for e in logged)


async def test_unknown_status_is_stored_and_forwarded_as_non_final(
    ingest: TestClient[Any, Any], worker: Worker, events: EventTap, db: Collections,
) -> None:
    assert await post(ingest, alert_body("pay-u", "refund_pending", "bank.review")) == 200
    [event] = await events.wait(1)
    assert event["_routing_key"] == "order.refund_pending" and event["final"] is False
    await wait_processed(worker, 1)
    view = await order(db, "pay-u")
    assert view is not None and (view["status"], view["sub_status"], view["final"]) == (
        "refund_pending", "bank.review", False)


async def test_hmac_and_both_rotation_keys_are_accepted(
    ingest: TestClient[Any, Any], old_rsa_pem: bytes,
) -> None:
    from shared.signature import load_signing_key

    old = load_signing_key(old_rsa_pem, "rsa")
    for key in (old, gateway_rsa(), gateway_hmac()):
        assert await post(ingest, alert_body(f"pay-{key.key_id}"), key=key) == 200


async def test_registration_creates_order_then_alert_keeps_product(
    amqp: Any, worker: Worker, ingest: TestClient[Any, Any], events: EventTap, db: Collections,
) -> None:
    import json

    import aio_pika

    registration = {"project_id": PROJECT_ID, "payment_id": "pay-r", "product": "ecom",
                    "flow": "payout", "amount": 5000, "currency": "EUR"}
    await amqp.default_exchange.publish(
        aio_pika.Message(json.dumps(registration).encode()), "hh.orders.register")

    async def registered() -> dict[str, Any] | None:
        return await order(db, "pay-r")
    view = await wait_until(registered, 20, "registered order")
    assert view["status"] is None and view["product"] == "ecom" and view["registered"]
    assert await post(ingest, alert_body("pay-r", "success", None), "success") == 200
    await events.wait(1)
    await wait_processed(worker, 1)
    view = await order(db, "pay-r")
    assert view is not None and (view["status"], view["product"], view["flow"], view["amount"]) == (
        "success", "ecom", "payout", 5000)
