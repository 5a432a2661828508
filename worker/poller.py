"""The poller: every replica looks for stale orders, claims each due poll by a unique insert,
asks HighHelp's /info, and feeds the answer through the same state machine (source `poll`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from datetime import datetime

import structlog

from shared.gateway import GatewayClient, GatewayError, GatewayRejected, NotPollable
from shared.settings import PollerSettings
from worker.processor import Processor
from worker.records import Observation, stale_record, utc
from worker.schedule import Slot, after_poll, due_slot
from worker.statemachine import Verdict
from worker.store import OrderStore

log = structlog.get_logger("worker.poller")


class Poller:
    def __init__(
        self, processor: Processor, clients: Mapping[str, GatewayClient],
        settings: PollerSettings,
    ) -> None:
        self.processor = processor
        self.store: OrderStore = processor.store
        self.clients = clients
        self.settings = settings
        self.owner = uuid.uuid4().hex[:12]  # names this replica in the polls it claims

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("poller_round_failed", error=type(exc).__name__)
            await asyncio.sleep(self.settings.interval_s)

    async def run_once(self) -> int:
        """One look for due orders; returns how many polls this replica made."""
        now = utc(time.time())
        made = 0
        for order in await self.store.due_orders(now, self.settings.batch):
            schedule = await self.store.schedule(order["_id"])
            slot = due_slot(order, schedule, now)
            if slot is not None and await self.poll(order, slot, now):
                made += 1
        return made

    async def poll(self, order: dict[str, object], slot: Slot, now: datetime) -> bool:
        order_id = str(order["_id"])
        claimed = await self.store.claim_poll(order_id, slot, self.owner, now,
                                              self.settings.lease_s)
        if claimed is None:
            return False
        # The schedule must name the attempt actually claimed: if an abandoned one was skipped,
        # recording the asked-for number would make every later round claim a finished poll.
        slot, poll_id = claimed, f"{order_id}:{claimed.attempt}"
        with structlog.contextvars.bound_contextvars(
                project_id=order["project_id"], payment_id=order["payment_id"],
                poll_id=poll_id, attempt=slot.attempt):
            return await self._poll_claimed(order, slot, poll_id, now)

    async def _poll_claimed(self, order: dict[str, object], slot: Slot, poll_id: str,
                            now: datetime) -> bool:
        order_id = str(order["_id"])
        outcome = await self._ask(order, poll_id)
        view = await self.store.refresh_view(order_id)
        finished = utc(time.time())
        schedule = after_poll(slot, int(view["seq"]), view["updated_at"] or now, finished,
                              self.settings)
        fields: dict[str, object] = {"finished_at": finished, "outcome": outcome,
                                     "schedule": schedule}
        if schedule["gave_up"]:
            outcome = fields["outcome"] = "gave_up"
            fields.update(stale_record(poll_id, view, time.time()))
        await self.store.finish_poll(poll_id, fields)
        await self.store.write_schedule(order_id, schedule)
        await self.store.refresh_view(order_id)
        if schedule["gave_up"]:
            log.error("order_gave_up", status=view["status"], polls=slot.attempt)
            await self.processor.publish_record({"_id": poll_id, **fields})
        self.processor.metrics.polls.labels(outcome).inc()
        log.info("poll_finished", outcome=outcome,
                   next_due_at=schedule["next_due_at"].isoformat())
        return True

    async def _ask(self, order: dict[str, object], poll_id: str) -> str:
        """Ask the gateway and apply its answer; the outcome, for logs and metrics. No error
        of the gateway escapes: the poll is finished with its outcome and the ladder goes on
        (a payment that can never be polled gives up in time and is marked needs_review)."""
        client = self.clients.get(str(order["project_id"]))
        if client is None:
            log.warning("poll_impossible", reason="no request key for this project")
            return "no_client"
        try:
            answer = await client.info(str(order["product"]), str(order["flow"]),
                                       str(order["payment_id"]))
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
            verdict = await self.processor.apply(obs)
        if verdict is Verdict.APPLY:
            return "settled" if answer.final else "changed"
        return "unchanged" if verdict is not Verdict.ANOMALY else "anomaly"
