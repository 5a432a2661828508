"""MongoDB access: the client, the collections of the contract, and their indexes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from shared.settings import MongoSettings

Document = dict[str, Any]


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
        )


def client(settings: MongoSettings) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(
        settings.url,
        serverSelectionTimeoutMS=settings.timeout_ms,
        connectTimeoutMS=settings.timeout_ms,
        timeoutMS=settings.timeout_ms * 2,
        tz_aware=True,
    )


async def ensure_indexes(c: Collections) -> None:
    # Hot-path reads are all by _id. These serve the hourly outbox relay's time window and
    # the hourly sweep for overdue orders (MongoDB uses them; the local server scans).
    for outbox in (c.transitions, c.anomalies, c.polls):
        await outbox.create_index([("recorded_at", ASCENDING)])
    await c.orders.create_index([("next_poll_at", ASCENDING)])
