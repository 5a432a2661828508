"""The documents the worker writes and the events it publishes, built by pure functions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from shared.alert import Alert, is_final
from shared.contract import EVENT_SCHEMA_VERSION
from shared.documents import (
    Anomaly,
    Event,
    InboxRecord,
    OrderView,
    PollFinish,
    Registration,
    Schedule,
    Source,
    Transition,
)
from shared.envelope import AlertEnvelope
from shared.registration import Registration as RegistrationMessage
from shared.settings import PollerSettings
from shared.topology import event_routing_key
from worker import ids
from worker.schedule import next_poll_at
from worker.statemachine import StatusAt


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def iso(ts: float) -> str:
    return utc(ts).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Observation:
    """A status the gateway reported for an order (its alert body, or an /info answer read
    like one), with when it was true and how we learned it."""

    alert: Alert
    gateway_time: int
    source: Source
    correlation_id: str

    @classmethod
    def from_poll(cls, alert: Alert, now: float, correlation_id: str) -> Observation:
        """An /info answer: the gateway's current status, as of the time we asked."""
        return cls(alert, int(now), "poll", correlation_id)

    @classmethod
    def from_alert(cls, alert: Alert, envelope: AlertEnvelope) -> Observation:
        return cls(alert, envelope.gateway_time, "callback", envelope.correlation_id)

    @property
    def order_id(self) -> str:
        return self.alert.order_id

    @property
    def state(self) -> StatusAt:
        return StatusAt(self.alert.status, self.alert.sub_status, self.gateway_time)


def state_of(transition: Transition | None) -> StatusAt | None:
    if transition is None:
        return None
    to = transition["to"]
    return StatusAt(to["status"], to["sub_status"], int(transition["gateway_time"]))


def inbox_record(alert: Alert, envelope: AlertEnvelope, outcome: str, now: float
                 ) -> InboxRecord:
    return {
        "_id": alert.idempotency_key,
        "project_id": alert.project_id,
        "payment_id": alert.payment_id,
        "request_id": alert.request_id,
        "status": alert.status,
        "sub_status": alert.sub_status,
        "route": envelope.route,
        "timestamp": envelope.timestamp,
        "key_id": envelope.key_id,
        "received_at": utc(envelope.received_at),
        "processed_at": utc(now),
        "correlation_id": envelope.correlation_id,
        # As a string: alert bodies may hold keys or nesting a document store refuses.
        "raw_body": envelope.body,
        "outcome": outcome,
    }


def _event(
    event_id: str, kind: Literal["transition", "anomaly", "stale"], obs: Observation,
    previous: Transition | None, now: float,
) -> Event:
    before = previous["to"] if previous else None
    alert = obs.alert
    return {
        "schema_version": EVENT_SCHEMA_VERSION,
        "event_id": event_id,
        "type": kind,
        "project_id": alert.project_id,
        "payment_id": alert.payment_id,
        "request_id": alert.request_id,
        "status": alert.status,
        "sub_status": alert.sub_status,
        "status_description": alert.status_description,
        "previous": {"status": before["status"], "sub_status": before["sub_status"]}
        if before else None,
        "final": alert.final,
        "source": obs.source,
        "gateway_time": iso(obs.gateway_time),
        "recorded_at": iso(now),
        "correlation_id": obs.correlation_id,
    }


def transition_record(obs: Observation, previous: Transition | None, now: float
                      ) -> Transition:
    """Log entry seq n+1 of the order; it carries its downstream event (the log is the outbox)."""
    seq = previous["seq"] + 1 if previous else 1
    record_id = ids.step(obs.order_id, seq)
    event = _event(ids.event(record_id), "transition", obs, previous, now)
    return {
        "_id": record_id,
        "order_id": obs.order_id,
        "seq": seq,
        "from": previous["to"] if previous else None,
        "to": {
            "status": obs.alert.status,
            "sub_status": obs.alert.sub_status,
            "status_description": obs.alert.status_description,
            "request_id": obs.alert.request_id,
        },
        # What the gateway last said of the money, carried forward when a step does not say.
        "amount": _first(obs.alert.amount, previous["amount"] if previous else None),
        "currency": _first(obs.alert.currency, previous["currency"] if previous else None),
        "source": obs.source,
        "gateway_time": obs.gateway_time,
        "recorded_at": utc(now),
        "idempotency_key": obs.alert.idempotency_key,
        "correlation_id": obs.correlation_id,
        "event": event,
        "routing_key": event_routing_key(obs.alert.status),
    }


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def anomaly_record(obs: Observation, current: Transition, now: float) -> Anomaly:
    """A different final after a final: kept once per alert, published as order.anomaly.
    The event's status fields state the order's kept status, so that a consumer that reads
    only `status` and `final` never settles the order the other way; the conflicting report
    is in `reported`."""
    record_id = ids.anomaly(obs.alert.idempotency_key)
    kept, alert = current["to"], obs.alert
    as_kept = Observation(
        replace(alert, status=kept["status"], sub_status=kept["sub_status"],
                status_description=kept["status_description"]),
        int(current["gateway_time"]), obs.source, obs.correlation_id)
    event = _event(ids.event(record_id), "anomaly", as_kept, None, now)
    event["reported"] = {
        "status": alert.status, "sub_status": alert.sub_status,
        "status_description": alert.status_description, "final": alert.final,
        "gateway_time": iso(obs.gateway_time),
    }
    return {
        "_id": record_id,
        "order_id": obs.order_id,
        "against_seq": current["seq"],
        "source": obs.source,
        "recorded_at": utc(now),
        "event": event,
        "routing_key": "order.anomaly",
    }


def registration_record(registration: RegistrationMessage, now: float) -> Registration:
    r = registration
    return {"_id": r.order_id, "project_id": r.project_id, "payment_id": r.payment_id,
            "product": r.product, "flow": r.flow, "amount": r.amount, "currency": r.currency,
            "registered_at": utc(now)}


def changed_at(latest: Transition | None, registration: Registration | None
               ) -> datetime | None:
    """When the order last changed, as far as polling goes: its last step, else when it was
    registered."""
    if latest is not None:
        return latest["recorded_at"]
    return registration["registered_at"] if registration is not None else None


def order_view(
    key: str,
    latest: Transition | None,
    registration: Registration | None,
    schedule: Schedule | None,
    defaults: tuple[str, str],
    poller: PollerSettings,
) -> OrderView:
    """The orders view, derived wholly from its sources: the latest transition, the
    registration, and the poller's schedule."""
    project_id, _, payment_id = key.partition(":")
    to = latest["to"] if latest is not None else None
    final = is_final(to["status"]) if to is not None else False
    seq = latest["seq"] if latest is not None else 0
    updated_at = changed_at(latest, registration)
    return {
        "_id": key,
        "project_id": registration["project_id"] if registration else project_id,
        "payment_id": registration["payment_id"] if registration else payment_id,
        "product": registration["product"] if registration else defaults[0],
        "flow": registration["flow"] if registration else defaults[1],
        # A registration's word first; else what the alerts said.
        "amount": _first(registration and registration["amount"],
                         latest and latest["amount"]),
        "currency": _first(registration and registration["currency"],
                           latest and latest["currency"]),
        "registered": registration is not None,
        "status": to["status"] if to else None,
        "sub_status": to["sub_status"] if to else None,
        "status_description": to["status_description"] if to else None,
        "request_id": to["request_id"] if to else None,
        "final": final,
        "seq": seq,
        "gateway_time": utc(latest["gateway_time"]) if latest is not None else None,
        "updated_at": updated_at,
        # The poll whose answer made the latest step, if one did: a check that finds the
        # order moved on finishes that poll's follow-up if its owner could not
        # (worker/poller.py).
        "changed_by_poll": latest["correlation_id"] if latest is not None
        and latest["source"] == "poll" else None,
        "needs_review": bool(schedule and schedule["gave_up"] and not final),
        "next_poll_at": next_poll_at(final, seq, updated_at, schedule, poller),
        "polls": schedule["attempt"] if schedule else 0,
    }


def stale_record(poll_id: str, order: OrderView, latest: Transition | None, now: float
                 ) -> PollFinish:
    """`order.stale`: the order never settled; published once, from the poll that gave up."""
    to = latest["to"] if latest is not None else None
    alert = Alert(order["project_id"], order["payment_id"], to["request_id"] if to else None,
                  to["status"] if to else "unknown", to["sub_status"] if to else None,
                  to["status_description"] if to else None)
    changed = latest["gateway_time"] if latest is not None else int(now)
    event = _event(ids.stale_event(poll_id), "stale",
                   Observation(alert, changed, "poll", poll_id), None, now)
    event["needs_review"] = True
    return {"event": event, "routing_key": "order.stale", "recorded_at": utc(now)}
