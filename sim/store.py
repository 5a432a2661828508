"""In-memory collections with the local server's semantics that the design relies on, and no
more: an insert under a taken `_id` fails, atomically; `insert_many(ordered=False)` reports
each duplicate; updates and replaces read, then write back the whole document (two of them
interleaved may lose one's change); queries match a small filter language by scanning. Every
call waits at a scheduler point first, and may fail there (or, for a write, after its effect:
the answer lost on the way)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import DeleteOne, ReplaceOne
from pymongo.errors import AutoReconnect, BulkWriteError, DuplicateKeyError

from sim.sched import Go, Scheduler

Document = dict[str, Any]


def _copy(value: Any) -> Any:
    """A stored value's own copy, as a driver's encoding gives: documents hold dicts, lists and
    immutable scalars (datetimes among them) only, so this is deepcopy without its cost."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
DUPLICATE_KEY = 11000


def _get(doc: Document, path: str) -> tuple[bool, Any]:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _comparable(a: Any, b: Any) -> bool:
    return (isinstance(a, str) and isinstance(b, str)) or (
        isinstance(a, datetime) and isinstance(b, datetime)) or (
        isinstance(a, int | float) and isinstance(b, int | float)
        and not isinstance(a, bool) and not isinstance(b, bool))


_ORDER = {"$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b,
          "$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b}


def _holds(op: str, present: bool, value: Any, arg: Any) -> bool:
    if op == "$exists":
        return present == bool(arg)
    if op in _ORDER:
        return present and _comparable(value, arg) and bool(_ORDER[op](value, arg))
    raise NotImplementedError(f"sim store: operator {op}")


def _is_operators(condition: Any) -> bool:
    return isinstance(condition, dict) and bool(condition) and all(
        k.startswith("$") for k in condition)


def matches(doc: Document, query: Document) -> bool:
    """The filters the worker's rare scans use: equality, $exists, ranges, $or; dotted paths."""
    for key, condition in query.items():
        if key == "$or":
            if not any(matches(doc, q) for q in condition):
                return False
            continue
        present, value = _get(doc, key)
        if _is_operators(condition):
            if not all(_holds(op, present, value, arg) for op, arg in condition.items()):
                return False
        elif not present or value != condition:
            return False
    return True


@dataclass
class _Result:
    deleted_count: int = 0


class MemCursor:
    def __init__(self, docs: list[Document], sched: Scheduler, label: str) -> None:
        self._docs = docs
        self._sched = sched
        self._label = label

    def limit(self, n: int) -> MemCursor:
        self._docs = self._docs[:n]
        return self

    def __aiter__(self) -> AsyncIterator[Document]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Document]:
        await _go(self._sched, self._label)
        for doc in self._docs:
            yield _copy(doc)


async def _go(sched: Scheduler, label: str, *, write: bool = False) -> bool:
    """Wait at the point; True if the effect must be followed by a lost answer."""
    go = await sched.point(label, can_fail_after=write)
    if go is Go.FAIL:
        raise AutoReconnect("sim: connection lost")
    return go is Go.FAIL_AFTER


def _lost() -> AutoReconnect:
    return AutoReconnect("sim: connection lost after the write")


class MemCollection:
    def __init__(self, name: str, sched: Scheduler) -> None:
        self.name = name
        self.docs: dict[Any, Document] = {}
        self._sched = sched

    # --- reads --------------------------------------------------------------------------
    async def find_one(self, query: Document, projection: Any = None) -> Document | None:
        if set(query) == {"_id"} and not isinstance(query["_id"], dict):
            await _go(self._sched, f"{self.name}.find_one {query['_id']}")
            doc = self.docs.get(query["_id"])
            return _copy(doc) if doc is not None else None
        await _go(self._sched, f"{self.name}.find_one {query}")
        found = [d for d in self.docs.values() if matches(d, query)]
        return _copy(found[0]) if found else None

    def find(self, query: Document, projection: Any = None, batch_size: int = 0
             ) -> MemCursor:
        found = [d for d in self.docs.values() if matches(d, query)]
        return MemCursor(found, self._sched, f"{self.name}.find")

    async def count_documents(self, query: Document) -> int:
        await _go(self._sched, f"{self.name}.count_documents")
        return sum(matches(d, query) for d in self.docs.values())

    # --- writes -------------------------------------------------------------------------
    async def insert_one(self, doc: Document) -> None:
        lost = await _go(self._sched, f"{self.name}.insert_one {doc['_id']}", write=True)
        if doc["_id"] in self.docs:
            raise DuplicateKeyError(f"sim: duplicate key {doc['_id']}", DUPLICATE_KEY)
        self.docs[doc["_id"]] = _copy(doc)
        if lost:
            raise _lost()

    async def insert_many(self, docs: Iterable[Document], ordered: bool = True) -> None:
        docs = list(docs)
        assert not ordered, "the worker inserts many unordered"
        lost = await _go(self._sched, f"{self.name}.insert_many {[d['_id'] for d in docs]}",
                         write=True)
        errors = []
        for index, doc in enumerate(docs):
            if doc["_id"] in self.docs:
                errors.append({"index": index, "code": DUPLICATE_KEY})
            else:
                self.docs[doc["_id"]] = _copy(doc)
        if lost:
            raise _lost()
        if errors:
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": []})

    async def replace_one(self, query: Document, doc: Document, upsert: bool = False) -> None:
        key = query["_id"]
        await _go(self._sched, f"{self.name}.replace_one(read) {key}")
        existed = key in self.docs  # read, then write back: another writer may come between
        lost = await _go(self._sched, f"{self.name}.replace_one(write) {key}", write=True)
        self._write_back(key, {**doc, "_id": key}, existed, upsert)
        if lost:
            raise _lost()

    def _write_back(self, key: Any, doc: Document, existed: bool, upsert: bool) -> None:
        if existed:
            if key in self.docs:
                self.docs[key] = _copy(doc)
        elif upsert:
            if key in self.docs:
                raise DuplicateKeyError(f"sim: duplicate key {key}", DUPLICATE_KEY)
            self.docs[key] = _copy(doc)

    async def update_one(self, query: Document, update: Document, upsert: bool = False
                         ) -> None:
        key = query["_id"]
        await _go(self._sched, f"{self.name}.update_one(read) {key}")
        before = self.docs.get(key)
        doc = _copy(before) if before is not None else ({"_id": key} if upsert else None)
        lost = await _go(self._sched, f"{self.name}.update_one(write) {key}", write=True)
        if doc is None:
            return
        for op, fields in update.items():
            for name, value in fields.items():
                if op == "$set":
                    doc[name] = _copy(value)
                elif op == "$push":
                    doc.setdefault(name, []).extend(_copy(value["$each"]))
                else:
                    raise NotImplementedError(f"sim store: update {op}")
        self._write_back(key, doc, before is not None, upsert)
        if lost:
            raise _lost()

    async def bulk_write(self, requests: list[Any], ordered: bool = True) -> _Result:
        ids = [r._filter["_id"] for r in requests]
        await _go(self._sched, f"{self.name}.bulk_write(read) {ids}")
        existed = [key in self.docs for key in ids]
        lost = await _go(self._sched, f"{self.name}.bulk_write(write) {ids}", write=True)
        result, errors = _Result(), []
        for index, (request, was) in enumerate(zip(requests, existed, strict=True)):
            key = request._filter["_id"]
            if isinstance(request, DeleteOne):
                result.deleted_count += self.docs.pop(key, None) is not None
            elif isinstance(request, ReplaceOne):
                try:
                    self._write_back(key, {**request._doc, "_id": key}, was,
                                     bool(request._upsert))
                except DuplicateKeyError:
                    errors.append({"index": index, "code": DUPLICATE_KEY})
            else:
                raise NotImplementedError(f"sim store: bulk {type(request).__name__}")
        if lost:
            raise _lost()
        if errors:
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": []})
        return result

    async def delete_many(self, query: Document) -> _Result:
        lost = await _go(self._sched, f"{self.name}.delete_many", write=True)
        doomed = [key for key, d in self.docs.items() if matches(d, query)]
        for key in doomed:
            del self.docs[key]
        if lost:
            raise _lost()
        return _Result(len(doomed))
