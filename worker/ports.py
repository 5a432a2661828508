"""What the worker's core talks to besides its store (worker/store.py): the broker it publishes
to, the messages it consumes, and HighHelp's status endpoint. Each is a small Protocol, met by
the production adapters (shared/broker.py over aio-pika, aio-pika's incoming messages,
shared/gateway.py over aiohttp) and by the simulator's in-memory ones (sim/), which mypy checks
against them. The clock is the process's: the simulator runs the worker on a virtual one."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import Any, Protocol

from shared.alert import Alert


class Publisher(Protocol):
    async def publish(self, exchange: str, routing_key: str, body: bytes, *,
                      correlation_id: str, headers: Mapping[str, Any] | None = None,
                      message_id: str | None = None) -> None:
        """A persistent publish, returned only once the broker confirmed it (else raises
        shared.broker.PublishFailed; Unroutable if no queue is bound for the key)."""


class Delivery(Protocol):
    """A message being consumed: unacked until settled, and given back to its queue if the
    consumer's channel is lost first."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, Any]: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def routing_key(self) -> str | None: ...
    @property
    def redelivered(self) -> bool | None: ...
    @property
    def timestamp(self) -> datetime | None: ...

    def ack(self) -> Awaitable[None]: ...
    def nack(self, *, requeue: bool = True) -> Awaitable[None]: ...


class Gateway(Protocol):
    async def info(self, product: str, flow: str, payment_id: str) -> Alert:
        """The payment's current status, read like an alert (raises shared.gateway's
        GatewayError kinds)."""
