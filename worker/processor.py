"""Processing one observation (an alert, or a poll answer) into order state and events.

Every step is safe to repeat after a crash: the inbox and log are unique inserts, the event is
published from the log record (same event_id every time) and marked afterwards, and the view is
rebuilt from its sources.
"""

from __future__ import annotations

import json
import time

import structlog

from shared.alert import decode_body, parse_alert
from shared.broker import Broker, Unroutable
from shared.envelope import AlertEnvelope
from shared.settings import PollerSettings
from shared.topology import IDEMPOTENCY_HEADER, ORDERS_EXCHANGE
from worker.activity import ActivityFeed
from worker.checks import Check, publish_check
from worker.locks import KeyedLock
from worker.metrics import WorkerMetrics
from worker.records import (
    Document,
    Observation,
    anomaly_record,
    inbox_record,
    state_of,
    transition_record,
    utc,
)
from worker.schedule import check_delay
from worker.statemachine import Verdict, decide
from worker.store import OrderStore

log = structlog.get_logger("worker")

ALREADY_DONE = "already_done"
MAX_STEP_RACES = 20  # re-reads after another replica took the step we wanted


class StepRaceLost(RuntimeError):
    """Other replicas kept moving the order; the message is retried later."""


class Processor:
    def __init__(self, store: OrderStore, broker: Broker, metrics: WorkerMetrics,
                 poller: PollerSettings | None = None, activity: ActivityFeed | None = None
                 ) -> None:
        self.store = store
        self.broker = broker
        self.metrics = metrics
        self.poller = poller or PollerSettings()
        self.locks = KeyedLock()  # alerts and polls of one order, one at a time per process
        # Recent events, for the console (the worker flushes it every few seconds).
        self.activity = activity or ActivityFeed(store.c.activity)
        self._relayed_until = 0.0  # the relay's watermark (Unix time)

    async def handle_alert(self, envelope: AlertEnvelope, *, again: bool = False) -> str:
        """Process one verified alert (`again`: it was tried before). Raises InvalidAlert if
        it cannot be read (for good)."""
        with self.metrics.seconds.time(), self.store.in_flight:
            return await self._handle_alert(envelope, again)

    async def _handle_alert(self, envelope: AlertEnvelope, again: bool) -> str:
        _text, value = decode_body(envelope.body.encode("utf-8"))
        alert = parse_alert(value)
        obs = Observation.from_alert(alert, envelope)
        with structlog.contextvars.bound_contextvars(
            project_id=alert.project_id, payment_id=alert.payment_id,
            request_id=alert.request_id, idempotency_key=alert.idempotency_key,
            route=envelope.route, correlation_id=envelope.correlation_id, key_id=envelope.key_id,
        ):
            async with self.locks(obs.order_id):
                if await self.store.find_in_inbox(alert.idempotency_key) is not None:
                    log.info("alert_processed", outcome=ALREADY_DONE)
                    self.metrics.alerts.labels(ALREADY_DONE).inc()
                    return ALREADY_DONE
                verdict = await self.apply(obs, again=again)
                if verdict is not Verdict.APPLY:
                    await self.store.record_aside(obs.order_id, alert.idempotency_key)
                # Recorded last: a crash before this redoes the alert, which finds its own step.
                await self.store.add_to_inbox(
                    inbox_record(alert, envelope, verdict.value, time.time()))
        self.metrics.alerts.labels(verdict.value).inc()
        return verdict.value

    async def apply(self, obs: Observation, *, again: bool = False) -> Verdict:
        """Run the state machine for `obs` and make its effect durable and published.
        The caller holds the order's lock and has bound the order's ids to the log context.
        `again`: the observation was tried before, and that try may have failed between its
        view write and the re-reads that make the view converge, leaving an older view."""
        alert = obs.alert
        for _ in range(MAX_STEP_RACES):
            latest = await self.store.latest_transition(obs.order_id)
            verdict = decide(state_of(latest), obs.state)
            seq = latest["seq"] if latest else 0  # the step the order is at, for the log line
            if verdict is Verdict.APPLY:
                record = transition_record(obs, latest, time.time())
                if not await self.store.append_transition(record):
                    continue  # another replica took this step first: read again, decide again
                seq = record["seq"]
                await self._took_step(obs, record)
            elif latest is not None:
                verdict = await self._not_applied(obs, latest, verdict, again)
            log.info(
                "alert_processed" if obs.source == "callback" else "poll_processed",
                outcome=verdict.value, status=alert.status, sub_status=alert.sub_status, seq=seq,
            )
            return verdict
        raise StepRaceLost(obs.order_id)

    async def _took_step(self, obs: Observation, record: Document) -> None:
        """The step is ours: index it, publish its event, show it, schedule its check."""
        alert = obs.alert
        if record["seq"] == 1 and alert.request_id:
            await self.store.index_request_id(alert.project_id, alert.request_id,
                                              obs.order_id)
        await self.publish_record(record)
        await self.store.refresh_view(obs.order_id, record)
        if obs.source == "callback":  # a poll's owner schedules what follows it
            await self.schedule_first_check(obs.order_id, record["seq"], alert.final)

    async def _not_applied(self, obs: Observation, latest: Document, verdict: Verdict,
                           again: bool) -> Verdict:
        """An anomaly, a duplicate or a stale observation: finish what an earlier try (ours or
        another replica's) may have left undone. Returns the verdict to report."""
        alert = obs.alert
        if verdict is Verdict.ANOMALY:
            record = await self.store.record_anomaly(anomaly_record(obs, latest, time.time()))
            log.error(
                "order_anomaly", status=alert.status, sub_status=alert.sub_status,
                current_status=latest["to"]["status"], source=obs.source,
            )
            if not await self.store.is_published(record):
                await self.publish_record(record)
        elif verdict is Verdict.DUPLICATE:
            # Maybe our own earlier attempt crashed after its insert: finish its work.
            if not await self.store.is_published(latest):
                await self.publish_record(latest)
            await self.store.refresh_view(obs.order_id, latest)
            if obs.source == "callback" and (
                    latest["idempotency_key"] == alert.idempotency_key):
                # The step is this very alert's, from a crashed try: it was applied, as step
                # `latest.seq` itself (not a new one after it); its check may not have gone out.
                await self.schedule_first_check(obs.order_id, latest["seq"], alert.final)
                return Verdict.APPLY
            return verdict
        if again:  # an earlier try may have failed between its view write and its re-reads
            await self.store.refresh_view(obs.order_id, latest)
        return verdict

    async def schedule_first_check(self, order_id: str, seq: int, final: bool) -> None:
        """A non-final order (just changed, or registered) is checked once stale: the check
        waits in the broker, published before the message that caused it is acked."""
        if not final:
            await publish_check(self.broker, Check(order_id, seq, 0),
                                check_delay(0, self.poller))

    async def publish_record(self, record: Document) -> None:
        """Publish the record's event with confirm, then mark it published. Repeating this
        after a crash re-publishes the same event_id, which consumers dedupe."""
        event = record["event"]
        try:
            await self.broker.publish(
                ORDERS_EXCHANGE, record["routing_key"], _event_body(event),
                correlation_id=event["correlation_id"], message_id=event["event_id"],
                headers={IDEMPOTENCY_HEADER: event["event_id"]},
            )
        except Unroutable:
            # No downstream queue is bound for this key: nobody to tell, nothing to retry.
            log.warning("event_unrouted", routing_key=record["routing_key"],
                        event_id=event["event_id"])
            self.metrics.unroutable.labels(record["routing_key"]).inc()
        self.metrics.events.labels(record["routing_key"]).inc()
        self.activity.note(record["routing_key"], event)
        await self.store.mark_published(record)

    async def relay_once(self, grace_s: float, window_s: float, limit: int = 200) -> int:
        """Publish events whose writer died before publishing them; returns how many.
        Each round looks at records from the previous round's end (less `grace_s`, for clock
        skew between replicas) up to `grace_s` ago, so a record is checked about once."""
        now = time.time()
        since = max(self._relayed_until - grace_s, now - window_s)
        window = (utc(since), utc(now - grace_s))
        count = 0
        for collection in (self.store.c.transitions, self.store.c.anomalies, self.store.c.polls):
            records = await self.store.unpublished(collection, window, limit)
            for record in records:
                await self.publish_record(record)
                count += 1
            if len(records) >= limit:
                return count  # more than a round's worth: resume from the same point
        self._relayed_until = now - grace_s
        return count


def _event_body(event: Document) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode("utf-8")
