"""The one place that wires the worker's parts together: the worker process and `hh-admin`
(poll-now) build the same store, processor and poller from the settings."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from pymongo import AsyncMongoClient

from shared import mongo
from shared.broker import Broker
from shared.gateway import GatewayClient
from shared.settings import Settings
from worker.metrics import WorkerMetrics
from worker.poller import Poller
from worker.processor import Processor
from worker.store import OrderStore


@dataclass(frozen=True)
class Parts:
    metrics: WorkerMetrics
    store: OrderStore
    processor: Processor
    poller: Poller


def gateway_clients(settings: Settings, session: aiohttp.ClientSession
                    ) -> dict[str, GatewayClient]:
    """A HighHelp client per cash register that can sign requests (the others cannot poll)."""
    return {project_id: GatewayClient(project, session)
            for project_id, project in settings.projects.items()
            if project.request_key is not None}


def build(settings: Settings, db: AsyncMongoClient[mongo.Document], broker: Broker,
          http: aiohttp.ClientSession) -> Parts:
    metrics = WorkerMetrics()
    store = OrderStore(mongo.Collections.of(db[settings.mongo.database]), settings.projects,
                       settings.poller, settings.worker.batch_window_s)
    processor = Processor(store, broker, metrics, settings.poller)
    poller = Poller(processor, gateway_clients(settings, http), settings.poller)
    return Parts(metrics, store, processor, poller)
