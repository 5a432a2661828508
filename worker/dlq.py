"""Dead letters (hh.callbacks.dead): list, show, redrive, purge.

Reading a queue without taking messages off it: each message is fetched unacknowledged and
handed back when the channel closes. A redriven message is published again to the queue it was
taken from (an alert to hh.callbacks.process, a registration to hh.orders.register), with
confirm, before its dead copy is acked, so nothing is lost; the worker's dedup keeps a message
that was in fact processed from having a second effect.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from shared.broker import Broker
from shared.topology import (
    ATTEMPTS_HEADER,
    DEAD_AT_HEADER,
    DEAD_QUEUE,
    ORIGIN_HEADER,
    PROCESS_QUEUE,
    REASON_HEADER,
    REDRIVEN_AT_HEADER,
)


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    reason: str
    dead_at: str
    attempts: int
    queue: str  # the queue it was taken from, and goes back to
    correlation_id: str
    body: bytes

    def summary(self, now: float) -> dict[str, Any]:
        return {"id": self.message_id, "reason": self.reason, "dead_at": self.dead_at,
                "age_s": _age(self.dead_at, now), "attempts": self.attempts,
                "queue": self.queue, "correlation_id": self.correlation_id}


def _age(dead_at: str, now: float) -> float | None:
    try:
        return round(now - datetime.fromisoformat(dead_at).timestamp(), 1)
    except ValueError:
        return None


def origin(headers: Mapping[str, Any]) -> str:
    """The queue a dead letter was taken from: as the worker recorded it, else as the broker
    did (x-death, for a message it dead-lettered itself at the delivery limit; the newest
    death comes first), else the alerts' queue (letters from before the origin was recorded)."""
    if ORIGIN_HEADER in headers:
        return str(headers[ORIGIN_HEADER])
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return str(deaths[0].get("queue") or PROCESS_QUEUE)
    return PROCESS_QUEUE


def _letter(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    return DeadLetter(
        message_id=message.message_id or "", reason=str(headers.get(REASON_HEADER, "")),
        dead_at=str(headers.get(DEAD_AT_HEADER, "")),
        attempts=int(str(headers.get(ATTEMPTS_HEADER, 0) or 0)),
        queue=origin(headers), correlation_id=message.correlation_id or "", body=message.body)


Visit = Callable[[AbstractIncomingMessage, "DeadLetter"], Awaitable[None]]


async def _walk(broker: Broker, act: Visit, limit: int) -> list[DeadLetter]:
    """Visit up to `limit` dead letters on a private channel; what `act` does not ack goes back
    to the queue when the channel closes."""
    assert broker.connection is not None
    channel = await broker.connection.channel()
    try:
        queue = await channel.get_queue(DEAD_QUEUE)
        seen = []
        for _ in range(limit):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            letter = _letter(message)
            seen.append(letter)
            await act(message, letter)
        return seen
    finally:
        await channel.close()


async def list_letters(broker: Broker, limit: int = 1000) -> list[DeadLetter]:
    async def keep(_m: AbstractIncomingMessage, _l: DeadLetter) -> None:
        return None

    return await _walk(broker, keep, limit)


async def redrive(
    broker: Broker, match: Callable[[DeadLetter], bool], limit: int = 1000
) -> list[DeadLetter]:
    """Send matching dead letters back through the normal path; returns those sent."""
    sent: list[DeadLetter] = []

    async def act(message: AbstractIncomingMessage, letter: DeadLetter) -> None:
        if not match(letter):
            return
        # Our x-hh-* headers (attempts, reason) and the broker's x-death start afresh.
        headers = {k: v for k, v in (message.headers or {}).items()
                   if not k.startswith("x-hh-") and k not in ("x-death", ORIGIN_HEADER)}
        await broker.publish("", letter.queue, message.body,
                             correlation_id=letter.correlation_id,
                             headers={**headers, REDRIVEN_AT_HEADER: time.time()})
        await message.ack()  # only after the confirm of the copy
        sent.append(letter)

    await _walk(broker, act, limit)
    return sent


async def purge(broker: Broker) -> int:
    assert broker.connection is not None
    channel = await broker.connection.channel()
    try:
        queue = await channel.get_queue(DEAD_QUEUE)
        result = await queue.purge()
        return int(getattr(result, "message_count", 0) or 0)
    finally:
        await channel.close()


def matcher(
    ids: list[str], reason_contains: str | None, every: bool
) -> Callable[[DeadLetter], bool]:
    def match(letter: DeadLetter) -> bool:
        return every or letter.message_id in ids or bool(
            reason_contains and reason_contains in letter.reason)

    return match

