"""The worker's store, as small typed ports, one per kind of thing it holds: the inbox, the log,
the outbox's markers, the polls and their schedule, registrations, the orders view, periodic
jobs, and what the console finds by `_id`. They are the worker's only MongoDB code (PyMongo's
async collections, or the simulator's in-memory ones of the same semantics).

Coordination between replicas rests only on inserts under a unique `_id`; updates touch
documents that one kind of writer owns, with the same values."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared import mongo
from shared.documents import (
    Anomaly,
    EventRecord,
    InboxRecord,
    OrderView,
    PollFinish,
    PollRecord,
    Registration,
    Schedule,
    ScheduleRecord,
    Transition,
)
from shared.mongo import Collections
from shared.settings import PollerSettings, ProjectSettings
from worker import ids
from worker.batch import InFlight, InsertBatcher, ReplaceBatcher
from worker.lru import Lru
from worker.records import order_view, utc
from worker.schedule import Slot

VIEW_REFRESH_ROUNDS = 10
HINT_CACHE_SIZE = 20_000
# A hint older than this is not used: retention never deletes a log entry this young (its
# shortest age is a day), so nothing after such a hint can have been deleted.
HINT_MAX_AGE_S = 86400.0
CLAIM_ROUNDS = 10

D = TypeVar("D", bound=Mapping[str, Any])


async def _insert_or_existing(collection: AsyncCollection[D], doc: D) -> D | None:
    """Insert `doc`; None if it was new, else the document already stored under its _id."""
    try:
        await collection.insert_one(doc)
        return None
    except DuplicateKeyError:
        return await collection.find_one({"_id": doc["_id"]})


class Inbox:
    """Alerts processed, by idempotency key. Written once, with its outcome, after the alert
    is processed: one write per alert, and a crash before it simply redoes the alert (which
    then finds its own step in the log)."""

    def __init__(self, callbacks: AsyncCollection[InboxRecord], window_s: float,
                 in_flight: InFlight) -> None:
        self._callbacks = callbacks
        self._batch = InsertBatcher(callbacks, window_s, in_flight)

    async def find(self, key: str) -> InboxRecord | None:
        return await self._callbacks.find_one({"_id": key})

    async def add(self, record: InboxRecord) -> None:
        await self._batch.insert(record)  # a duplicate: another attempt wrote the same fact


class Log:
    """The order's transitions, `{order}:1`, `{order}:2`, ...: whoever inserts step n owns it.
    Each carries its event (the log is the outbox). Anomalies are kept beside it."""

    def __init__(self, c: Collections, window_s: float, in_flight: InFlight) -> None:
        self._transitions = c.transitions
        self._anomalies = c.anomalies
        self._orders = c.orders  # for the view's seq: where to start looking for the head
        self._batch = InsertBatcher(c.transitions, window_s, in_flight)
        # What this process last saw of an order's head: a starting point that saves reads,
        # never taken as the whole truth.
        self._seen: Lru[Transition] = Lru(HINT_CACHE_SIZE)

    async def head(self, order_id: str) -> Transition | None:
        """The order's newest entry, found by `_id` only. The starting point is a hint that is
        never ahead of the log (what this process last saw, else the view's seq); the next ids
        are then probed until one is missing, so the hint is never trusted blindly. (The local
        MongoDB-compatible server indexes nothing but `_id` equality: a sorted query would read
        the whole log for every alert.)"""
        latest = self._seen.get(order_id)
        if latest is not None and latest["recorded_at"] < utc(time.time() - HINT_MAX_AGE_S):
            # Retention deletes the middle of an old log: probing on from an old hint could
            # stop at that gap and take an old step for the head.
            latest = None
        if latest is None:
            # No step 1 means no log at all: a new order (the common case) costs one read.
            latest = await self._transitions.find_one({"_id": ids.step(order_id, 1)})
            if latest is None:
                return None
            view = await self._orders.find_one({"_id": order_id}, projection={"seq": 1})
            seq = int(view.get("seq") or 0) if view else 0
            if seq > 1:
                latest = await self._transitions.find_one(
                    {"_id": ids.step(order_id, seq)}) or latest
        return await self.newer(order_id, latest)

    async def newer(self, order_id: str, latest: Transition | None) -> Transition | None:
        """The head, probing on from `latest` (which is returned itself if nothing follows)."""
        seq = latest["seq"] if latest else 0
        while True:
            following = await self._transitions.find_one({"_id": ids.step(order_id, seq + 1)})
            if following is None:
                if latest is not None:
                    self._seen.put(order_id, latest)
                return latest
            latest, seq = following, seq + 1

    async def append(self, record: Transition) -> bool:
        """True if we took step `seq`; False if another worker took it first."""
        if not await self._batch.insert(record):
            return False
        self._seen.put(record["order_id"], record)
        return True

    async def record_anomaly(self, record: Anomaly) -> Anomaly:
        """The anomaly as stored (this one, or the same alert's from an earlier try)."""
        return await _insert_or_existing(self._anomalies, record) or record


class Outbox:
    """Which events went out: a marker inserted under the event_id, so that records stay
    immutable and any replica (or the relay) may write the same fact. Records with an event
    are steps, anomalies and polls that gave up."""

    def __init__(self, c: Collections, window_s: float, in_flight: InFlight) -> None:
        self._published = c.published
        self._batch = InsertBatcher(c.published, window_s, in_flight)
        self.sources: tuple[AsyncCollection[Any], ...] = (c.transitions, c.anomalies, c.polls)

    async def mark(self, event_id: str) -> None:
        await self._batch.insert({"_id": event_id, "at": utc(time.time())})

    async def is_published(self, record: EventRecord) -> bool:
        if record.get("published"):
            return True
        return await self._published.find_one({"_id": record["event"]["event_id"]}) is not None

    async def unpublished(self, source: AsyncCollection[Any],
                          window: tuple[datetime, datetime], limit: int) -> list[EventRecord]:
        """Records of `source` with an event, recorded within `window`, whose event never
        went out."""
        since, until = window
        cursor = source.find({"event": {"$exists": True},
                              "recorded_at": {"$gte": since, "$lt": until}})
        found: list[EventRecord] = []
        async for record in cursor.limit(limit * 10):
            if not await self.is_published(record):
                found.append(record)
                if len(found) >= limit:
                    break
        return found


@dataclass(frozen=True)
class Claimed:
    slot: Slot  # the attempt claimed: a later one than asked if an owner died mid-poll


@dataclass(frozen=True)
class Busy:
    """Another replica holds this poll."""


@dataclass(frozen=True)
class Made:
    record: PollRecord  # the poll was made already


Claim = Claimed | Busy | Made


class Polls:
    """Poll attempts, `{order}:{attempt}`, claimed by inserting the record; and each order's
    schedule, written by the owner of its newest attempt."""

    def __init__(self, c: Collections) -> None:
        self._polls = c.polls
        self._schedule = c.poll_schedule
        self._schedules: Lru[ScheduleRecord] = Lru(HINT_CACHE_SIZE)

    async def claim(self, order_id: str, slot: Slot, owner: str, now: datetime,
                    lease_s: float) -> Claim:
        """Claim the slot's attempt by inserting its record: whoever inserts it polls. An
        attempt whose owner died mid-poll (its lease run out) is skipped for the next."""
        attempt = slot.attempt
        lease = timedelta(seconds=lease_s)
        for _ in range(CLAIM_ROUNDS):
            record: PollRecord = {
                "_id": ids.poll(order_id, attempt), "order_id": order_id, "attempt": attempt,
                "for_seq": slot.for_seq, "ladder_step": slot.ladder_step, "owner": owner,
                "claimed_at": now, "finished_at": None, "outcome": None,
            }
            existing = await _insert_or_existing(self._polls, record)
            if existing is None:
                return Claimed(replace(slot, attempt=attempt))
            if existing["finished_at"] is not None:
                return Made(existing)
            if existing["claimed_at"] + lease > now:
                return Busy()
            attempt += 1  # its owner died mid-poll: the next attempt number is free
        return Busy()

    async def get(self, poll_id: str) -> PollRecord | None:
        return await self._polls.find_one({"_id": poll_id})

    async def finish(self, poll_id: str, fields: PollFinish) -> None:
        # Only the owner of this attempt writes here (or whoever finishes its follow-up after
        # a crash, with the same values).
        await self._polls.update_one({"_id": poll_id}, {"$set": fields})

    async def next_check_sent(self, poll_id: str) -> bool:
        record = await self._polls.find_one({"_id": poll_id},
                                            projection={"next_check_sent": 1})
        return bool(record and record.get("next_check_sent"))

    def schedule_hint(self, order_id: str) -> ScheduleRecord | None:
        return self._schedules.get(order_id)

    async def schedule(self, order_id: str) -> ScheduleRecord | None:
        schedule = await self._schedule.find_one({"_id": order_id})
        if schedule is not None:
            self._schedules.put(order_id, schedule)  # a hint for the next view write
        return schedule

    async def write_schedule(self, order_id: str, schedule: Schedule) -> None:
        # Only the owner of the newest attempt writes the schedule (or a repairer, with the same
        # values), so a whole-document replace is safe.
        record: ScheduleRecord = {"_id": order_id, **schedule}
        self._schedules.put(order_id, record)  # the view written next has it
        try:
            await self._schedule.replace_one({"_id": order_id}, record, upsert=True)
        except DuplicateKeyError:
            await self._schedule.replace_one({"_id": order_id}, record)


class Registrations:
    """What the merchant backend told us of an order, by order id; never changes once written."""

    def __init__(self, c: Collections) -> None:
        self._registrations = c.registrations
        self._known: Lru[Registration] = Lru(HINT_CACHE_SIZE)

    async def register(self, record: Registration) -> bool:
        """True if new. A second registration of the same order changes nothing."""
        existing = await _insert_or_existing(self._registrations, record)
        self._known.put(record["_id"], existing or record)  # the view written next has it
        return existing is None

    def hint(self, order_id: str) -> Registration | None:
        return self._known.get(order_id)

    async def get(self, order_id: str) -> Registration | None:
        known = self._known.get(order_id)
        if known is None:
            known = await self._registrations.find_one({"_id": order_id})
            if known is not None:  # never changes once written: remember it
                self._known.put(order_id, known)
        return known


class Views:
    """The orders view: derived wholly from the log's head, the registration and the schedule,
    and written by whoever changed one of them."""

    def __init__(self, c: Collections, log: Log, registrations: Registrations, polls: Polls,
                 projects: Mapping[str, ProjectSettings], poller: PollerSettings,
                 window_s: float, in_flight: InFlight) -> None:
        self._orders = c.orders
        self._log = log
        self._registrations = registrations
        self._polls = polls
        self._projects = projects
        self._poller = poller
        self._batch = ReplaceBatcher(c.orders, window_s, in_flight)

    async def find(self, order_id: str) -> OrderView | None:
        return await self._orders.find_one({"_id": order_id})

    async def refresh(self, order_id: str, latest: Transition | None = None) -> OrderView:
        """Write the view from what is known (the caller's `latest`; this process's hints of
        the registration and the poll schedule), then read every source again, concurrently,
        by `_id`, and write again until a read finds nothing newer. The reads after the write
        are what make it converge without conditional updates: the sources only move forward,
        and whoever writes a source last reads the others after its own write."""
        project = self._projects.get(order_id.partition(":")[0])
        defaults = (project.default_product, project.default_flow) if project else (
            ProjectSettings.default_product, ProjectSettings.default_flow)
        if latest is None:
            latest = await self._log.head(order_id)
        registration = self._registrations.hint(order_id)
        schedule = self._polls.schedule_hint(order_id)
        view: OrderView
        for _ in range(VIEW_REFRESH_ROUNDS):
            view = order_view(order_id, latest, registration, schedule, defaults, self._poller)
            landed = await self._batch.replace(view)
            newer, now_registration, now_schedule = await asyncio.gather(
                self._log.newer(order_id, latest),
                self._registrations.get(order_id) if registration is None
                else _known(registration),
                self._polls.schedule(order_id))
            changed = (not landed or newer is not latest or now_registration is not registration
                       or _schedule_version(now_schedule) != _schedule_version(schedule))
            if not changed:
                break
            latest, registration, schedule = newer, now_registration, now_schedule
        return view

    async def overdue(self, cutoff: datetime, batch: int) -> AsyncIterator[OrderView]:
        """Non-final orders not given up whose poll was due before `cutoff`. One scan of the
        orders (MongoDB serves it from the next_poll_at index): for the hourly sweep only."""
        cursor = self._orders.find(
            {"final": False, "needs_review": False, "next_poll_at": {"$lt": cutoff}},
            projection={"_id": 1, "seq": 1, "next_poll_at": 1}, batch_size=batch)
        async for view in cursor:
            yield view


class Jobs:
    def __init__(self, c: Collections) -> None:
        self._jobs = c.jobs

    async def claim(self, job_id: str, owner: str) -> bool:
        """One replica runs a periodic job per period: whoever inserts its record."""
        try:
            await self._jobs.insert_one({"_id": job_id, "owner": owner, "at": utc(time.time())})
        except DuplicateKeyError:
            return False
        return True


class Findings:
    """What the operator console finds by `_id`: an order by the merchant's request id, the
    alerts that were not applied, the orders given up."""

    def __init__(self, c: Collections, window_s: float, in_flight: InFlight) -> None:
        self._c = c
        self._request_ids = InsertBatcher(c.request_ids, window_s, in_flight)

    async def aside(self, order_id: str, key: str) -> None:
        """An alert of the order that was not applied (stale, duplicate, anomaly): numbered
        per order, so its story lists it; applied ones are found through the log."""
        await mongo.append_numbered(self._c.asides, order_id, {"key": key,
                                                               "at": utc(time.time())})

    async def request_id(self, project_id: str, request_id: str, order_id: str) -> None:
        """Once per order (its first step): find it by the merchant's request id."""
        await self._request_ids.insert({"_id": ids.request_index(project_id, request_id),
                                        "order_id": order_id})

    async def needs_attention(self, view: OrderView) -> None:
        """An order given up: listed by the console until an operator marks it reviewed."""
        await self._c.attention.replace_one(
            {"_id": view["_id"]},
            {"_id": view["_id"], "status": view["status"], "sub_status": view["sub_status"],
             "at": utc(time.time()), "reviewed": None}, upsert=True)


@dataclass(frozen=True)
class Store:
    """The ports, over one database's collections. The writes every alert makes are batched
    across the alerts in flight (`in_flight` counts them)."""

    collections: Collections
    in_flight: InFlight
    inbox: Inbox
    log: Log
    outbox: Outbox
    polls: Polls
    registrations: Registrations
    views: Views
    jobs: Jobs
    findings: Findings

    @classmethod
    def of(cls, c: Collections, projects: Mapping[str, ProjectSettings],
           poller: PollerSettings | None = None, window_s: float = 0.01) -> Store:
        in_flight = InFlight()
        log, polls, registrations = Log(c, window_s, in_flight), Polls(c), Registrations(c)
        return cls(c, in_flight, Inbox(c.callbacks, window_s, in_flight), log,
                   Outbox(c, window_s, in_flight), polls, registrations,
                   Views(c, log, registrations, polls, projects, poller or PollerSettings(),
                         window_s, in_flight),
                   Jobs(c), Findings(c, window_s, in_flight))


async def _known(value: Registration) -> Registration:
    return value


def _schedule_version(schedule: Schedule | None) -> tuple[Any, ...]:
    if schedule is None:
        return None, None
    return schedule["attempt"], schedule["updated_at"]
