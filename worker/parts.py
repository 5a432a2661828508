"""The one place that wires the worker's parts together: the worker process, `hh-admin`
(poll-now) and the simulator (`sim/`) build the same store, processor and poller; only what
they are given differs (real collections, broker and HighHelp clients, or in-memory ones)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from pymongo import AsyncMongoClient

from shared import mongo
from shared.broker import Broker
from shared.gateway import GatewayClient
from shared.settings import Settings
from worker.activity import ActivityFeed
from worker.metrics import WorkerMetrics
from worker.poller import Poller
from worker.ports import Gateway, Publisher
from worker.processor import Processor
from worker.store import Store


@dataclass(frozen=True)
class Parts:
    metrics: WorkerMetrics
    store: Store
    activity: ActivityFeed
    processor: Processor
    poller: Poller


def gateway_clients(settings: Settings, session: aiohttp.ClientSession
                    ) -> dict[str, GatewayClient]:
    """A HighHelp client per cash register that can sign requests (the others cannot poll)."""
    return {project_id: GatewayClient(project, session)
            for project_id, project in settings.projects.items()
            if project.request_key is not None}


def assemble(settings: Settings, collections: mongo.Collections, broker: Publisher,
             clients: Mapping[str, Gateway], metrics: WorkerMetrics | None = None
             ) -> Parts:
    metrics = metrics or WorkerMetrics()
    store = Store.of(collections, settings.projects, settings.poller,
                     settings.worker.batch_window_s)
    activity = ActivityFeed(collections.activity)
    processor = Processor(store, broker, metrics, settings.poller, activity)
    poller = Poller(store, broker, processor, metrics, clients, settings.poller)
    return Parts(metrics, store, activity, processor, poller)


def build(settings: Settings, db: AsyncMongoClient[mongo.Document], broker: Broker,
          http: aiohttp.ClientSession) -> Parts:
    return assemble(settings, mongo.Collections.of(db[settings.mongo.database]), broker,
                    gateway_clients(settings, http))
