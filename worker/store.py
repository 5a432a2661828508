"""The worker's MongoDB operations. Coordination between replicas rests only on inserts under a
unique `_id`; updates touch documents that one kind of writer owns, with the same values."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.mongo import Collections
from shared.settings import PollerSettings, ProjectSettings
from worker.records import Document, order_view
from worker.schedule import Slot

VIEW_REFRESH_ROUNDS = 10


class OrderStore:
    def __init__(
        self, collections: Collections, projects: Mapping[str, ProjectSettings],
        poller: PollerSettings | None = None,
    ) -> None:
        self.c = collections
        self._projects = projects
        self._poller = poller or PollerSettings()

    async def _insert_or_existing(
        self, collection: AsyncCollection[Document], doc: Document
    ) -> Document | None:
        """Insert `doc`; None if it was new, else the document already stored under its _id."""
        try:
            await collection.insert_one(doc)
            return None
        except DuplicateKeyError:
            return await collection.find_one({"_id": doc["_id"]})

    # --- inbox ------------------------------------------------------------------------------
    async def record_alert(self, doc: Document) -> Document | None:
        return await self._insert_or_existing(self.c.callbacks, doc)

    async def mark_alert(self, key: str, outcome: str, at: datetime) -> None:
        # Only processors of this very alert write here, and they write the same outcome.
        await self.c.callbacks.update_one(
            {"_id": key}, {"$set": {"outcome": outcome, "processed_at": at}}
        )

    # --- transition log (also the outbox) ---------------------------------------------------
    async def latest_transition(self, order_id: str) -> Document | None:
        return await self.c.transitions.find_one({"order_id": order_id}, sort=[("seq", DESCENDING)])

    async def append_transition(self, doc: Document) -> bool:
        """True if we took step `seq`; False if another worker took it first."""
        try:
            await self.c.transitions.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    async def record_anomaly(self, doc: Document) -> Document:
        return await self._insert_or_existing(self.c.anomalies, doc) or doc

    async def mark_published(self, collection: AsyncCollection[Document], record_id: str) -> None:
        await collection.update_one({"_id": record_id}, {"$set": {"published": True}})

    async def unpublished(
        self, collection: AsyncCollection[Document], older_than: datetime, limit: int
    ) -> list[Document]:
        cursor = collection.find({"published": False, "recorded_at": {"$lt": older_than}})
        return [doc async for doc in cursor.sort("recorded_at", 1).limit(limit)]

    # --- registrations and the orders view --------------------------------------------------
    async def register(self, doc: Document) -> bool:
        """True if new. A second registration of the same order changes nothing."""
        return await self._insert_or_existing(self.c.registrations, doc) is None

    async def _sources(
        self, order_id: str
    ) -> tuple[Document | None, Document | None, Document | None]:
        return (
            await self.latest_transition(order_id),
            await self.c.registrations.find_one({"_id": order_id}),
            await self.c.poll_schedule.find_one({"_id": order_id}),
        )

    async def refresh_view(self, order_id: str) -> Document:
        """Rewrite the view from its sources, then re-read them: if another writer added a
        transition, the registration or a poll meanwhile, write again. The sources only move
        forward, so the last writer's check sees what it wrote and the view converges without
        conditional updates."""
        project = self._projects.get(order_id.partition(":")[0])
        defaults = (project.default_product, project.default_flow) if project else ("p2p", "payin")
        sources = await self._sources(order_id)
        view: dict[str, Any] = {}
        for _ in range(VIEW_REFRESH_ROUNDS):
            latest, registration, schedule = sources
            view = order_view(order_id, latest, registration, schedule, defaults, self._poller)
            try:
                await self.c.orders.replace_one({"_id": order_id}, view, upsert=True)
            except DuplicateKeyError:
                pass  # two first upserts raced; the check below decides whether to write again
            now_sources = await self._sources(order_id)
            if _version(now_sources) == _version(sources):
                break
            sources = now_sources
        return view

    # --- polls ------------------------------------------------------------------------------
    async def due_orders(self, now: datetime, limit: int) -> list[Document]:
        cursor = self.c.orders.find({"next_poll_at": {"$lte": now}})
        return [doc async for doc in cursor.sort("next_poll_at", 1).limit(limit)]

    async def schedule(self, order_id: str) -> Document | None:
        return await self.c.poll_schedule.find_one({"_id": order_id})

    async def claim_poll(
        self, order_id: str, slot: Slot, owner: str, now: datetime, lease_s: float
    ) -> str | None:
        """Claim the slot's attempt by inserting its polls record: whoever inserts it polls.
        Returns the record's _id, or None if another replica holds or made this poll."""
        attempt = slot.attempt
        lease = timedelta(seconds=lease_s)
        for _ in range(10):
            record = {
                "_id": f"{order_id}:{attempt}", "order_id": order_id, "attempt": attempt,
                "for_seq": slot.for_seq, "ladder_step": slot.ladder_step, "owner": owner,
                "claimed_at": now, "finished_at": None, "outcome": None,
            }
            existing = await self._insert_or_existing(self.c.polls, record)
            if existing is None:
                return str(record["_id"])
            if existing["finished_at"] is None:
                if existing["claimed_at"] + lease > now:
                    return None  # another replica is polling
                attempt += 1  # its owner died mid-poll: the next attempt number is free
                continue
            # Made already, yet the schedule we read says it is next: its owner is writing the
            # schedule now, or died before it could. After the lease, repair from its record.
            if existing["finished_at"] + lease <= now and existing.get("schedule"):
                await self.write_schedule(order_id, existing["schedule"])
            return None
        return None

    async def finish_poll(self, poll_id: str, fields: Document) -> None:
        # Only the owner of this attempt writes here.
        await self.c.polls.update_one({"_id": poll_id}, {"$set": fields})

    async def write_schedule(self, order_id: str, schedule: Document) -> None:
        # Only the owner of the newest attempt writes the schedule (or a repairer, with the same
        # values), so a whole-document replace is safe.
        try:
            await self.c.poll_schedule.replace_one({"_id": order_id}, schedule, upsert=True)
        except DuplicateKeyError:
            await self.c.poll_schedule.replace_one({"_id": order_id}, schedule)


def _version(sources: tuple[Document | None, Document | None, Document | None]) -> tuple[Any, ...]:
    latest, registration, schedule = sources
    return (
        (latest or {}).get("_id"),
        registration is not None,
        (schedule or {}).get("attempt"),
        (schedule or {}).get("updated_at"),
    )
