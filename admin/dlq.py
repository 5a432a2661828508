"""Dead letters (hh.callbacks.dead): list, show, redrive, purge.

Reading a queue without taking messages off it: each message is fetched unacknowledged and
handed back when the channel closes. A redriven message is published back to hh.callbacks
(with confirm) before its dead copy is acked, so nothing is lost; the worker's dedup keeps a
message that was in fact processed from having a second effect.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from shared.broker import Broker
from shared.topology import CALLBACKS_EXCHANGE, DEAD_QUEUE, RETRY_ROUTING_KEY
from worker.consumer import ATTEMPT_HEADER, REASON_HEADER

REDRIVE_HEADER = "x-hh-redriven-at"


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    reason: str
    dead_at: str
    attempts: int
    routing_key: str
    correlation_id: str
    body: bytes

    def summary(self, now: float) -> dict[str, Any]:
        return {"id": self.message_id, "reason": self.reason, "dead_at": self.dead_at,
                "age_s": _age(self.dead_at, now), "attempts": self.attempts,
                "routing_key": self.routing_key, "correlation_id": self.correlation_id}


def _age(dead_at: str, now: float) -> float | None:
    try:
        return round(now - datetime.fromisoformat(dead_at).timestamp(), 1)
    except ValueError:
        return None


def _letter(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    return DeadLetter(
        message_id=message.message_id or "", reason=str(headers.get(REASON_HEADER, "")),
        dead_at=str(headers.get("x-hh-dead-at", "")),
        attempts=int(str(headers.get("x-hh-attempts", 0) or 0)),
        routing_key=str(headers.get("x-hh-routing-key", "")),
        correlation_id=message.correlation_id or "", body=message.body)


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
        headers = {k: v for k, v in (message.headers or {}).items()
                   if not k.startswith("x-hh-") and k != ATTEMPT_HEADER and k != "x-death"}
        await broker.publish(CALLBACKS_EXCHANGE, RETRY_ROUTING_KEY, message.body,
                             correlation_id=letter.correlation_id,
                             headers={**headers, REDRIVE_HEADER: time.time()})
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

