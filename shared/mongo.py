"""MongoDB access: the client, the collections of the contract, and their indexes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from shared.documents import (
    ActivityMinute,
    Anomaly,
    Aside,
    Attention,
    ConsoleSession,
    InboxRecord,
    Job,
    Marker,
    OrderView,
    PollRecord,
    Registration,
    RequestIndex,
    ScheduleRecord,
    Transition,
)
from shared.settings import MongoSettings

Document = dict[str, Any]  # a document of no fixed shape (commands, audit entries)
Doc = TypeVar("Doc", bound=Mapping[str, Any])
log = structlog.get_logger("mongo")


@dataclass(frozen=True)
class Collections:
    callbacks: AsyncCollection[InboxRecord]  # the inbox, by idempotency key
    transitions: AsyncCollection[Transition]  # the order log and outbox, by order and seq
    anomalies: AsyncCollection[Anomaly]  # conflicting finals: recorded and published, not applied
    published: AsyncCollection[Marker]  # event_ids that went out (markers, insert-only)
    registrations: AsyncCollection[Registration]  # what the merchant backend told us of an order
    orders: AsyncCollection[OrderView]  # the current-state view, rebuilt from the above
    polls: AsyncCollection[PollRecord]  # one per /info attempt, claimed by inserting it
    poll_schedule: AsyncCollection[ScheduleRecord]  # per order, written by the current poll's owner
    jobs: AsyncCollection[Job]  # periodic jobs, one record per period, claimed by insert
    # For the operator console, each read by _id only:
    request_ids: AsyncCollection[RequestIndex]  # "{project_id}:{request_id}" -> the order
    asides: AsyncCollection[Aside]  # "{order}#{n}": its alerts that were not applied
    attention: AsyncCollection[Attention]  # orders given up (needs_review): few, listed whole
    activity: AsyncCollection[ActivityMinute]  # "activity:{minute}": recent events, for a glance
    # "{scope}#{n}": what operators did; each entry carries its action's own details.
    audit: AsyncCollection[Document]
    sessions: AsyncCollection[ConsoleSession]  # console sign-ins, by the token's hash

    @classmethod
    def of(cls, db: AsyncDatabase[Document]) -> Collections:
        # Each collection typed by the documents it holds (shared/documents.py).
        db_: AsyncDatabase[Any] = db
        return cls(
            callbacks=db_["callbacks"],
            transitions=db_["transitions"],
            anomalies=db_["anomalies"],
            published=db_["published"],
            registrations=db_["registrations"],
            orders=db_["orders"],
            polls=db_["polls"],
            poll_schedule=db_["poll_schedule"],
            jobs=db_["jobs"],
            request_ids=db_["request_ids"],
            asides=db_["asides"],
            attention=db_["attention"],
            activity=db_["activity"],
            audit=db_["audit"],
            sessions=db_["console_sessions"],
        )


def client(settings: MongoSettings) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(
        settings.url,
        serverSelectionTimeoutMS=settings.timeout_ms,
        connectTimeoutMS=settings.timeout_ms,
        timeoutMS=settings.timeout_ms * 2,
        tz_aware=True,
    )


# The date each kind of record a TTL index may expire is counted from.
TTL_FIELDS = {"callbacks": "processed_at", "polls": "claimed_at", "anomalies": "recorded_at"}


async def is_ferretdb(client: AsyncMongoClient[Document]) -> bool:
    """FerretDB 1.x accepts TTL indexes but never expires anything: retention is a job there."""
    info = await client.admin.command("buildInfo")
    return "ferretdbVersion" in info


# The indexes every setup has (hh-admin doctor checks them by these names), whatever the TTLs.
REQUIRED_INDEXES = {"orders": "next_poll_at_1", "transitions": "recorded_at_1"}


async def ensure_indexes(c: Collections, ttl_s: Mapping[str, int] | None = None) -> set[str]:
    """Hot-path reads are all by _id. These serve the hourly outbox relay's time window and
    the hourly sweep for overdue orders (MongoDB uses them; the local server scans); with
    `ttl_s` (collection -> seconds), the collections of TTL_FIELDS expire by the server.
    Returns the collections whose records the server expires."""
    ttl_s = ttl_s or {}
    expiring: set[str] = set()
    for name, field in TTL_FIELDS.items():
        if name in ttl_s:
            try:
                await getattr(c, name).create_index([(field, ASCENDING)],
                                                   expireAfterSeconds=ttl_s[name])
                expiring.add(name)
            except OperationFailure as exc:  # a plain index on the field exists already
                log.warning("ttl_index_refused", collection=name, error=str(exc))
    for outbox in (c.transitions, c.anomalies, c.polls):
        if outbox.name not in expiring or TTL_FIELDS[outbox.name] != "recorded_at":
            await outbox.create_index([("recorded_at", ASCENDING)])
    await c.orders.create_index([("next_poll_at", ASCENDING)])
    return expiring


async def append_numbered(collection: AsyncCollection[Any], prefix: str, doc: Mapping[str, Any],
                          first: int = 1, limit: int = 100_000) -> int:
    """Insert `doc` as `{prefix}#{n}` for the first free n from `first`: the unique insert is
    the claim, so concurrent writers never share a number and readers walk 1, 2, ... by _id.
    Returns n."""
    for n in range(max(1, first), limit + 1):
        try:
            await collection.insert_one({**doc, "_id": f"{prefix}#{n}"})
            return n
        except DuplicateKeyError:
            continue
    raise RuntimeError(f"{prefix}: more than {limit} numbered documents")


async def read_numbered(collection: AsyncCollection[Doc], prefix: str,
                        limit: int = 1000) -> list[Doc]:
    """`{prefix}#1`, `#2`, ... by _id, up to the first missing one (or `limit`)."""
    found = []
    for n in range(1, limit + 1):
        doc = await collection.find_one({"_id": f"{prefix}#{n}"})
        if doc is None:
            break
        found.append(doc)
    return found
