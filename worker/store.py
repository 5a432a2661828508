"""The worker's MongoDB operations. Coordination between replicas rests only on inserts under a
unique `_id`; updates touch documents that one kind of writer owns, with the same values."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared import mongo
from shared.mongo import Collections
from shared.settings import PollerSettings, ProjectSettings
from worker import ids
from worker.batch import InFlight, InsertBatcher, ReplaceBatcher
from worker.lru import Lru
from worker.records import Document, order_view, utc
from worker.schedule import Slot

VIEW_REFRESH_ROUNDS = 10
HINT_CACHE_SIZE = 20_000
# A hint older than this is not used: retention never deletes a log entry this young (its
# shortest age is a day), so nothing after such a hint can have been deleted.
HINT_MAX_AGE_S = 86400.0

class OrderStore:
    def __init__(
        self, collections: Collections, projects: Mapping[str, ProjectSettings],
        poller: PollerSettings | None = None, batch_window_s: float = 0.01,
        in_flight: InFlight | None = None,
    ) -> None:
        self.c = collections
        self._projects = projects
        self._poller = poller or PollerSettings()
        # The writes every alert makes, batched across the messages in flight.
        self.in_flight = in_flight or InFlight()
        self._inbox = InsertBatcher(collections.callbacks, batch_window_s, self.in_flight)
        self._log = InsertBatcher(collections.transitions, batch_window_s, self.in_flight)
        self._markers = InsertBatcher(collections.published, batch_window_s, self.in_flight)
        self._request_ids = InsertBatcher(collections.request_ids, batch_window_s, self.in_flight)
        self._views = ReplaceBatcher(collections.orders, batch_window_s, self.in_flight)
        # What this process last saw of an order (log head, registration): starting points
        # that save reads, never taken as the whole truth.
        self._seen: Lru[Document] = Lru(HINT_CACHE_SIZE)
        self._registered: Lru[Document] = Lru(HINT_CACHE_SIZE)
        self._schedules: Lru[Document] = Lru(HINT_CACHE_SIZE)

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
    # Written once, with its outcome, after the alert is processed: one write per alert, and a
    # crash before it simply redoes the alert (which then finds its own step in the log).
    async def find_in_inbox(self, key: str) -> Document | None:
        return await self.c.callbacks.find_one({"_id": key})

    async def add_to_inbox(self, doc: Document) -> None:
        await self._inbox.insert(doc)  # a duplicate: another attempt wrote the same fact

    # --- what the operator console finds by _id ---------------------------------------------
    async def record_aside(self, order_id: str, key: str) -> None:
        """An alert of the order that was not applied (stale, duplicate, anomaly): numbered
        per order, so its story lists it; applied ones are found through the log."""
        await mongo.append_numbered(self.c.asides, order_id, {"key": key,
                                                              "at": utc(time.time())})

    async def index_request_id(self, project_id: str, request_id: str, order_id: str) -> None:
        """Once per order (its first step): find it by the merchant's request id."""
        await self._request_ids.insert({"_id": ids.request_index(project_id, request_id),
                                        "order_id": order_id})

    async def needs_attention(self, order_id: str, view: Document) -> None:
        """An order given up: listed by the console until an operator marks it reviewed."""
        await self.c.attention.replace_one(
            {"_id": order_id},
            {"_id": order_id, "status": view["status"], "sub_status": view["sub_status"],
             "at": utc(time.time()), "reviewed": None}, upsert=True)

    # --- transition log (also the outbox) ---------------------------------------------------
    async def latest_transition(self, order_id: str) -> Document | None:
        """The order's newest log entry, found by `_id` only. The starting point is a hint that
        is never ahead of the log (what this process last saw, else the view's seq); the next
        ids are then probed until one is missing, so the hint is never trusted blindly. (The
        local MongoDB-compatible server indexes nothing but `_id` equality: a sorted query would
        read the whole log for every alert.)"""
        latest = self._seen.get(order_id)
        if latest is not None and latest["recorded_at"] < utc(time.time() - HINT_MAX_AGE_S):
            # Retention deletes the middle of an old log: probing on from an old hint could
            # stop at that gap and take an old step for the head.
            latest = None
        if latest is None:
            # No step 1 means no log at all: a new order (the common case) costs one read.
            latest = await self.c.transitions.find_one({"_id": ids.step(order_id, 1)})
            if latest is None:
                return None
            view = await self.c.orders.find_one({"_id": order_id}, projection={"seq": 1})
            seq = int(view.get("seq") or 0) if view else 0
            if seq > 1:
                latest = await self.c.transitions.find_one(
                    {"_id": ids.step(order_id, seq)}) or latest
        return await self._newer(order_id, latest)

    async def _newer(self, order_id: str, latest: Document | None) -> Document | None:
        seq = latest["seq"] if latest else 0
        while True:
            following = await self.c.transitions.find_one({"_id": ids.step(order_id, seq + 1)})
            if following is None:
                if latest is not None:
                    self._seen.put(order_id, latest)
                return latest
            latest, seq = following, seq + 1

    async def append_transition(self, doc: Document) -> bool:
        """True if we took step `seq`; False if another worker took it first."""
        if not await self._log.insert(doc):
            return False
        self._seen.put(doc["order_id"], doc)
        return True

    async def record_anomaly(self, doc: Document) -> Document:
        return await self._insert_or_existing(self.c.anomalies, doc) or doc

    async def mark_published(self, record: Document) -> None:
        """Record that the record's event went out: a marker inserted under its event_id, so
        log records stay immutable and any replica (or the relay) may write the same fact."""
        await self._markers.insert({"_id": record["event"]["event_id"], "at": utc(time.time())})
        record["published"] = True  # the caller's copy, which the hint cache may hold too

    async def next_check_sent(self, poll_id: str) -> bool:
        record = await self.c.polls.find_one({"_id": poll_id}, projection={"next_check_sent": 1})
        return bool(record and record.get("next_check_sent"))

    async def claim_job(self, job_id: str, owner: str) -> bool:
        """One replica runs a periodic job per period: whoever inserts its record."""
        try:
            await self.c.jobs.insert_one({"_id": job_id, "owner": owner,
                                          "at": utc(time.time())})
        except DuplicateKeyError:
            return False
        return True

    async def is_published(self, record: Document) -> bool:
        if record.get("published"):
            return True
        return await self.c.published.find_one({"_id": record["event"]["event_id"]}) is not None

    async def unpublished(
        self, collection: AsyncCollection[Document], window: tuple[datetime, datetime],
        limit: int,
    ) -> list[Document]:
        """Records with an event, recorded within `window`, whose event never went out."""
        since, until = window
        cursor = collection.find({"event": {"$exists": True},
                                  "recorded_at": {"$gte": since, "$lt": until}})
        found = []
        async for record in cursor.limit(limit * 10):
            if not await self.is_published(record):
                found.append(record)
                if len(found) >= limit:
                    break
        return found

    # --- registrations and the orders view --------------------------------------------------
    async def register(self, doc: Document) -> bool:
        """True if new. A second registration of the same order changes nothing."""
        existing = await self._insert_or_existing(self.c.registrations, doc)
        self._registered.put(doc["_id"], existing or doc)  # the view written next has it
        return existing is None

    async def refresh_view(self, order_id: str, latest: Document | None = None) -> Document:
        """Write the view from what is known (the caller's `latest`; this process's hints of
        the registration and the poll schedule), then read every source again, concurrently,
        by `_id`, and write again until a read finds nothing newer. The reads after the write
        are what make it converge without conditional updates: the sources only move forward,
        and whoever writes a source last reads the others after its own write."""
        project = self._projects.get(order_id.partition(":")[0])
        defaults = (project.default_product, project.default_flow) if project else (
            ProjectSettings.default_product, ProjectSettings.default_flow)
        if latest is None:
            latest = await self.latest_transition(order_id)
        registration = self._registered.get(order_id)
        schedule = self._schedules.get(order_id)
        view: dict[str, Any] = {}
        for _ in range(VIEW_REFRESH_ROUNDS):
            view = order_view(order_id, latest, registration, schedule, defaults, self._poller)
            landed = await self._views.replace(view)
            newer, now_registration, now_schedule = await asyncio.gather(
                self._newer(order_id, latest),
                self._registration(order_id) if registration is None else _known(registration),
                self.schedule(order_id))
            changed = (not landed or newer is not latest or now_registration is not registration
                       or _schedule_version(now_schedule) != _schedule_version(schedule))
            if not changed:
                break
            latest, registration, schedule = newer, now_registration, now_schedule
        return view

    async def _registration(self, order_id: str) -> Document | None:
        known = self._registered.get(order_id)
        if known is None:
            known = await self.c.registrations.find_one({"_id": order_id})
            if known is not None:  # never changes once written: remember it
                self._registered.put(order_id, known)
        return known

    # --- polls ------------------------------------------------------------------------------
    async def overdue_orders(self, cutoff: datetime, batch: int) -> AsyncIterator[Document]:
        """Non-final orders not given up whose poll was due before `cutoff`. One scan of the
        orders (MongoDB serves it from the next_poll_at index): for the hourly sweep only."""
        cursor = self.c.orders.find(
            {"final": False, "needs_review": False, "next_poll_at": {"$lt": cutoff}},
            projection={"_id": 1, "seq": 1, "next_poll_at": 1}, batch_size=batch)
        async for view in cursor:
            yield view

    async def schedule(self, order_id: str) -> Document | None:
        schedule = await self.c.poll_schedule.find_one({"_id": order_id})
        if schedule is not None:
            self._schedules.put(order_id, schedule)  # a hint for the next view write
        return schedule

    async def claim_poll(
        self, order_id: str, slot: Slot, owner: str, now: datetime, lease_s: float
    ) -> Slot | None:
        """Claim the slot's attempt by inserting its polls record: whoever inserts it polls.
        Returns the slot claimed (a later attempt than asked if an owner died mid-poll), or
        None if another replica holds or made this poll."""
        attempt = slot.attempt
        lease = timedelta(seconds=lease_s)
        for _ in range(10):
            record = {
                "_id": ids.poll(order_id, attempt), "order_id": order_id, "attempt": attempt,
                "for_seq": slot.for_seq, "ladder_step": slot.ladder_step, "owner": owner,
                "claimed_at": now, "finished_at": None, "outcome": None,
            }
            existing = await self._insert_or_existing(self.c.polls, record)
            if existing is None:
                return replace(slot, attempt=attempt)
            if existing["finished_at"] is None:
                if existing["claimed_at"] + lease > now:
                    return None  # another replica is polling
                attempt += 1  # its owner died mid-poll: the next attempt number is free
                continue
            # Made already, yet the schedule we read says it is next: its owner is writing the
            # schedule now, or died before it could. After the lease, repair from its record.
            if existing["finished_at"] + lease <= now and existing.get("schedule"):
                # Read again first: the schedule we decided on may be old by now (a newer
                # poll's owner wrote since), and an older one must not go back over it.
                current = await self.schedule(order_id)
                if current is None or int(current["attempt"]) < attempt:
                    await self.write_schedule(order_id, existing["schedule"])
                await self.refresh_view(order_id)  # its due time follows the schedule
            return None
        return None

    async def finish_poll(self, poll_id: str, fields: Document) -> None:
        # Only the owner of this attempt writes here (or whoever finishes its follow-up after
        # a crash, with the same values).
        await self.c.polls.update_one({"_id": poll_id}, {"$set": fields})

    async def write_schedule(self, order_id: str, schedule: Document) -> None:
        # Only the owner of the newest attempt writes the schedule (or a repairer, with the same
        # values), so a whole-document replace is safe.
        self._schedules.put(order_id, schedule)  # the view written next has it
        try:
            await self.c.poll_schedule.replace_one({"_id": order_id}, schedule, upsert=True)
        except DuplicateKeyError:
            await self.c.poll_schedule.replace_one({"_id": order_id}, schedule)


async def _known(value: Document) -> Document:
    return value


def _schedule_version(schedule: Document | None) -> tuple[Any, ...]:
    return (schedule or {}).get("attempt"), (schedule or {}).get("updated_at")
