"""Processing one observation (an alert, or a poll answer) into order state and events.

Every step is safe to repeat after a crash: the inbox and log are unique inserts, the event is
published from the log record (same event_id every time) and marked afterwards, and the view is
rebuilt from its sources.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import structlog

from shared.alert import decode_body, parse_alert
from shared.broker import Unroutable
from shared.documents import Anomaly, Event, EventRecord, Transition
from shared.envelope import AlertEnvelope
from shared.settings import PollerSettings
from shared.topology import IDEMPOTENCY_HEADER, ORDERS_EXCHANGE
from worker.activity import ActivityFeed
from worker.checks import Check, publish_check
from worker.locks import KeyedLock
from worker.metrics import WorkerMetrics
from worker.ports import Publisher
from worker.records import (
    Observation,
    anomaly_record,
    inbox_record,
    state_of,
    transition_record,
    utc,
)
from worker.schedule import check_delay
from worker.statemachine import Verdict, decide
from worker.store import Store

log = structlog.get_logger("worker")

ALREADY_DONE = "already_done"
MAX_STEP_RACES = 20  # re-reads after another replica took the step we wanted
# Verdicts whose head the view shows at once: a new step, or a step an earlier try took.
SHOWN = (Verdict.APPLY, Verdict.DUPLICATE)


class StepRaceLost(RuntimeError):
    """Other replicas kept moving the order; the message is retried later."""


@dataclass(frozen=True)
class Recorded:
    """What recording an observation did: its verdict, and the order's head after it (the
    step taken, if one was), or for an anomaly the record kept."""

    verdict: Verdict
    head: Transition | None
    anomaly: Anomaly | None = None

    @property
    def seq(self) -> int:
        return self.head["seq"] if self.head else 0


class Processor:
    def __init__(self, store: Store, broker: Publisher, metrics: WorkerMetrics,
                 poller: PollerSettings, activity: ActivityFeed) -> None:
        self.store = store
        self.broker = broker
        self.metrics = metrics
        self.poller = poller
        self.locks = KeyedLock()  # alerts and polls of one order, one at a time per process
        # Recent events, for the console (the worker flushes it every few seconds).
        self.activity = activity
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
                if await self._already_done(obs, again):
                    return ALREADY_DONE
                recorded = await self.record(obs)
                await self.finish(obs, recorded)
                if recorded.head is not None and (again or recorded.verdict in SHOWN):
                    # `again`: an earlier try may have failed between its view write and the
                    # re-reads that make the view converge, leaving an older view.
                    await self.store.views.refresh(obs.order_id, recorded.head)
                verdict = await self._after_alert(obs, recorded)
                log.info("alert_processed", outcome=verdict.value, status=alert.status,
                         sub_status=alert.sub_status, seq=recorded.seq)
                if verdict is not Verdict.APPLY:
                    await self.store.findings.aside(obs.order_id, alert.idempotency_key)
                # Recorded last: a crash before this redoes the alert, which finds its own step.
                await self.store.inbox.add(
                    inbox_record(alert, envelope, verdict.value, time.time()))
        self.metrics.alerts.labels(verdict.value).inc()
        return verdict.value

    async def _already_done(self, obs: Observation, again: bool) -> bool:
        """Whether the alert's inbox record is there: it was processed, by us or by another
        copy of it. `again`: an earlier try of ours may have failed between its view write and
        the re-reads that make the view converge, while the copy that wrote the record (judged
        stale, say) left the view alone; rebuild it, or the older view stands for good."""
        if await self.store.inbox.find(obs.alert.idempotency_key) is None:
            return False
        if again:
            await self.store.views.refresh(obs.order_id)
        log.info("alert_processed", outcome=ALREADY_DONE)
        self.metrics.alerts.labels(ALREADY_DONE).inc()
        return True

    async def _after_alert(self, obs: Observation, recorded: Recorded) -> Verdict:
        """An alert's own follow-up: the first stale check of the step it made. Returns the
        verdict to report."""
        head, alert = recorded.head, obs.alert
        if recorded.verdict is Verdict.APPLY:
            await self.schedule_first_check(obs.order_id, recorded.seq, alert.final)
        elif (recorded.verdict is Verdict.DUPLICATE and head is not None
              and head["idempotency_key"] == alert.idempotency_key):
            # The step is this very alert's, from a crashed try: it was applied, as step
            # `head.seq` itself (not a new one after it); its check may not have gone out.
            await self.schedule_first_check(obs.order_id, recorded.seq, alert.final)
            return Verdict.APPLY
        return recorded.verdict

    async def record(self, obs: Observation) -> Recorded:
        """Run the state machine for `obs` against the order's log and record the outcome: a
        new step, or an anomaly. The caller holds the order's lock, and follows up."""
        for _ in range(MAX_STEP_RACES):
            head = await self.store.log.head(obs.order_id)
            verdict = decide(state_of(head), obs.state)
            if verdict is Verdict.APPLY:
                step = transition_record(obs, head, time.time())
                if await self.store.log.append(step):
                    return Recorded(verdict, step)
                continue  # another replica took this step first: read again, decide again
            if verdict is Verdict.ANOMALY and head is not None:
                anomaly = await self.store.log.record_anomaly(
                    anomaly_record(obs, head, time.time()))
                return Recorded(verdict, head, anomaly)
            return Recorded(verdict, head)
        raise StepRaceLost(obs.order_id)

    async def finish(self, obs: Observation, recorded: Recorded) -> None:
        """Publish what recording `obs` made (its step, its anomaly), and finish what an
        earlier try (ours or another replica's) may have left undone: a duplicate's step
        whose event never went out. Showing it in the view is the caller's."""
        head = recorded.head
        if recorded.verdict is Verdict.APPLY and head is not None:
            alert = obs.alert
            if head["seq"] == 1 and alert.request_id:
                await self.store.findings.request_id(alert.project_id, alert.request_id,
                                                     obs.order_id)
            await self.publish_record(head)
        elif recorded.verdict is Verdict.DUPLICATE and head is not None:
            # Maybe our own earlier attempt crashed after its insert: finish its work.
            await self.publish_unless_published(head)
        elif recorded.anomaly is not None and head is not None:
            log.error("order_anomaly", status=obs.alert.status,
                      sub_status=obs.alert.sub_status, current_status=head["to"]["status"],
                      source=obs.source)
            await self.publish_unless_published(recorded.anomaly)

    async def schedule_first_check(self, order_id: str, seq: int, final: bool) -> None:
        """A non-final order (just changed, or registered) is checked once stale: the check
        waits in the broker, published before the message that caused it is acked."""
        if not final:
            await publish_check(self.broker, Check(order_id, seq, 0),
                                check_delay(0, self.poller))

    async def publish_unless_published(self, record: EventRecord) -> None:
        if not await self.store.outbox.is_published(record):
            await self.publish_record(record)

    async def publish_record(self, record: EventRecord) -> None:
        """Publish the record's event (the outbox's), and note on the caller's copy that it
        went out."""
        await self.publish_event(record["event"], record["routing_key"])
        record["published"] = True  # the copy the log's hint may hold too

    async def publish_event(self, event: Event, routing_key: str) -> None:
        """Publish with confirm, then mark it published. Repeating this after a crash
        re-publishes the same event_id, which consumers dedupe."""
        try:
            await self.broker.publish(
                ORDERS_EXCHANGE, routing_key, _event_body(event),
                correlation_id=event["correlation_id"], message_id=event["event_id"],
                headers={IDEMPOTENCY_HEADER: event["event_id"]},
            )
        except Unroutable:
            # No downstream queue is bound for this key: nobody to tell, nothing to retry.
            log.warning("event_unrouted", routing_key=routing_key, event_id=event["event_id"])
            self.metrics.unroutable.labels(routing_key).inc()
        self.metrics.events.labels(routing_key).inc()
        self.activity.note(routing_key, event)
        await self.store.outbox.mark(event["event_id"])

    async def relay_once(self, grace_s: float, window_s: float, limit: int = 200) -> int:
        """Publish events whose writer died before publishing them; returns how many.
        Each round looks at records from the previous round's end (less `grace_s`, for clock
        skew between replicas) up to `grace_s` ago, so a record is checked about once."""
        now = time.time()
        since = max(self._relayed_until - grace_s, now - window_s)
        window = (utc(since), utc(now - grace_s))
        count = 0
        for source in self.store.outbox.sources:
            records = await self.store.outbox.unpublished(source, window, limit)
            for record in records:
                await self.publish_record(record)
                count += 1
            if len(records) >= limit:
                return count  # more than a round's worth: resume from the same point
        self._relayed_until = now - grace_s
        return count


def _event_body(event: Event) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode("utf-8")
