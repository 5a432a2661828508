"""AMQP consumers of the worker: ack only after the effect is durable; retry what may pass
after a growing delay; dead-letter what never will."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import structlog

from shared import tracing
from shared.alert import InvalidAlert
from shared.broker import PublishFailed
from shared.envelope import AlertEnvelope, InvalidEnvelope
from shared.queue_watch import QueueWatch
from shared.registration import parse_registration
from shared.settings import WorkerSettings
from shared.topology import (
    ATTEMPT_HEADER,
    ATTEMPTS_HEADER,
    DEAD_AT_HEADER,
    DEAD_EXCHANGE,
    DUE_QUEUE,
    ORIGIN_HEADER,
    PROCESS_QUEUE,
    REASON_HEADER,
    REGISTER_QUEUE,
    RETRY_EXCHANGE,
    retry_queue,
)
from worker.checks import Check, InvalidCheck
from worker.poller import Poller
from worker.ports import Delivery, Publisher
from worker.processor import Processor
from worker.records import registration_record, utc

log = structlog.get_logger("worker.consumer")
# Queues whose messages are due when published (checks wait in delay queues first, so their
# publish time says nothing about a backlog).
BACKLOG_QUEUES = (PROCESS_QUEUE, REGISTER_QUEUE)


class PermanentFailure(Exception):
    """This message can never be processed as it is."""


def retry_delay(attempt: int, delays: tuple[int, ...]) -> int:
    """The delay after failed attempt `attempt` (1-based); the last delay repeats."""
    return delays[min(attempt, len(delays)) - 1]


class Consumer:
    def __init__(self, broker: Publisher, processor: Processor, poller: Poller,
                 settings: WorkerSettings, watch: QueueWatch | None) -> None:
        self.broker = broker
        self.watch = watch
        self.processor = processor
        self.poller = poller
        self.settings = settings
        self.in_flight: set[asyncio.Task[None]] = set()

    async def on_alert(self, message: Delivery) -> None:
        await self._handle(message, self._process_alert, PROCESS_QUEUE)

    async def on_registration(self, message: Delivery) -> None:
        await self._handle(message, self._process_registration, REGISTER_QUEUE)

    async def on_check(self, message: Delivery) -> None:
        await self._handle(message, self._process_check, DUE_QUEUE)

    async def _process_check(self, message: Delivery, again: bool) -> None:
        try:
            check = Check.from_bytes(message.body)
        except InvalidCheck as exc:
            raise PermanentFailure(f"invalid: {exc}") from None
        with structlog.contextvars.bound_contextvars(order_id=check.order_id, seq=check.seq,
                                                     step=check.step):
            outcome = await self.poller.on_check(check, again)
            log.info("check_processed", outcome=outcome)

    async def _process_alert(self, message: Delivery, again: bool) -> None:
        try:
            envelope = AlertEnvelope.from_bytes(message.body)
            await self.processor.handle_alert(envelope, again=again)
        except (InvalidEnvelope, InvalidAlert) as exc:
            raise PermanentFailure(f"invalid: {exc}") from None

    async def _process_registration(self, message: Delivery,
                                    _again: bool) -> None:
        try:
            registration = parse_registration(json.loads(message.body))
        except (ValueError, InvalidAlert) as exc:
            raise PermanentFailure(f"invalid registration: {exc}") from None
        store = self.processor.store
        new = await store.registrations.register(registration_record(registration, time.time()))
        view = await store.views.refresh(registration.order_id)
        await self.processor.schedule_first_check(registration.order_id, view["seq"],
                                                  view["final"])
        log.info("order_registered", project_id=registration.project_id,
                 payment_id=registration.payment_id, product=registration.product,
                 flow=registration.flow, new=new)

    async def _handle(
        self, message: Delivery,
        work: Callable[[Delivery, bool], Awaitable[None]], queue: str,
    ) -> None:
        """Run `work`; ack on success. A failure that may pass waits in a retry queue and
        comes back to `queue`; one that cannot goes to the dead letters, `queue` recorded."""
        task = asyncio.current_task()
        assert task is not None
        self.in_flight.add(task)
        self._taken(message, queue)
        if tracing.ON:
            tracing.annotate_receive(queue, message.routing_key)
        attempt = _attempts_so_far(message) + 1
        try:
            try:
                await self._with_quick_retries(work, message)
            except PermanentFailure as exc:
                self.processor.metrics.failures.labels("permanent").inc()
                await self._dead_letter(message, queue, str(exc), attempt)
                return
            except Exception as exc:  # noqa: BLE001 - any other failure may pass: retry later
                self.processor.metrics.failures.labels("transient").inc()
                log.warning("message_failed", error=type(exc).__name__, attempt=attempt,
                            correlation_id=message.correlation_id)
                if attempt >= self.settings.max_attempts:
                    await self._dead_letter(
                        message, queue, f"exhausted {attempt} attempts: {type(exc).__name__}",
                        attempt)
                else:
                    await self._retry_later(message, queue, attempt)
                return
            await _settle(message.ack())
        finally:
            self.in_flight.discard(task)

    async def _with_quick_retries(
        self, work: Callable[[Delivery, bool], Awaitable[None]],
        message: Delivery,
    ) -> None:
        """Run `work`, telling it whether the message was tried before (redelivered after a
        crash, back from a retry queue, or failed here a moment ago): an earlier try may have
        left its work half done."""
        again = bool(message.redelivered) or _attempts_so_far(message) > 0
        for pause in self.settings.quick_retries_s:
            try:
                await work(message, again)
                return
            except PermanentFailure:
                raise
            except Exception as exc:  # noqa: BLE001 - may pass: try again shortly
                self.processor.metrics.failures.labels("transient").inc()
                log.info("message_retrying", error=type(exc).__name__, pause_s=pause)
                await asyncio.sleep(pause)
                again = True
        await work(message, again)

    async def _forward(
        self, message: Delivery, exchange: str, routing_key: str,
        headers: dict[str, object],
    ) -> None:
        """Publish a copy with confirm, then ack the original; if the copy is not confirmed,
        hand the original back so nothing is lost (a redelivery is harmless)."""
        try:
            await self.broker.publish(
                exchange, routing_key, message.body,
                correlation_id=message.correlation_id or "",
                headers={**(message.headers or {}), **headers},
            )
        except PublishFailed:
            await asyncio.sleep(1)  # the broker is in trouble: do not spin
            await _settle(message.nack(requeue=True))
            return
        await _settle(message.ack())

    async def _retry_later(self, message: Delivery, queue: str,
                           attempt: int) -> None:
        delay = retry_delay(attempt, self.settings.retry_delays_s)
        await self._forward(message, RETRY_EXCHANGE, retry_queue(delay),
                            {ATTEMPT_HEADER: attempt, ORIGIN_HEADER: queue})

    async def _dead_letter(
        self, message: Delivery, queue: str, reason: str, attempt: int
    ) -> None:
        log.error("message_dead_lettered", reason=reason, attempts=attempt,
                  correlation_id=message.correlation_id, queue=queue)
        await self._forward(message, DEAD_EXCHANGE, "", {
            REASON_HEADER: reason[:500],
            DEAD_AT_HEADER: utc(time.time()).isoformat(),
            ATTEMPTS_HEADER: attempt,
            ORIGIN_HEADER: queue,  # a redrive sends it back there
        })


    def _taken(self, message: Delivery, queue: str) -> None:
        if queue not in BACKLOG_QUEUES or message.timestamp is None:
            return
        published_at = message.timestamp.timestamp()
        self.processor.metrics.waited.labels(queue).observe(max(0.0, time.time() - published_at))
        if self.watch is not None:
            self.watch.taken(queue, published_at)


async def _settle(action: Awaitable[None]) -> None:
    # If the channel is gone the broker already gave the message back; nothing more to do.
    try:
        await action
    except Exception as exc:  # noqa: BLE001
        log.warning("settle_failed", error=type(exc).__name__)


def _attempts_so_far(message: Delivery) -> int:
    value = (message.headers or {}).get(ATTEMPT_HEADER, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
