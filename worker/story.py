"""What the console shows, read from the store: finding a payment (by _id only), one payment's
whole story, and the short lists. Every read of a payment is by _id; the lists read small
collections that hold only what needs a person (see docs/how-to/console.md)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import mongo
from shared.alert import order_id
from shared.documents import ActivityEntry, Anomaly, Attention, InboxRecord, Transition
from shared.mongo import Collections, Document
from shared.settings import RetentionSettings
from worker import ids
from worker.activity import minute_id

LIST_LIMIT = 200
ACTIVITY_MINUTES = 60


async def find(c: Collections, project_id: str, query: str) -> str | None:
    """The order a query names: an idempotency key (`project:payment:status:sub`), an order id
    (`project:payment`), or, within `project_id`, a payment id or a request id."""
    query = query.strip()
    if not query:
        return None
    parts = query.split(":")
    if len(parts) >= 4 and await c.callbacks.find_one({"_id": query}, projection={"_id": 1}):
        return order_id(parts[0], parts[1])
    candidates = [query] if len(parts) == 2 else []
    if project_id:
        candidates.append(order_id(project_id, query))
    for candidate in candidates:
        if await c.orders.find_one({"_id": candidate}, projection={"_id": 1}):
            return candidate
    if project_id:
        found = await c.request_ids.find_one({"_id": ids.request_index(project_id, query)})
        if found is not None:
            return str(found["order_id"])
    return None


def _alert(record: InboxRecord, transition: Transition | None) -> Document:
    return {
        "key": record["_id"], "route": record.get("route"), "key_id": record.get("key_id"),
        "status": record.get("status"), "sub_status": record.get("sub_status"),
        "gateway_time": _from_unix(record.get("timestamp")),
        "received_at": record.get("received_at"), "outcome": record.get("outcome"),
        "correlation_id": record.get("correlation_id"),
        "seq": transition["seq"] if transition else None,
    }


def _from_unix(text: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(text), UTC)
    except (TypeError, ValueError):
        return None


async def story(c: Collections, order_id: str, retention: RetentionSettings
                ) -> Document | None:
    """Everything known of one payment, each piece read by _id, in time order."""
    view = await c.orders.find_one({"_id": order_id})
    if view is None:
        return None
    transitions: list[Document] = []
    alerts: list[Document] = []
    for seq in range(1, int(view["seq"]) + 1):
        step = await c.transitions.find_one({"_id": ids.step(order_id, seq)})
        if step is None:
            transitions.append({"seq": seq, "trimmed": True})  # retention kept first and last
            continue
        event_id = step["event"]["event_id"]
        published = await c.published.find_one({"_id": event_id}, projection={"_id": 1})
        transitions.append({
            "seq": seq, "from": step.get("from"), "to": step["to"], "source": step["source"],
            "recorded_at": step["recorded_at"], "event_id": event_id,
            "routing_key": step["routing_key"], "published": published is not None})
        if step.get("idempotency_key") and step["source"] == "callback":
            record = await c.callbacks.find_one({"_id": step["idempotency_key"]},
                                                projection={"raw_body": 0})
            if record is not None:
                alerts.append(_alert(record, step))
    for aside in await mongo.read_numbered(c.asides, order_id):
        record = await c.callbacks.find_one({"_id": aside["key"]}, projection={"raw_body": 0})
        alerts.append(_alert(record, None) if record else
                      {"key": aside["key"], "outcome": "(its record was deleted by retention)",
                       "received_at": aside["at"]})
    alerts.sort(key=lambda a: a.get("received_at") or datetime.min.replace(tzinfo=UTC))
    polls: list[Document] = []
    for attempt in range(1, int(view.get("polls") or 0) + 1):
        poll = await c.polls.find_one({"_id": ids.poll(order_id, attempt)})
        if poll is not None:
            polls.append({k: poll.get(k) for k in ("attempt", "claimed_at", "finished_at",
                                                   "outcome", "for_seq")})
    settled = bool(view["final"] or view["needs_review"])
    updated_at = view["updated_at"]
    kept_until = (updated_at + timedelta(days=retention.inbox_days)
                  if settled and updated_at and retention.enabled else None)
    return {
        "order": view,
        "registration": await c.registrations.find_one({"_id": order_id}),
        "alerts": alerts,
        "transitions": transitions,
        "polls": polls,
        "next_check_at": view.get("next_poll_at"),
        "attention": await c.attention.find_one({"_id": order_id}),
        "retention": {"settled": settled, "records_kept_until": kept_until},
        "audit": await mongo.read_numbered(c.audit, order_id),
    }


async def raw_alert(c: Collections, order_id: str, key: str) -> str | None:
    """The alert body as received (it holds no signature: that was a header)."""
    if not key.startswith(order_id + ":"):
        return None
    record = await c.callbacks.find_one({"_id": key}, projection={"raw_body": 1})
    return str(record["raw_body"]) if record else None


async def needs_review(c: Collections) -> list[Attention]:
    """Orders given up and not yet reviewed: the `attention` collection holds only these (and
    the reviewed ones), so reading it whole costs the same at any number of orders."""
    cursor = c.attention.find({"reviewed": None}).sort("at", -1).limit(LIST_LIMIT)
    return [doc async for doc in cursor]


async def anomalies(c: Collections) -> list[Anomaly]:
    """Conflicting finals: rare, and kept only for retention.anomalies_days."""
    cursor = c.anomalies.find({}, projection={"order_id": 1, "recorded_at": 1, "event": 1}
                              ).sort("recorded_at", -1).limit(LIST_LIMIT)
    return [doc async for doc in cursor]


async def activity(c: Collections, minutes: int = ACTIVITY_MINUTES) -> list[ActivityEntry]:
    """The events of the last `minutes`, newest first: one read by _id per minute."""
    now = time.time()
    events: list[ActivityEntry] = []
    for back in range(minutes):
        doc = await c.activity.find_one({"_id": minute_id(now - 60 * back)})
        if doc is not None:
            events.extend(doc.get("events", []))
        if len(events) >= LIST_LIMIT:
            break
    events.sort(key=lambda e: e["at"], reverse=True)
    return events[:LIST_LIMIT]
