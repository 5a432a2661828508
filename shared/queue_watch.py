"""The broker's view of our queues as gauges: how many messages wait and how many consumers
take them, read by passive declare (one broker round trip per queue, no store) on a channel of
the watch's own, so that a refused declare can never close the publishing channel.

And an estimate of how old the oldest waiting message is, from what a consumer last took:
queues are first in, first out, so while messages wait, the oldest of them was published no
earlier than the last one taken. The estimate keeps growing while nothing is taken, which is
what an alert on a stuck queue needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog
from aio_pika.abc import AbstractChannel
from prometheus_client import CollectorRegistry, Gauge

from shared.broker import Broker

log = structlog.get_logger("queue_watch")


class QueueWatch:
    def __init__(self, broker: Broker, registry: CollectorRegistry, queues: Iterable[str],
                 interval_s: float, consumed: Iterable[str] = ()) -> None:
        self.broker = broker
        self.queues = tuple(queues)
        self._consumed = frozenset(consumed)  # this process's: their oldest age is estimated
        self.interval_s = interval_s
        self.messages = Gauge("hh_queue_messages", "Messages ready in the queue (not taken)",
                              ["queue"], registry=registry)
        self.consumers = Gauge("hh_queue_consumers", "Consumers of the queue", ["queue"],
                               registry=registry)
        self.oldest_age = Gauge(
            "hh_queue_oldest_message_age_seconds",
            "Estimated age of the oldest waiting message (0 when none waits); only for the "
            "queues this process consumes", ["queue"], registry=registry)
        self.read_at = Gauge("hh_queue_watch_read_timestamp_seconds",
                             "When the queues were last read", registry=registry)
        self._last_taken: dict[str, float] = {}  # queue -> publish time of the last one taken
        self._waiting_since: dict[str, float] = {}  # queue -> first seen non-empty, none taken
        self._channel: AbstractChannel | None = None

    def taken(self, queue: str, published_at: float | None) -> None:
        """A consumer took a message from `queue` that was published at `published_at`."""
        if published_at is not None:
            self._last_taken[queue] = max(published_at, self._last_taken.get(queue, 0.0))
            self._waiting_since.pop(queue, None)

    async def read_once(self) -> None:
        """Read every queue once and set the gauges; raises if the broker cannot answer."""
        if self._channel is None or self._channel.is_closed:
            if self.broker.connection is None:
                raise ConnectionError("broker not connected")
            self._channel = await self.broker.connection.channel()
        now = time.time()
        for name in self.queues:
            # aiormq's own declare: aio-pika's robust channel answers a repeated declare of a
            # name from what it remembers, and the counts would never change.
            underlay = await self._channel.get_underlay_channel()
            ok = await underlay.queue_declare(name, passive=True)
            self.messages.labels(name).set(ok.message_count or 0)
            self.consumers.labels(name).set(ok.consumer_count or 0)
            if name in self._consumed:
                self.oldest_age.labels(name).set(self._age(name, ok.message_count or 0, now))
        self.read_at.set(now)

    def _age(self, queue: str, waiting: int, now: float) -> float:
        if waiting == 0:
            self._waiting_since.pop(queue, None)
            return 0.0
        last = self._last_taken.get(queue)
        if last is None:  # nothing taken yet: at least as old as the first sight of it
            last = self._waiting_since.setdefault(queue, now)
        return max(0.0, now - last)

    async def run(self) -> None:
        """Read the queues every interval until cancelled; a failed read is logged and the
        gauges keep their last values (their read time tells how old they are)."""
        while True:
            try:
                await self.read_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("queue_watch_failed", error=type(exc).__name__)
                self._channel = None
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
