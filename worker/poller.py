"""The poller: a due check (from the broker's wait queues) reads the order by `_id`, claims the
poll by a unique insert, asks HighHelp's /info, feeds the answer through the same state machine
(source `poll`), and schedules the next rung as the next check. The hourly sweep re-schedules an
order whose check was lost."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

import structlog

from shared.broker import check_delays
from shared.documents import OrderView, PollFinish, PollRecord, Schedule
from shared.gateway import GatewayError, GatewayRejected, NotPollable
from shared.settings import PollerSettings
from worker import ids
from worker.checks import Check, publish_check
from worker.metrics import WorkerMetrics
from worker.ports import Gateway, Publisher
from worker.processor import Processor
from worker.records import Observation, changed_at, stale_record, utc
from worker.schedule import Slot, after_poll, check_delay, next_slot
from worker.statemachine import Verdict
from worker.store import Claimed, Made, Store

log = structlog.get_logger("worker.poller")
SWEEP_BATCH = 500


class Poller:
    def __init__(
        self, store: Store, broker: Publisher, processor: Processor, metrics: WorkerMetrics,
        clients: Mapping[str, Gateway], settings: PollerSettings,
    ) -> None:
        self.store = store
        self.broker = broker
        self.processor = processor
        self.metrics = metrics
        self.clients = clients
        self.settings = settings
        self.owner = uuid.uuid4().hex[:12]  # names this replica in the polls it claims

    async def on_check(self, check: Check, redelivered: bool = False) -> str:
        """Decide a due check; returns what became of it (for the log line). `redelivered`:
        the check was tried before (redelivered, retried), and that try may be half done."""
        again = redelivered
        view = await self.store.views.find(check.order_id)
        if view is not None and (again or view["seq"] < check.seq):
            # Rebuilt from the log first if an earlier try of this check (a poll, maybe) may
            # have failed between a step and its view, or if the view is behind the step the
            # check was made at (a writer of an older view failed before its re-read, and its
            # retry has not rebuilt it yet): else the check would be dropped, and lost.
            view = await self.store.views.refresh(check.order_id)
        if view is None or view["final"]:
            return "dropped"  # settled
        if view["needs_review"]:
            # Given up. The poll that gave up may have failed before its order.stale went out
            # (its schedule was then written by a repair): finish that.
            await self._resume(check.order_id, await self.store.polls.schedule(check.order_id))
            return "dropped"
        if view["seq"] != check.seq:
            if view["seq"] > check.seq:  # moved on: a change schedules its own check
                await self._resume_change(view)
            return "dropped"
        schedule = await self.store.polls.schedule(check.order_id)
        slot = next_slot(view, schedule)  # its ladder_step: the polls made at this seq
        if slot.ladder_step > check.step:
            # This step's poll was made. This check may be the one it was made for, come
            # again after a crash or a failure (redelivered, or retried as a new message),
            # and the poll's follow-up may not have gone out: its marker says.
            await self._resume(check.order_id, schedule)
            return "made_already"
        if await self.poll(view, slot, utc(time.time())):
            return "polled"
        # A poll of this order is in flight elsewhere, or finished with its schedule not yet
        # written: look again after the shortest wait, ready to finish what a crash left.
        await publish_check(self.broker, replace(check, recheck=True),
                            min(check_delays(self.settings)))
        return "rechecking"

    async def _resume(self, order_id: str, schedule: Schedule | None) -> None:
        """Finish the follow-up of the last poll made: its order.stale event, or the next check
        (unless its marker says it went out)."""
        if schedule is None:
            return
        if schedule["gave_up"]:
            record = await self.store.polls.get(ids.poll(order_id, schedule["attempt"]))
            if record is not None and "event" in record:
                await self.processor.publish_unless_published(record)
            await self.store.views.refresh(order_id)
            return
        await self._schedule_next(order_id, schedule, resuming=True)

    async def _resume_change(self, view: OrderView) -> None:
        """The order moved past a check. A change from an alert scheduled its own check; one
        from a poll is followed by its owner's next check once the poll is finished, and the
        owner may have crashed or failed before that (its check, come again, is this one):
        then send the first check of the new step. A duplicate if the owner is only slow."""
        poll_id = view.get("changed_by_poll")  # absent from views written before it was
        if not poll_id or await self.store.polls.next_check_sent(poll_id):
            return
        await publish_check(self.broker, Check(view["_id"], view["seq"], 0),
                            check_delay(0, self.settings))

    async def _schedule_next(self, order_id: str, schedule: Schedule, *,
                             resuming: bool = False) -> None:
        """Publish the check that follows the poll `schedule` names, and note on that poll's
        record that it went out (so a redelivery does not send it twice)."""
        check = Check(order_id, schedule["last_seq"], schedule["ladder_step"])
        poll_id = ids.poll(order_id, schedule["attempt"])
        if resuming and await self.store.polls.next_check_sent(poll_id):
            return
        await publish_check(self.broker, check, check_delay(check.step, self.settings))
        await self.store.polls.finish(poll_id, {"next_check_sent": True})

    async def sweep(self) -> int:
        """The safety net: a non-final order whose poll is overdue by more than
        `sweep_grace_s` has lost its check (a purged queue): give it one. One paged scan,
        at most `sweep_rate_per_s` orders a second; returns how many were re-scheduled."""
        cutoff = utc(time.time() - self.settings.sweep_grace_s)
        pause = SWEEP_BATCH / self.settings.sweep_rate_per_s
        count = 0
        async for view in self.store.views.overdue(cutoff, SWEEP_BATCH):
            slot = next_slot(view, await self.store.polls.schedule(view["_id"]))
            await publish_check(self.broker, Check(view["_id"], slot.for_seq, slot.ladder_step,
                                                   recheck=True),
                                min(check_delays(self.settings)))
            count += 1
            if count % SWEEP_BATCH == 0:
                await asyncio.sleep(pause)
        return count

    async def poll_now(self, order_id: str) -> str:
        """Poll one order at once, out of its schedule (an operator asked: `hh-admin orders
        poll-now`, the console), through the same claim and state machine. The outcome, in
        words."""
        view = await self.store.views.find(order_id)
        if view is None:
            return "no such payment"
        if view["final"]:
            return "already final: nothing to poll"
        slot = next_slot(view, await self.store.polls.schedule(order_id))
        if not await self.poll(view, slot, utc(time.time())):
            return "another worker is polling it right now"
        # A one-off caller (hh-admin, the console) runs no flush loop: its events would be
        # missing from the console's recent activity.
        await self.processor.activity.flush()
        return "polled"

    async def poll(self, order: OrderView, slot: Slot, now: datetime) -> bool:
        order_id = order["_id"]
        claim = await self.store.polls.claim(order_id, slot, self.owner, now,
                                             self.settings.lease_s)
        if isinstance(claim, Made):
            await self._repair_schedule(order_id, claim.record, now)
        if not isinstance(claim, Claimed):
            return False
        # The schedule must name the attempt actually claimed: if an abandoned one was skipped,
        # recording the asked-for number would make every later round claim a finished poll.
        slot, poll_id = claim.slot, ids.poll(order_id, claim.slot.attempt)
        with structlog.contextvars.bound_contextvars(
                project_id=order["project_id"], payment_id=order["payment_id"],
                poll_id=poll_id, attempt=slot.attempt):
            await self._poll_claimed(order, slot, poll_id)
        return True

    async def _repair_schedule(self, order_id: str, made: PollRecord, now: datetime) -> None:
        """The poll was made already, yet the schedule we read says it is next: its owner is
        writing the schedule now, or died before it could. After the lease, repair from its
        record."""
        if made["finished_at"] is None or "schedule" not in made or (
                made["finished_at"] + timedelta(seconds=self.settings.lease_s) > now):
            return
        # Read again first: the schedule we decided on may be old by now (a newer poll's owner
        # wrote since), and an older one must not go back over it.
        current = await self.store.polls.schedule(order_id)
        if current is None or current["attempt"] < made["attempt"]:
            await self.store.polls.write_schedule(order_id, made["schedule"])
        await self.store.views.refresh(order_id)  # its due time follows the schedule

    async def _poll_claimed(self, order: OrderView, slot: Slot, poll_id: str) -> None:
        """Ask, record, then what follows: the poll's record finished with the schedule it
        decided (and the order.stale event, if it gave up), the schedule, the view (written
        once, here), and the next check."""
        order_id = order["_id"]
        outcome = await self._ask(order, poll_id)
        head = await self.store.log.head(order_id)
        registration = await self.store.registrations.get(order_id)
        finished = utc(time.time())
        schedule = after_poll(slot, head["seq"] if head else 0,
                              changed_at(head, registration) or finished, finished,
                              self.settings)
        fields: PollFinish = {"finished_at": finished, "outcome": outcome, "schedule": schedule}
        if schedule["gave_up"]:
            outcome = fields["outcome"] = "gave_up"
            fields.update(stale_record(poll_id, order, head, time.time()))
        await self.store.polls.finish(poll_id, fields)
        await self.store.polls.write_schedule(order_id, schedule)
        view = await self.store.views.refresh(order_id, head)
        if schedule["gave_up"]:
            log.error("order_gave_up", status=view["status"], polls=slot.attempt)
            await self.store.findings.needs_attention(view)
            await self.processor.publish_event(fields["event"], fields["routing_key"])
        else:
            # The next rung, or after a change the first check at the new seq.
            await self._schedule_next(order_id, schedule)
        self.metrics.polls.labels(outcome).inc()
        log.info("poll_finished", outcome=outcome,
                 next_due_at=schedule["next_due_at"].isoformat())

    async def _ask(self, order: OrderView, poll_id: str) -> str:
        """Ask the gateway and apply its answer; the outcome, for logs and metrics. No error
        of the gateway escapes: the poll is finished with its outcome and the ladder goes on
        (a payment that can never be polled gives up in time and is marked needs_review)."""
        client = self.clients.get(order["project_id"])
        if client is None:
            log.warning("poll_impossible", reason="no request key for this project")
            return "no_client"
        try:
            answer = await client.info(order["product"], order["flow"], order["payment_id"])
        except NotPollable as exc:
            log.warning("poll_impossible", reason=str(exc))
            return "not_pollable"
        except GatewayRejected as exc:
            log.warning("poll_rejected", http_status=exc.http_status,
                        status_description=exc.status_description)
            return "rejected"
        except GatewayError as exc:  # unavailable after its retries, or a request we could not make
            log.warning("poll_gateway_error", error=str(exc))
            return "gateway_error"
        if (answer.project_id, answer.payment_id) != (order["project_id"], order["payment_id"]):
            log.warning("poll_rejected", reason="answer names another payment")
            return "rejected"
        obs = Observation.from_poll(answer, time.time(), poll_id)
        async with self.processor.locks(obs.order_id):
            recorded = await self.processor.record(obs)
            await self.processor.finish(obs, recorded)  # shown once the poll is finished
        log.info("poll_processed", outcome=recorded.verdict.value, status=answer.status,
                 sub_status=answer.sub_status, seq=recorded.seq)
        if recorded.verdict is Verdict.APPLY:
            return "settled" if answer.final else "changed"
        return "unchanged" if recorded.verdict is not Verdict.ANOMALY else "anomaly"
