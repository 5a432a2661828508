"""Every `_id` the worker stores under, and the event-id rule: one home, so that the writers,
retention (which deletes by these ids) and the console (which finds by them) cannot drift.

An order is `{project_id}:{payment_id}` (shared.alert.order_id); an inbox record is the
alert's idempotency key (shared.alert.idempotency_key)."""

from __future__ import annotations

import uuid

# Event ids are name-based (UUID v5) on the id of the record that carries the event, so the
# same step always gets the same event id, whoever publishes it and however often.
EVENT_NAMESPACE = uuid.UUID("6f1d8a52-2f37-4c55-9a0e-5b8c3e7d9a10")


def step(order_id: str, seq: int) -> str:
    """The order's log entry `seq` (1, 2, ...): whoever inserts it owns that step."""
    return f"{order_id}:{seq}"


def poll(order_id: str, attempt: int) -> str:
    """The order's poll attempt (1, 2, ...): whoever inserts it makes that poll."""
    return f"{order_id}:{attempt}"


def check(order_id: str, seq: int, ladder_step: int) -> str:
    """The message id of the stale check of the order's step `seq`, ladder step `ladder_step`
    (a duplicate of one check has the same)."""
    return f"{order_id}:{seq}:{ladder_step}"


def anomaly(idempotency_key: str) -> str:
    """A different final reported after a final: one record per such alert."""
    return f"anomaly:{idempotency_key}"


def request_index(project_id: str, request_id: str) -> str:
    """The merchant's request id, pointing at its order (the console finds by it)."""
    return f"{project_id}:{request_id}"


def maintenance_job(interval_s: float, period: int) -> str:
    """The periodic maintenance of one period: whoever inserts it runs that period's jobs."""
    return f"maintenance:{interval_s:g}:{period}"


def event(record_id: str) -> str:
    """The event id of the step or anomaly record `record_id`."""
    return str(uuid.uuid5(EVENT_NAMESPACE, record_id))


def stale_event(poll_id: str) -> str:
    """The event id of the `order.stale` that the poll `poll_id` published when it gave up."""
    return event(f"stale:{poll_id}")
