"""The periodic maintenance (design.md, "Stale orders" and "Retention"): at start-up and once a
period, one replica - whoever inserts the period's job record - runs the jobs whose queries
read whole collections: the outbox relay, the sweep and retention."""

from __future__ import annotations

import time

import structlog

from shared.settings import PollerSettings, RetentionSettings, WorkerSettings
from worker import ids
from worker.poller import Poller
from worker.processor import Processor
from worker.retention import Retention

log = structlog.get_logger("worker")


class Maintenance:
    def __init__(self, processor: Processor, poller: Poller, worker: WorkerSettings,
                 poller_settings: PollerSettings, retention: RetentionSettings) -> None:
        self.processor = processor
        self.poller = poller
        self.worker = worker
        self.poller_settings = poller_settings
        self.retention = retention
        self.expiring: set[str] = set()  # collections the server expires (TTL indexes)

    def period(self, now: float) -> int:
        return int(now // self.worker.maintenance_interval_s)

    async def run_period(self, period: int) -> bool:
        """Run the period's jobs if this replica claims the period; True if it did."""
        job_id = ids.maintenance_job(self.worker.maintenance_interval_s, period)
        if not await self.processor.store.jobs.claim(job_id, self.poller.owner):
            return False
        await self.run()
        return True

    async def run(self) -> None:
        started = time.monotonic()
        relayed = await self.processor.relay_once(self.worker.relay_grace_s,
                                                  self.worker.relay_window_s)
        swept = await self.poller.sweep() if self.poller_settings.enabled else 0
        if self.retention.enabled:
            await Retention(self.processor.store.collections, self.retention,
                            self.expiring).run()
        log.info("maintenance_done", events_relayed=relayed, checks_rescheduled=swept,
                 seconds=round(time.monotonic() - started, 3))
