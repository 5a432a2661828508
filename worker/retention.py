"""Retention: what an order no longer needs once it is settled (or given up) and older than the
configured ages goes, by a bounded, rate-limited job (in the hourly maintenance, one replica per
period; `hh-admin retention --dry-run` counts what it would take).

What the state machine needs to decide stays, so that a late or repeated alert after retention
changes nothing and publishes nothing new: the orders view, the poll schedule, and the log's
first and last entries with the last one's published marker (the worker finds an order's log
head from `{order}:1` and the view's seq). Everything else is deleted by `_id`: the middle of
the log and its markers, the polls and their events' markers, inbox records and anomalies.
Finding the candidates reads whole collections on the local server: once a period, paged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from pymongo import DeleteOne
from pymongo.asynchronous.collection import AsyncCollection

from shared import alert
from shared.documents import OrderView
from shared.mongo import Collections
from shared.settings import PollerSettings, RetentionSettings
from worker import ids
from worker.activity import minute_id
from worker.lru import Lru
from worker.records import utc

log = structlog.get_logger("worker.retention")
DAY_S = 86400.0
BATCH = 500


@dataclass
class Taken:
    """What a run deleted (or, in a dry run, would delete), by collection."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("callbacks", "transitions", "polls", "anomalies", "published"), 0))


def ttl_seconds(settings: RetentionSettings, poller: PollerSettings, ferretdb: bool
                ) -> dict[str, int]:
    """The collections the server may expire by a TTL index instead of the job: only on a
    server that does expire (not FerretDB 1.x), and only when every order older than the age
    has settled or been given up (polling on, giving up sooner than the shortest age); a TTL
    index cannot tell a settled order's record from another's. The log is always trimmed by
    the job: its ends must stay."""
    if ferretdb or not settings.enabled or not poller.enabled:
        return {}
    ages = {"callbacks": settings.inbox_days, "polls": settings.polls_days,
            "anomalies": settings.anomalies_days}
    return {name: int(days * DAY_S) for name, days in ages.items()
            if poller.give_up_after_s < days * DAY_S}


class Retention:
    def __init__(self, collections: Collections, settings: RetentionSettings,
                 expiring: set[str] | frozenset[str] = frozenset()) -> None:
        self.c = collections
        self.settings = settings
        self.expiring = expiring  # collections a TTL index expires: the job leaves them

    def _cutoff(self, days: float, now: float) -> Any:
        return utc(now - days * DAY_S)

    async def run(self, now: float | None = None, *, dry_run: bool = False) -> dict[str, int]:
        now = time.time() if now is None else now
        taken = Taken()
        self._dry_run, self._taken, self._deleted_since_pause = dry_run, taken, 0
        s = self.settings
        async for view in self._settled_orders(self._cutoff(
                min(s.transitions_days, s.polls_days), now)):
            await self._trim_order(view, now)
        if "callbacks" not in self.expiring:
            await self._inbox(now)
        if "anomalies" not in self.expiring:
            await self._anomalies(now)
        await self._glances(now)
        log.info("retention_done", dry_run=dry_run, **taken.counts)
        return taken.counts

    async def _settled_orders(self, before: Any) -> AsyncIterator[OrderView]:
        cursor = self.c.orders.find(
            {"$or": [{"final": True}, {"needs_review": True}], "updated_at": {"$lt": before}},
            projection={"_id": 1, "seq": 1, "polls": 1, "updated_at": 1}, batch_size=BATCH)
        async for view in cursor:
            yield view

    async def _trim_order(self, view: OrderView, now: float) -> None:
        order_id, seq, polls = view["_id"], int(view["seq"]), int(view.get("polls") or 0)
        if view["updated_at"] < self._cutoff(self.settings.transitions_days, now) and seq > 2:
            middle = [ids.step(order_id, n) for n in range(2, seq)]  # the first and last stay
            markers = [ids.event(record_id) for record_id in middle]
            await self._delete(self.c.transitions, middle)
            await self._delete(self.c.published, markers)
        if ("polls" not in self.expiring and polls
                and view["updated_at"] < self._cutoff(self.settings.polls_days, now)):
            made = [ids.poll(order_id, n) for n in range(1, polls + 1)]
            events = [ids.stale_event(poll_id) for poll_id in made]
            await self._delete(self.c.polls, made)
            await self._delete(self.c.published, events)

    async def _inbox(self, now: float) -> None:
        """Inbox records are named by their alert, not by the order: found by one scan."""
        cutoff = self._cutoff(self.settings.inbox_days, now)
        settled: Lru[bool] = Lru(10_000)  # an order's records come together, mostly
        doomed: list[str] = []
        cursor = self.c.callbacks.find({"processed_at": {"$lt": cutoff}},
                                       projection={"_id": 1, "project_id": 1, "payment_id": 1},
                                       batch_size=BATCH)
        async for record in cursor:
            order_id = alert.order_id(record["project_id"], record["payment_id"])
            is_settled = settled.get(order_id)
            if is_settled is None:
                view = await self.c.orders.find_one({"_id": order_id},
                                                    projection={"final": 1, "needs_review": 1})
                is_settled = bool(view and (view["final"] or view["needs_review"]))
                settled.put(order_id, is_settled)
            if is_settled:
                doomed.append(record["_id"])
            if len(doomed) >= BATCH:
                await self._delete(self.c.callbacks, doomed)
                doomed = []
        await self._delete(self.c.callbacks, doomed)

    async def _anomalies(self, now: float) -> None:
        """An anomaly only ever follows a final status: its order is settled."""
        cutoff = self._cutoff(self.settings.anomalies_days, now)
        ids: list[str] = []
        markers: list[str] = []
        async for record in self.c.anomalies.find({"recorded_at": {"$lt": cutoff}},
                                                  projection={"_id": 1, "event.event_id": 1},
                                                  batch_size=BATCH):
            ids.append(record["_id"])
            markers.append(record["event"]["event_id"])
            if len(ids) >= BATCH:  # a page at a time: memory stays bounded
                await self._delete(self.c.anomalies, ids)
                await self._delete(self.c.published, markers)
                ids, markers = [], []
        await self._delete(self.c.anomalies, ids)
        await self._delete(self.c.published, markers)

    async def _glances(self, now: float) -> None:
        """The console's records that would otherwise pile up: activity minutes older than a
        day, expired sign-ins, and payments reviewed longer ago than inbox_days (the audit
        keeps who reviewed them). So each of these collections stays small, and the console's
        lists, which read them whole, cost the same at any history."""
        reviewed_before = self._cutoff(self.settings.inbox_days, now)
        for collection, stale in (
                (self.c.activity, {"_id": {"$lt": minute_id(now - DAY_S)}}),
                (self.c.sessions, {"expires_at": {"$lt": utc(now)}}),
                (self.c.attention, {"reviewed.at": {"$lt": reviewed_before}})):
            if self._dry_run:
                gone = await collection.count_documents(stale)
            else:
                gone = (await collection.delete_many(stale)).deleted_count
            if gone:
                self._taken.counts[collection.name] = (
                    self._taken.counts.get(collection.name, 0) + gone)

    async def _delete(self, collection: AsyncCollection[Any], ids: list[str]) -> None:
        """Delete by exact `_id` (the local server's index), in bounded batches, at most
        rate_per_s a second. A dry run counts the documents that are there."""
        for start in range(0, len(ids), BATCH):
            batch = ids[start:start + BATCH]
            if self._dry_run:
                found = [await collection.find_one({"_id": i}, projection={"_id": 1})
                         for i in batch]
                self._taken.counts[collection.name] += sum(f is not None for f in found)
                continue
            result = await collection.bulk_write([DeleteOne({"_id": i}) for i in batch],
                                                 ordered=False)
            self._taken.counts[collection.name] += result.deleted_count
            self._deleted_since_pause += len(batch)
            if self._deleted_since_pause >= self.settings.rate_per_s:
                self._deleted_since_pause = 0
                await asyncio.sleep(1.0)
