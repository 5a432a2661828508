"""Recent activity for the operator console: the events a worker publishes, kept in memory and
appended every few seconds to the document of the current minute (`activity:{YYYYmmddHHMM}`).
A glance, not a record: at most `per_flush` entries a flush and process (the newest), nothing
written while idle, and what a crash had not flushed is lost. The console reads the last
minutes' documents by _id."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import UTC, datetime

import structlog
from pymongo.asynchronous.collection import AsyncCollection

from shared.alert import order_id
from shared.documents import ActivityEntry, ActivityMinute, Event

log = structlog.get_logger("worker.activity")


def minute_id(at: float) -> str:
    return "activity:" + datetime.fromtimestamp(at, UTC).strftime("%Y%m%d%H%M")


class ActivityFeed:
    def __init__(self, collection: AsyncCollection[ActivityMinute], per_flush: int = 20,
                 every_s: float = 5.0) -> None:
        self.collection = collection
        self.every_s = every_s
        self._pending: deque[ActivityEntry] = deque(maxlen=per_flush)

    def note(self, routing_key: str, event: Event) -> None:
        self._pending.append({
            "at": time.time(), "routing_key": routing_key, "type": event["type"],
            "order_id": order_id(event["project_id"], event["payment_id"]),
            "status": event["status"], "sub_status": event["sub_status"],
            "source": event["source"]})

    async def flush(self) -> None:
        if not self._pending:
            return
        entries = list(self._pending)
        self._pending.clear()
        # $push by _id: one writer kind, a display list; losing an entry harms nothing.
        await self.collection.update_one(
            {"_id": minute_id(entries[-1]["at"])},
            {"$push": {"events": {"$each": entries}}}, upsert=True)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - a glance: the next flush goes on
                log.warning("activity_flush_failed", error=type(exc).__name__)
