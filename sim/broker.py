"""An in-memory broker, at least once: a message taken and not acked goes back to its queue
(redelivered) when its consumer's replica crashes or its channel is lost; a publish confirm
can fail (before the message was taken, or after: a timeout); the wait and retry queues
release on virtual time after their fixed TTL; the delivery limit dead-letters."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.broker import PublishFailed, Unroutable
from shared.topology import (
    CALLBACKS_EXCHANGE,
    CHECKS_EXCHANGE,
    DEAD_EXCHANGE,
    DUE_QUEUE,
    ORDERS_EXCHANGE,
    ORIGIN_HEADER,
    PROCESS_QUEUE,
    REGISTER_QUEUE,
    RETRY_EXCHANGE,
)
from sim.sched import Crashed, Go, Replica, Scheduler, current

CONSUMED = (PROCESS_QUEUE, REGISTER_QUEUE, DUE_QUEUE)
_WAIT_PREFIX = "hh.orders.checks.wait."
_RETRY_PREFIX = "hh.retry."


@dataclass(eq=False)
class SimMessage:
    """What a consumer handler reads of an aio-pika incoming message."""

    broker: SimBroker
    queue: str
    body: bytes
    headers: dict[str, Any]
    correlation_id: str
    message_id: str
    routing_key: str
    redelivered: bool = False
    returns: int = 0  # times given back to the queue (the quorum queue's delivery count)
    holder: Replica | None = None
    timestamp: None = None  # no backlog gauges here

    async def ack(self) -> None:
        await self.broker.settle(self, requeue=None)

    async def nack(self, requeue: bool = True) -> None:
        await self.broker.settle(self, requeue=requeue)


@dataclass
class Published:
    exchange: str
    routing_key: str
    body: bytes
    at: float
    by: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class SimBroker:
    sched: Scheduler
    delivery_limit: int = 20
    prefetch: int = 4
    queues: dict[str, deque[SimMessage]] = field(default_factory=dict)
    waiting: list[tuple[float, str, SimMessage]] = field(default_factory=list)  # (due, to, msg)
    unacked: list[SimMessage] = field(default_factory=list)
    events: list[Published] = field(default_factory=list)  # everything sent to hh.orders
    dead: list[SimMessage] = field(default_factory=list)
    accepted: list[bytes] = field(default_factory=list)  # alert bodies the broker took

    def __post_init__(self) -> None:
        for name in CONSUMED:
            self.queues[name] = deque()

    # --- publishing -------------------------------------------------------------------------
    async def publish(self, exchange: str, routing_key: str, body: bytes, *,
                      correlation_id: str, headers: Mapping[str, Any] | None = None,
                      message_id: str | None = None) -> None:
        go = await self.sched.point(f"publish {exchange} {routing_key}",
                                    can_fail_after=True)
        if go is Go.FAIL:
            raise PublishFailed("sim: not confirmed")
        replica = current.get()
        message = SimMessage(self, "", body, dict(headers or {}), correlation_id,
                             message_id or "", routing_key)
        self.route(exchange, routing_key, message, replica.name if replica else "harness")
        if go is Go.FAIL_AFTER:
            raise PublishFailed("sim: confirm timed out (the broker has it)")

    def route(self, exchange: str, routing_key: str, message: SimMessage, by: str) -> None:
        now = self.sched.loop.now
        if exchange == ORDERS_EXCHANGE:
            self.events.append(Published(exchange, routing_key, message.body, now, by))
        elif exchange == CALLBACKS_EXCHANGE:
            self.accepted.append(message.body)
            self._enqueue(PROCESS_QUEUE, message)
        elif exchange == "" and routing_key in self.queues:
            self._enqueue(routing_key, message)
        elif exchange == CHECKS_EXCHANGE and routing_key.startswith(_WAIT_PREFIX):
            delay = int(routing_key.removeprefix(_WAIT_PREFIX).removesuffix("ms")) / 1000
            self._hold(delay, DUE_QUEUE, message)
        elif exchange == RETRY_EXCHANGE and routing_key.startswith(_RETRY_PREFIX):
            delay = int(routing_key.removeprefix(_RETRY_PREFIX).removesuffix("s"))
            self._hold(delay, str(message.headers[ORIGIN_HEADER]), message)
        elif exchange == DEAD_EXCHANGE:
            self.dead.append(message)
        else:
            raise Unroutable(f"sim: nothing bound for {exchange} {routing_key}")

    def _enqueue(self, queue: str, message: SimMessage) -> None:
        message.queue = queue
        self.queues[queue].append(message)

    def _hold(self, delay: float, to: str, message: SimMessage) -> None:
        due = self.sched.loop.now + delay
        self.waiting.append((due, to, message))
        self.sched.loop.call_at(due, self._release, due, to, message)

    def _release(self, due: float, to: str, message: SimMessage) -> None:
        self.waiting.remove((due, to, message))
        self._enqueue(to, message)

    # --- consuming --------------------------------------------------------------------------
    def deliverable(self, replicas: list[Replica]) -> list[tuple[str, Replica]]:
        free = [r for r in replicas if not r.dead
                and sum(m.holder is r for m in self.unacked) < self.prefetch]
        return [(q, r) for q in CONSUMED if self.queues[q] for r in free]

    def take(self, queue: str, replica: Replica) -> SimMessage:
        message = self.queues[queue].popleft()
        message.holder = replica
        self.unacked.append(message)
        return message

    async def settle(self, message: SimMessage, requeue: bool | None) -> None:
        go = await self.sched.point(f"{'ack' if requeue is None else 'nack'} {message.queue}")
        if message.holder is None or message.holder.dead:
            raise Crashed("sim: channel closed")
        if go is not Go.ON:  # the channel was lost: the broker gives the message back
            self.give_back(message)
            raise ConnectionError("sim: channel closed")
        self.unacked.remove(message)
        message.holder = None
        if requeue:
            self._return(message)

    def give_back(self, message: SimMessage) -> None:
        self.unacked.remove(message)
        message.holder = None
        self._return(message)

    def _return(self, message: SimMessage) -> None:
        message.redelivered = True
        message.returns += 1
        if message.returns > self.delivery_limit:
            self.dead.append(message)
        else:
            self.queues[message.queue].appendleft(message)

    def crashed(self, replica: Replica) -> None:
        for message in [m for m in self.unacked if m.holder is replica]:
            self.give_back(message)

    # --- what the invariants read -----------------------------------------------------------
    def held(self) -> list[SimMessage]:
        """Every message the broker holds for a consumer: queued, waiting or unacked."""
        return ([m for q in self.queues.values() for m in q]
                + [m for _, _, m in self.waiting] + list(self.unacked))
