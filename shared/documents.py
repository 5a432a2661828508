"""The shape of every document the service stores, one TypedDict per collection (and per nested
part), so that `mypy --strict` checks each writer and reader against it. Pure types: the ids are
made in `worker/ids.py`, the documents by the builders in `worker/records.py`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NotRequired, TypedDict

Source = Literal["callback", "poll"]


class Reported(TypedDict):
    """An anomaly's conflicting report (the event's status fields say what is kept)."""

    status: str
    sub_status: str | None
    status_description: str | None
    final: bool
    gateway_time: str


class StatusPair(TypedDict):
    status: str
    sub_status: str | None


class Event(TypedDict):
    """An order event as published (docs/asyncapi.yaml, OrderEvent), kept in its record."""

    schema_version: str
    event_id: str
    type: Literal["transition", "anomaly", "stale"]
    project_id: str
    payment_id: str
    request_id: str | None
    status: str
    sub_status: str | None
    status_description: str | None
    previous: StatusPair | None
    final: bool
    source: Source
    gateway_time: str
    recorded_at: str
    correlation_id: str
    reported: NotRequired[Reported]  # anomalies
    needs_review: NotRequired[bool]  # order.stale


class StepTo(TypedDict):
    status: str
    sub_status: str | None
    status_description: str | None
    request_id: str | None


# `transitions`, `{order_id}:{seq}`: the order's log, and the outbox of its events. ("from" is
# a keyword: hence the functional form.)
Transition = TypedDict("Transition", {
    "_id": str,
    "order_id": str,
    "seq": int,
    "from": StepTo | None,
    "to": StepTo,
    "amount": int | None,
    "currency": str | None,
    "source": Source,
    "gateway_time": int,
    "recorded_at": datetime,
    "idempotency_key": str,
    "correlation_id": str,
    "event": Event,
    "routing_key": str,
    "published": NotRequired[bool],  # never stored: the holder's note that its marker is written
})


class Anomaly(TypedDict):
    """`anomalies`, `anomaly:{idempotency_key}`: a different final after a final."""

    _id: str
    order_id: str
    against_seq: int
    source: Source
    recorded_at: datetime
    event: Event
    routing_key: str
    published: NotRequired[bool]


class InboxRecord(TypedDict):
    """`callbacks`, by the alert's idempotency key: written once the alert is processed."""

    _id: str
    project_id: str
    payment_id: str
    request_id: str | None
    status: str
    sub_status: str | None
    route: str
    timestamp: str | None
    key_id: str | None
    received_at: datetime
    processed_at: datetime
    correlation_id: str
    raw_body: str
    outcome: str


class Marker(TypedDict):
    """`published`, by event_id: the event went out."""

    _id: str
    at: datetime


class Registration(TypedDict):
    """`registrations`, by order id: what the merchant backend said of the order."""

    _id: str
    project_id: str
    payment_id: str
    product: str
    flow: str
    amount: int | None
    currency: str | None
    registered_at: datetime


class Schedule(TypedDict):
    """`poll_schedule`, by order id (and kept in the poll that wrote it): what follows it."""

    attempt: int
    last_seq: int
    ladder_step: int
    next_due_at: datetime
    gave_up: bool
    updated_at: datetime


class ScheduleRecord(Schedule):
    """`poll_schedule`, by order id (written by a replace under that filter)."""

    _id: NotRequired[str]


class PollRecord(TypedDict):
    """`polls`, `{order_id}:{attempt}`: claimed by inserting it; finished by its owner. One
    that gave up carries its `order.stale` event (it is then in the outbox)."""

    _id: str
    order_id: str
    attempt: int
    for_seq: int
    ladder_step: int
    owner: str
    claimed_at: datetime
    finished_at: datetime | None
    outcome: str | None
    schedule: NotRequired[Schedule]
    next_check_sent: NotRequired[bool]
    event: NotRequired[Event]
    routing_key: NotRequired[str]
    recorded_at: NotRequired[datetime]
    published: NotRequired[bool]


class PollFinish(TypedDict, total=False):
    """The fields a poll's owner sets when it is finished (and after, `next_check_sent`)."""

    finished_at: datetime
    outcome: str
    schedule: Schedule
    next_check_sent: bool
    event: Event
    routing_key: str
    recorded_at: datetime


class OrderView(TypedDict):
    """`orders`, by order id: the current state, derived wholly from the log's head, the
    registration and the schedule (worker/records.py, order_view)."""

    _id: str
    project_id: str
    payment_id: str
    product: str
    flow: str
    amount: int | None
    currency: str | None
    registered: bool
    status: str | None
    sub_status: str | None
    status_description: str | None
    request_id: str | None
    final: bool
    seq: int
    gateway_time: datetime | None
    updated_at: datetime | None
    needs_review: bool
    changed_by_poll: str | None
    next_poll_at: datetime | None
    polls: int


class Job(TypedDict):
    """`jobs`, by period: whoever inserted it runs that period's maintenance."""

    _id: str
    owner: str
    at: datetime


class RequestIndex(TypedDict):
    """`request_ids`, `{project_id}:{request_id}`: the order the merchant's request id names."""

    _id: str
    order_id: str


class Aside(TypedDict):
    """`asides`, `{order_id}#{n}`: an alert of the order that was not applied."""

    _id: str
    key: str
    at: datetime


class Review(TypedDict):
    by: str
    at: datetime
    note: str


class Attention(TypedDict):
    """`attention`, by order id: an order given up, until an operator marks it reviewed."""

    _id: str
    status: str | None
    sub_status: str | None
    at: datetime
    reviewed: Review | None


class ActivityEntry(TypedDict):
    at: float
    routing_key: str
    type: str
    order_id: str
    status: str
    sub_status: str | None
    source: str


class ActivityMinute(TypedDict):
    """`activity`, `activity:{YYYYmmddHHMM}`: the events of a minute, for a glance."""

    _id: str
    events: list[ActivityEntry]


class ConsoleSession(TypedDict):
    """`console_sessions`, by the token's hash."""

    _id: str
    name: str
    role: str
    csrf: str
    expires_at: datetime


# A record whose event goes out through the outbox: a step, an anomaly, a poll that gave up.
EventRecord = Transition | Anomaly | PollRecord
