"""MongoDB access: the client, the collections of the contract, and their indexes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from shared.settings import MongoSettings

Document = dict[str, Any]
log = structlog.get_logger("mongo")


@dataclass(frozen=True)
class Collections:
    callbacks: AsyncCollection[Document]  # the inbox, by idempotency key
    transitions: AsyncCollection[Document]  # the order log and outbox, by order and seq
    anomalies: AsyncCollection[Document]  # conflicting finals: recorded and published, not applied
    published: AsyncCollection[Document]  # event_ids that went out (markers, insert-only)
    registrations: AsyncCollection[Document]  # what the merchant backend told us of an order
    orders: AsyncCollection[Document]  # the current-state view, rebuilt from the above
    polls: AsyncCollection[Document]  # one per /info attempt, claimed by inserting it
    poll_schedule: AsyncCollection[Document]  # per order, written by the current poll's owner
    jobs: AsyncCollection[Document]  # periodic jobs, one record per period, claimed by insert
    # For the operator console, each read by _id only:
    request_ids: AsyncCollection[Document]  # "{project_id}:{request_id}" -> the order
    asides: AsyncCollection[Document]  # "{order}#{n}": its alerts that were not applied
    attention: AsyncCollection[Document]  # orders given up (needs_review): few, listed whole
    activity: AsyncCollection[Document]  # "activity:{minute}": recent events, for a glance
    audit: AsyncCollection[Document]  # "{scope}#{n}": what operators did
    sessions: AsyncCollection[Document]  # console sign-ins, by the token's hash

    @classmethod
    def of(cls, db: AsyncDatabase[Document]) -> Collections:
        return cls(
            callbacks=db["callbacks"],
            transitions=db["transitions"],
            anomalies=db["anomalies"],
            published=db["published"],
            registrations=db["registrations"],
            orders=db["orders"],
            polls=db["polls"],
            poll_schedule=db["poll_schedule"],
            jobs=db["jobs"],
            request_ids=db["request_ids"],
            asides=db["asides"],
            attention=db["attention"],
            activity=db["activity"],
            audit=db["audit"],
            sessions=db["console_sessions"],
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


async def append_numbered(collection: AsyncCollection[Document], prefix: str, doc: Document,
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


async def read_numbered(collection: AsyncCollection[Document], prefix: str,
                        limit: int = 1000) -> list[Document]:
    """`{prefix}#1`, `#2`, ... by _id, up to the first missing one (or `limit`)."""
    found = []
    for n in range(1, limit + 1):
        doc = await collection.find_one({"_id": f"{prefix}#{n}"})
        if doc is None:
            break
        found.append(doc)
    return found
