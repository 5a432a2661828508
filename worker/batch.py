"""Writes of the messages in flight, gathered into one command per collection: inserts into
`insert_many(ordered=False)` (each duplicate key reported on its own), view replaces into one
`bulk_write`. Each caller still awaits its own write, so a message is acked only after its
own effects are durable; a batch only saves round trips."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from pymongo import ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

D = TypeVar("D", bound=Mapping[str, Any])  # the collection's document type
DUPLICATE_KEY = 11000
MAX_BATCH = 256


class InFlight:
    """How many alerts are being processed: no more writers than that can join a batch."""

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> None:
        self.count += 1

    def __exit__(self, *_exc: object) -> None:
        self.count -= 1


class _Batcher(Generic[D]):
    """Collects operations until every alert in flight has sent one, for at most `window_s`
    after the first (or MAX_BATCH of them), then runs them in one command. A lone alert's
    write goes at once."""

    def __init__(self, collection: AsyncCollection[D], window_s: float,
                 in_flight: InFlight | None = None) -> None:
        self.collection = collection
        self.window_s = window_s
        self.in_flight = in_flight or InFlight()
        self._pending: list[tuple[D, asyncio.Future[bool]]] = []
        self._timer: asyncio.TimerHandle | None = None

    async def _submit(self, doc: D) -> bool:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._pending.append((doc, done))
        if len(self._pending) >= max(1, min(MAX_BATCH, self.in_flight.count)):
            self._flush_now()
        elif self._timer is None:
            self._timer = loop.call_later(self.window_s, self._flush_now)
        return await done

    def _flush_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            _RUNNING.add(task)
            task.add_done_callback(_RUNNING.discard)

    async def _run(self, batch: list[tuple[D, asyncio.Future[bool]]]) -> None:
        try:
            duplicates = await self._write([doc for doc, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every caller gets its own write's failure
            _fail(batch, exc)
            return
        except asyncio.CancelledError:
            _fail(batch, RuntimeError("write cancelled"))
            raise
        for index, (_, done) in enumerate(batch):
            if not done.done():
                done.set_result(index not in duplicates)

    async def _write(self, docs: list[D]) -> set[int]:
        raise NotImplementedError


_RUNNING: set[asyncio.Task[None]] = set()  # strong references to flushes in flight


def _fail(batch: list[tuple[Any, asyncio.Future[bool]]], exc: Exception) -> None:
    for _, done in batch:
        if not done.done():
            done.set_exception(exc)


def _duplicates(error: BulkWriteError) -> set[int]:
    """The indexes of the operations refused for a duplicate key; any other error raises."""
    errors = error.details.get("writeErrors", [])
    others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
    if others or error.details.get("writeConcernErrors"):
        raise error
    return {int(e["index"]) for e in errors}


class InsertBatcher(_Batcher[D]):
    async def insert(self, doc: D) -> bool:
        """True if inserted; False if a document with its `_id` was there already."""
        return await self._submit(doc)

    async def _write(self, docs: list[D]) -> set[int]:
        try:
            await self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as error:
            return _duplicates(error)
        return set()


class ReplaceBatcher(_Batcher[D]):
    async def replace(self, doc: D) -> bool:
        """Upsert the whole document; False if it lost the race of two first upserts of one
        `_id` (a duplicate key, not an error here): the other writer's document stands, and
        the caller writes again."""
        return await self._submit(doc)

    async def _write(self, docs: list[D]) -> set[int]:
        try:
            await self.collection.bulk_write(
                [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in docs],
                ordered=False)
        except BulkWriteError as error:
            return _duplicates(error)
        return set()
