"""The worker process: start and stop hooks around the consumers, the outbox relay and a small
HTTP server for health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from pymongo import AsyncMongoClient

from shared import mongo
from shared.broker import Broker
from shared.metrics import export_broker_node, metrics_handler
from shared.queue_watch import QueueWatch
from shared.settings import Settings
from shared.topology import DUE_QUEUE, PROCESS_QUEUE, REGISTER_QUEUE, WATCHED_QUEUES
from worker import parts
from worker.consumer import BACKLOG_QUEUES, Consumer
from worker.maintenance import Maintenance
from worker.retention import ttl_seconds

log = structlog.get_logger("worker")
STOP_STEP_S = 10.0  # the longest any one step of a stop may take


async def _bounded(step: str, closing: Coroutine[Any, Any, None]) -> None:
    try:
        await asyncio.wait_for(closing, STOP_STEP_S)
    except TimeoutError:
        log.warning("stop_step_timed_out", step=step, after_s=STOP_STEP_S)


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = Broker.for_settings(settings)
        self.mongo_client: AsyncMongoClient[mongo.Document] = mongo.client(settings.mongo)
        self._http_session = aiohttp.ClientSession()  # the poller's, to HighHelp
        built = parts.build(settings, self.mongo_client, self.broker, self._http_session)
        self.metrics, self.store, self.processor = built.metrics, built.store, built.processor
        self.poller = built.poller
        self.watch = QueueWatch(self.broker, self.metrics.registry, WATCHED_QUEUES,
                                settings.amqp.queue_watch_interval_s, consumed=BACKLOG_QUEUES)
        export_broker_node(self.metrics.registry, self.broker)
        self.consumer = Consumer(self.broker, self.processor, self.poller, settings.worker,
                                 self.watch)
        self.maintenance = Maintenance(self.processor, self.poller, settings.worker,
                                       settings.poller, settings.retention)
        self._tasks: list[asyncio.Task[None]] = []
        self._consumer_tags: list[tuple[object, str]] = []
        self._runner: web.AppRunner | None = None
        self.consuming = False  # /healthz says 200 only once the consumers run
        self.maintenance_looked = asyncio.Event()  # set once a period's maintenance is settled
        self.draining = False

    async def start(self, *, http: bool = True) -> None:
        """Start serving health, then the store, the broker and the consumers. Any failure
        raises (the caller logs it and exits non-zero); unreachable services are waited for."""
        if http:
            await self._start_http()
        await self._wait_for_mongo()
        ttl = ttl_seconds(self.settings.retention, self.settings.poller,
                          await mongo.is_ferretdb(self.mongo_client))
        self.maintenance.expiring = await mongo.ensure_indexes(self.store.collections, ttl)
        await self.broker.connect_forever()
        assert self.broker.connection is not None
        channel = await self.broker.connection.channel()
        await channel.set_qos(prefetch_count=self.settings.amqp.prefetch)
        # Kept: the robust connection holds its channels weakly, and restores after an
        # outage only those still referenced (this one carries every consumer).
        self._consuming_channel = channel
        consumers = [(PROCESS_QUEUE, self.consumer.on_alert),
                     (REGISTER_QUEUE, self.consumer.on_registration)]
        if self.settings.poller.enabled:
            consumers.append((DUE_QUEUE, self.consumer.on_check))
        for name, callback in consumers:
            queue = await channel.get_queue(name, ensure=True)
            tag = await queue.consume(callback)
            self._consumer_tags.append((queue, tag))
        self._tasks.append(asyncio.create_task(self._maintenance_loop()))
        self._tasks.append(asyncio.create_task(self.watch.run()))
        self._tasks.append(asyncio.create_task(self.processor.activity.run()))
        self.consuming = True
        self.metrics.consuming.set(1)
        log.info("worker_started", prefetch=self.settings.amqp.prefetch)

    async def _wait_for_mongo(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.mongo_client.admin.command("ping")
                return
            except Exception as exc:  # noqa: BLE001 - any failure here means "not yet"
                log.warning("mongo_unreachable", error=type(exc).__name__, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _maintenance_loop(self) -> None:
        """At start-up and once a period (hourly by default), one replica - whoever inserts
        the period's job record - runs the jobs whose queries read whole collections."""
        interval = self.settings.worker.maintenance_interval_s
        while True:
            period = self.maintenance.period(time.time())
            try:
                await self.maintenance.run_period(period)
            except Exception as exc:  # noqa: BLE001 - the next period tries again
                log.warning("maintenance_failed", error=type(exc).__name__)
            self.maintenance_looked.set()
            await asyncio.sleep(max(0.0, (period + 1) * interval - time.time()))

    async def stop(self) -> None:
        """Stop consuming, let in-flight messages finish, then close everything."""
        self.draining = True
        self.metrics.consuming.set(0)
        for queue, tag in self._consumer_tags:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)  # type: ignore[attr-defined]
        if self.consumer.in_flight:
            await asyncio.wait(set(self.consumer.in_flight), timeout=30)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _done, stuck = await asyncio.wait(self._tasks, timeout=STOP_STEP_S)
            if stuck:
                log.warning("worker_tasks_not_stopped", tasks=len(stuck))
        # Each step is bounded: a stop must end even if a peer stops answering mid-close.
        await _bounded("activity_flush", self.processor.activity.flush())
        await _bounded("queue_watch_close", self.watch.close())
        await _bounded("http_session_close", self._http_session.close())
        await _bounded("broker_close", self.broker.close())
        await _bounded("mongo_close", self.mongo_client.close())
        if self._runner is not None:
            await _bounded("http_server_close", self._runner.cleanup())
        log.info("worker_stopped")

    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", metrics_handler(self.metrics.registry))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.worker.host, self.settings.worker.port)
        await site.start()

    async def _healthz(self, _request: web.Request) -> web.Response:
        if self.consuming:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "starting"}, status=503)

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self.broker.ready and not self.draining:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)
