"""The broker topology of the contract, as plain data, and the one function that declares it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import aio_pika

CALLBACKS_EXCHANGE = "hh.callbacks"
PROCESS_QUEUE = "hh.callbacks.process"
DEAD_EXCHANGE = "hh.callbacks.dlx"
RETRY_EXCHANGE = "hh.callbacks.retry"
# A delayed retry goes back to the queue it was taken from, whichever it was (alerts,
# registrations, checks): its origin queue is a header, and this headers exchange routes on it.
RETURN_EXCHANGE = "hh.retry.return"
DEAD_QUEUE = "hh.callbacks.dead"
ORDERS_EXCHANGE = "hh.orders"
REGISTER_QUEUE = "hh.orders.register"
# The poll schedule, kept by the broker: a check waits in the wait queue of its delay, then is
# dead-lettered into the due queue that the workers consume.
CHECKS_EXCHANGE = "hh.orders.checks"
DUE_QUEUE = "hh.orders.checks.due"
# The queues whose depth every process exports (shared.queue_watch): the work, the dead letters.
WATCHED_QUEUES = (PROCESS_QUEUE, REGISTER_QUEUE, DUE_QUEUE, DEAD_QUEUE)

IDEMPOTENCY_HEADER = "x-idempotency-key"
# Our headers on messages that are retried or dead-lettered (what an operator reads and what
# a redrive needs: where the message was first sent).
ATTEMPT_HEADER = "x-hh-attempt"
# The queue a retried or dead-lettered message was taken from. Not `x-`: a headers exchange
# ignores x- headers when it matches.
ORIGIN_HEADER = "hh-queue"
REASON_HEADER = "x-hh-reason"
DEAD_AT_HEADER = "x-hh-dead-at"
ATTEMPTS_HEADER = "x-hh-attempts"
REDRIVEN_AT_HEADER = "x-hh-redriven-at"


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: aio_pika.ExchangeType


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    # (exchange, routing key, binding arguments: a headers exchange matches on these)
    bindings: tuple[tuple[str, str, dict[str, Any]], ...] = ()


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]


def retry_queue(delay_s: int) -> str:
    return f"hh.retry.{delay_s}s"


def returns_to(queue: str) -> tuple[str, str, dict[str, Any]]:
    """The binding that brings a delayed retry back to `queue`."""
    return (RETURN_EXCHANGE, "", {"x-match": "all", ORIGIN_HEADER: queue})


def wait_queue(delay_s: float) -> str:
    """The wait queue of a check delay (milliseconds in the name: test delays are fractional)."""
    return f"hh.orders.checks.wait.{round(delay_s * 1000)}ms"


def contract_topology(delivery_limit: int, retry_delays_s: tuple[int, ...] = (),
                      check_delays_s: tuple[float, ...] = ()) -> Topology:
    quorum = {"x-queue-type": "quorum"}
    expire = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    # A retry queue holds a message for its fixed TTL, then dead-letters it back to the queue
    # it came from (no delayed-message plugin). At-least-once dead-lettering needs
    # reject-publish.
    retries = tuple(
        QueueSpec(
            retry_queue(delay),
            {**quorum, **expire, "x-message-ttl": delay * 1000,
             "x-dead-letter-exchange": RETURN_EXCHANGE},
            ((RETRY_EXCHANGE, retry_queue(delay), {}),),
        )
        for delay in retry_delays_s
    )
    # One wait queue per distinct check delay; a message expires in order (one TTL per queue)
    # into the due queue, through the default exchange.
    waits = tuple(
        QueueSpec(
            wait_queue(delay),
            {**quorum, **expire, "x-message-ttl": round(delay * 1000),
             "x-dead-letter-exchange": "", "x-dead-letter-routing-key": DUE_QUEUE},
            ((CHECKS_EXCHANGE, wait_queue(delay), {}),),
        )
        for delay in sorted(set(check_delays_s))
    )
    return Topology(
        exchanges=(
            ExchangeSpec(CALLBACKS_EXCHANGE, aio_pika.ExchangeType.TOPIC),
            ExchangeSpec(ORDERS_EXCHANGE, aio_pika.ExchangeType.TOPIC),
            ExchangeSpec(DEAD_EXCHANGE, aio_pika.ExchangeType.FANOUT),
            ExchangeSpec(RETRY_EXCHANGE, aio_pika.ExchangeType.DIRECT),
            ExchangeSpec(CHECKS_EXCHANGE, aio_pika.ExchangeType.DIRECT),
            ExchangeSpec(RETURN_EXCHANGE, aio_pika.ExchangeType.HEADERS),
        ),
        queues=(
            QueueSpec(
                PROCESS_QUEUE,
                # RabbitMQ 3.10 quorum queues have no default delivery limit: set one, and send
                # what exceeds it to the dead letters rather than dropping it.
                {**quorum, "x-delivery-limit": delivery_limit,
                 "x-dead-letter-exchange": DEAD_EXCHANGE},
                ((CALLBACKS_EXCHANGE, "callback.#", {}), returns_to(PROCESS_QUEUE)),
            ),
            QueueSpec(DEAD_QUEUE, dict(quorum), ((DEAD_EXCHANGE, "", {}),)),
            QueueSpec(
                REGISTER_QUEUE,
                {**quorum, "x-delivery-limit": delivery_limit,
                 "x-dead-letter-exchange": DEAD_EXCHANGE},
                (returns_to(REGISTER_QUEUE),),
            ),
            QueueSpec(
                DUE_QUEUE,
                {**quorum, "x-delivery-limit": delivery_limit,
                 "x-dead-letter-exchange": DEAD_EXCHANGE},
                (returns_to(DUE_QUEUE),),
            ),
            *retries,
            *waits,
        ),
    )


@dataclass
class Declared:
    """Strong references to what was declared: the connection holds them only weakly."""

    exchanges: dict[str, aio_pika.abc.AbstractExchange]
    queues: dict[str, aio_pika.abc.AbstractQueue]


async def declare(channel: aio_pika.abc.AbstractChannel, topology: Topology) -> Declared:
    exchanges = {
        spec.name: await channel.declare_exchange(spec.name, spec.type, durable=True)
        for spec in topology.exchanges
    }
    queues = {}
    for spec in topology.queues:
        queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        for exchange, key, arguments in spec.bindings:
            await queue.bind(exchanges[exchange], routing_key=key, arguments=arguments or None)
        queues[spec.name] = queue
    return Declared(exchanges, queues)


_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def routing_word(status: str) -> str:
    """A status as one topic word: lower case, no dots or wildcards (unknown statuses too)."""
    return _UNSAFE.sub("_", status.lower()) or "unknown"


def callback_routing_key(status: str) -> str:
    return f"callback.{routing_word(status)}"


def event_routing_key(status: str) -> str:
    return f"order.{routing_word(status)}"
