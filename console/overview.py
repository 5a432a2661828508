"""The overview's figures: alert outcomes and rejections over the last hour, from the
processes' own /metrics sampled every minute (counters: the last hour is the difference with
the sample taken an hour ago); the queues from the broker (passive declare)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import aiohttp
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from shared.broker import Broker
from shared.queue_watch import QueueWatch
from shared.topology import DEAD_QUEUE, PROCESS_QUEUE, WATCHED_QUEUES

log = structlog.get_logger("console")
HOUR_S = 3600.0
# family -> the label that splits it, for the overview's tables
COUNTED = {"hh_ingest_alerts": "outcome", "hh_ingest_rejections": "reason",
           "hh_worker_alerts": "outcome"}
Sample = dict[str, dict[str, float]]  # family -> label value -> count (summed over processes)


def read_counters(texts: list[str]) -> tuple[Sample, float | None]:
    """The counters of COUNTED, and the work queue's oldest-message age, from /metrics texts."""
    counts: Sample = {name: {} for name in COUNTED}
    oldest: float | None = None
    for text in texts:
        for family in text_string_to_metric_families(text):
            name = family.name.removesuffix("_total")  # typed counters drop it; untyped not
            if name in COUNTED:
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        value = sample.labels.get(COUNTED[name], "")
                        counts[name][value] = counts[name].get(value, 0.0) + sample.value
            elif family.name == "hh_queue_oldest_message_age_seconds":
                for sample in family.samples:
                    if sample.labels.get("queue") == PROCESS_QUEUE:
                        oldest = max(oldest or 0.0, sample.value)
    return counts, oldest


def difference(now: Sample, then: Sample) -> Sample:
    """now - then, per value; a counter that went down (a process restarted) counts from 0."""
    out: Sample = {}
    for name, values in now.items():
        before = then.get(name, {})
        out[name] = {k: v - before.get(k, 0.0) if v >= before.get(k, 0.0) else v
                     for k, v in values.items()}
        out[name] = {k: v for k, v in out[name].items() if v > 0}
    return out


class Overview:
    def __init__(self, urls: tuple[str, ...], broker: Broker, every_s: float = 60.0) -> None:
        self.urls = urls
        self.every_s = every_s
        self.samples: deque[tuple[float, Sample]] = deque()
        self.oldest_age: float | None = None
        self.unreachable: list[str] = []
        self.watch = QueueWatch(broker, CollectorRegistry(), WATCHED_QUEUES, every_s)

    async def sample(self, http: aiohttp.ClientSession) -> None:
        texts, unreachable = [], []
        for url in self.urls:
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                    texts.append(await response.text())
            except (aiohttp.ClientError, TimeoutError):
                unreachable.append(url)
        counts, self.oldest_age = read_counters(texts)
        now = time.time()
        self.samples.append((now, counts))
        while len(self.samples) > 1 and self.samples[1][0] <= now - HOUR_S:
            self.samples.popleft()
        self.unreachable = unreachable

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    await self.sample(http)
                except Exception as exc:  # noqa: BLE001 - the next minute tries again
                    log.warning("overview_sample_failed", error=type(exc).__name__)
                await asyncio.sleep(self.every_s)

    async def figures(self) -> dict[str, Any]:
        try:
            await self.watch.read_once()
            queues = {name: {"messages": self._gauge(self.watch.messages, name),
                             "consumers": self._gauge(self.watch.consumers, name)}
                      for name in WATCHED_QUEUES}
        except Exception as exc:  # noqa: BLE001 - the page says the broker did not answer
            log.warning("overview_queues_failed", error=type(exc).__name__)
            queues = {}
        last_hour: Sample = {}
        since = None
        if self.samples:
            since, first = self.samples[0]
            last_hour = difference(self.samples[-1][1], first)
        return {
            "since": since, "last_hour": last_hour, "queues": queues,
            "work_queue": queues.get(PROCESS_QUEUE), "dead_letters":
                (queues.get(DEAD_QUEUE) or {}).get("messages"),
            "oldest_age_s": self.oldest_age, "unreachable": self.unreachable,
        }

    @staticmethod
    def _gauge(gauge: Any, queue: str) -> float:
        return float(gauge.labels(queue)._value.get())

    async def close(self) -> None:
        await self.watch.close()
