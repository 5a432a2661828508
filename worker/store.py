"""The worker's MongoDB operations. Coordination between replicas rests only on inserts under a
unique `_id`; updates touch documents that one kind of writer owns, with the same values."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.mongo import Collections
from shared.settings import ProjectSettings
from worker.records import Document, order_view

VIEW_REFRESH_ROUNDS = 10


class OrderStore:
    def __init__(self, collections: Collections, projects: Mapping[str, ProjectSettings]) -> None:
        self.c = collections
        self._projects = projects

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

    async def _sources(self, order_id: str) -> tuple[Document | None, Document | None]:
        return await self.latest_transition(order_id), await self.c.registrations.find_one(
            {"_id": order_id}
        )

    async def refresh_view(self, order_id: str) -> Document:
        """Rewrite the view from its sources, then re-read them: if another writer added a
        transition or the registration meanwhile, write again. Sources only grow, so the last
        writer's check sees what it wrote and the view converges without conditional updates."""
        project = self._projects.get(order_id.partition(":")[0])
        defaults = (project.default_product, project.default_flow) if project else ("p2p", "payin")
        latest, registration = await self._sources(order_id)
        view: dict[str, Any] = {}
        for _ in range(VIEW_REFRESH_ROUNDS):
            view = order_view(order_id, latest, registration, defaults)
            try:
                await self.c.orders.replace_one({"_id": order_id}, view, upsert=True)
            except DuplicateKeyError:
                pass  # two first upserts raced; the check below decides whether to write again
            now_latest, now_registration = await self._sources(order_id)
            same_latest = (now_latest or {}).get("_id") == (latest or {}).get("_id")
            if same_latest and (now_registration is None) == (registration is None):
                break
            latest, registration = now_latest, now_registration
        return view
