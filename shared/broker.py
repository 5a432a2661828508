"""One robust AMQP connection with a confirm channel: connect (retrying), declare, publish.

`connect_robust` restores the connection, channels and consumers after an outage, but never
replays a publish that failed: a failed publish raises PublishFailed and the caller decides.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any, cast

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractChannel
from aio_pika.connection import make_url
from aio_pika.robust_connection import RobustConnection
from aiormq import spec
from yarl import URL

from shared import tracing
from shared.settings import PollerSettings, Settings
from shared.topology import Declared, Topology, contract_topology, declare
from shared.turn_publish import TurnPublisher

log = structlog.get_logger("broker")
PERSISTENT = 2  # delivery_mode: written to disk by the broker


class PublishFailed(Exception):
    """The broker did not confirm the message in time, refused it, or could not route it."""


class Unroutable(PublishFailed):
    """The broker returned a mandatory message: no queue is bound for its routing key."""


def check_delays(poller: PollerSettings) -> tuple[float, ...]:
    """Every delay a check may wait: the first after a change, then each rung of the ladder."""
    return tuple(sorted({poller.stale_after_s, *poller.ladder_s}))


def reconnect_delay(down_for_s: float, first_s: float, max_s: float) -> float:
    """The pause before the next reconnection attempt: `first_s` while an outage is young (a
    broker restart is back within seconds, and a sender retrying then should find us ready),
    then a tenth of the outage so far, so that a long one is not hammered."""
    return min(max_s, max(first_s, down_for_s / 10))


def node_address(url: URL) -> str:
    """A broker node as logs and metrics name it: host and port, never the credentials."""
    return f"{url.host}:{url.port or 5672}"


class BackoffConnection(RobustConnection):
    """aio-pika's robust connection, whose fixed `reconnect_interval` becomes a backoff: it
    reads the attribute before each attempt, so the attribute is computed from the outage.
    Given a cluster's nodes, it moves to the next one when its node is lost or an attempt
    fails (aio-pika's own reconnection only ever retries the one URL)."""

    max_interval_s = 10.0
    _addresses: tuple[URL, ...] = ()
    _current = 0

    def use_addresses(self, addresses: Sequence[URL]) -> None:
        """Connect to these in turn, from the first (the URL this connection was made with)."""
        self._addresses, self._current = tuple(addresses), 0

    def _move_on(self) -> None:
        if len(self._addresses) > 1:
            self._current = (self._current + 1) % len(self._addresses)
            self.url = self._addresses[self._current]

    # RobustConnection's reconnection loop calls this (name-mangled) method for each attempt;
    # tests/unit/test_broker_addresses.py fails if an aio-pika release renames it.
    async def _RobustConnection__connect_transport(self) -> None:
        if self._down_since:
            # Not at once after a loss: a channel opened on another node before the cluster
            # has noticed the loss (and elected the lost leaders' successors) had its publishes
            # to those quorum queues refused until the lost node came back (RabbitMQ 3.10;
            # tests/cluster). The first reconnect interval is enough for the election.
            await asyncio.sleep(max(0.0, self._down_since + self._first_interval_s
                                    - time.monotonic()))
        try:
            await super()._RobustConnection__connect_transport()  # type: ignore[misc]
        except BaseException:
            self._move_on()
            raise

    @property
    def reconnect_interval(self) -> float:
        down_for = time.monotonic() - self._down_since if self._down_since else 0.0
        return reconnect_delay(down_for, self._first_interval_s, self.max_interval_s)

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        self._first_interval_s = float(value)

    _first_interval_s = 1.0
    _down_since = 0.0

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not self._down_since:
            self._down_since = time.monotonic()
            log.warning("broker_node_lost", node=node_address(self.url))
        self._move_on()  # its node is gone (or going): the next attempt goes to another
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        await super()._on_connected()
        if self._down_since:
            log.info("broker_node_connected", node=node_address(self.url),
                     after_s=round(time.monotonic() - self._down_since, 3))
        self._down_since = 0.0


CHANNEL_RENEW_S = 2.0
_RENEWING: set[asyncio.Task[None]] = set()  # strong references to renewals in flight


class Broker:
    def __init__(self, url: str | Sequence[str], topology: Topology,
                 publish_timeout_s: float = 5.0,
                 reconnect_s: tuple[float, float] = (1.0, 10.0)) -> None:
        # One node, or a cluster's: connections start at the next node after each failure.
        self._urls = (url,) if isinstance(url, str) else tuple(url)
        self._first = 0
        self._topology = topology
        self._publish_timeout_s = publish_timeout_s
        self._publisher = TurnPublisher()
        self._reconnect_first_s, self._reconnect_max_s = reconnect_s
        self.connection: BackoffConnection | None = None
        self.channel: AbstractChannel | None = None
        self.declared: Declared | None = None
        self._renewed_at = 0.0

    @classmethod
    def for_settings(cls, settings: Settings) -> Broker:
        """Every process declares the contract's whole topology, retry queues included, so
        which one starts first does not matter."""
        return cls(
            settings.amqp.addresses,
            contract_topology(settings.amqp.delivery_limit, settings.worker.retry_delays_s,
                              check_delays(settings.poller)),
            settings.amqp.publish_timeout_s,
            (settings.amqp.reconnect_interval_s, settings.amqp.reconnect_max_interval_s),
        )

    async def connect(self) -> None:
        """Connect once and declare the topology (idempotent on the broker)."""
        # Made here rather than by connect_robust: if connecting is cancelled (a stop during
        # start-up) the connection must still be closed, or its reconnection task lives on.
        n = len(self._urls)
        addresses = [make_url(self._urls[(self._first + i) % n],
                              reconnect_interval=self._reconnect_first_s) for i in range(n)]
        connection = BackoffConnection(addresses[0])
        connection.max_interval_s = self._reconnect_max_s
        connection.use_addresses(addresses)
        try:
            await connection.connect(timeout=10)
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self.declared = await declare(channel, self._topology)
        except BaseException:
            self._first = (self._first + 1) % n  # the next try starts at another node
            await connection.close()
            raise
        self.connection, self.channel = connection, channel

    @property
    def node(self) -> str | None:
        """The node this process is connected to (or last was), as host:port."""
        return node_address(self.connection.url) if self.connection is not None else None

    async def connect_forever(self) -> None:
        """Connect, retrying with the reconnection backoff until the broker answers (start-up
        outages). A refused declaration (a queue that exists with other arguments) is no
        outage: it raises, and the process fails loudly instead of retrying for ever."""
        began = time.monotonic()
        while True:
            try:
                await self.connect()
                log.info("broker_connected", node=self.node)
                return
            except (TimeoutError, OSError) as exc:  # AMQPConnectionError is an OSError
                delay = reconnect_delay(time.monotonic() - began, self._reconnect_first_s,
                                        self._reconnect_max_s)
                log.warning("broker_unreachable", error=type(exc).__name__, retry_in_s=delay)
                await asyncio.sleep(delay)

    @property
    def ready(self) -> bool:
        return (
            self.connection is not None
            and self.connection.connected.is_set()
            and self.channel is not None
            and not self.channel.is_closed
        )

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        correlation_id: str,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        """A persistent, mandatory publish, returned only once the broker confirmed it."""
        if self.declared is None or not self.ready:
            raise PublishFailed("broker not connected")
        if exchange and exchange not in self.declared.exchanges:
            raise PublishFailed(f"exchange {exchange} is not in the topology")
        properties = spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=PERSISTENT,
            message_id=message_id or uuid.uuid4().hex,
            correlation_id=correlation_id,
            timestamp=datetime.now(UTC),
            headers=dict(headers or {}),
        )
        try:
            # aiormq's Channel: its abstract base does not declare basic_publish's `wait`
            channel = cast(aiormq.Channel,
                           await self.channel.get_underlay_channel())  # type: ignore[union-attr]
            traced = (tracing.producing(exchange, routing_key, self.channel, properties)
                      if tracing.ON else nullcontext())
            with traced:
                await self._send(channel, exchange, routing_key, body, properties)
        except TimeoutError:
            raise PublishFailed("publish not confirmed in time") from None
        except aio_pika.exceptions.PublishError:
            raise Unroutable(f"no queue bound for {routing_key}") from None
        except aio_pika.exceptions.DeliveryError:
            self._renew_channel_soon()
            raise PublishFailed("publish refused by the broker (nack)") from None
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise PublishFailed(f"publish failed: {type(exc).__name__}") from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task is being cancelled: not the publish's doing
            # The connection closed under the publish (a lost node found by its heartbeat):
            # aiormq cancels what waited on it. A failed publish, not a cancelled request.
            raise PublishFailed("publish failed: the connection closed") from None

    async def _send(self, channel: aiormq.Channel, exchange: str, routing_key: str, body: bytes,
                    properties: spec.Basic.Properties) -> None:
        # The turn's publishes leave together (shared/turn_publish.py). Memory stays bounded:
        # admission (ingest) and prefetch (worker) bound the publishes in flight.
        confirmation = self._publisher.publish(channel, exchange, routing_key, body, properties)
        async with asyncio.timeout(self._publish_timeout_s):
            await confirmation

    def _renew_channel_soon(self) -> None:
        """A nack: the queue could not take the message. After a lost node, a channel opened
        before the cluster had elected its queues' new leaders has every publish to them
        refused until that node returns (RabbitMQ 3.10; tests/cluster): a new channel, made
        now, finds the new leaders. At most one every CHANNEL_RENEW_S."""
        now = time.monotonic()
        if self.channel is None or now - self._renewed_at < CHANNEL_RENEW_S:
            return
        self._renewed_at = now
        task = asyncio.get_running_loop().create_task(self._renew_channel(self.channel))
        _RENEWING.add(task)
        task.add_done_callback(_RENEWING.discard)

    async def _renew_channel(self, channel: AbstractChannel) -> None:
        log.warning("broker_channel_renewed", node=self.node, reason="publishes refused")
        try:  # the robust channel restores itself on a new one, declarations and all
            await (await channel.get_underlay_channel()).close()
        except Exception as exc:  # noqa: BLE001 - the connection's own recovery goes on
            log.warning("broker_channel_renew_failed", error=type(exc).__name__)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        self.connection = self.channel = self.declared = None
