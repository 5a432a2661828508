"""The worker's Prometheus metrics (served on its /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import process_registry


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = process_registry()
        self.alerts = Counter(
            "hh_worker_alerts", "Alerts processed, by outcome", ["outcome"], registry=self.registry
        )
        self.events = Counter(
            "hh_worker_events", "Events published, by routing key", ["routing_key"],
            registry=self.registry,
        )
        self.failures = Counter(
            "hh_worker_failures", "Messages that failed, by kind", ["kind"], registry=self.registry
        )
        self.polls = Counter(
            "hh_worker_polls", "Polls of stale orders, by outcome", ["outcome"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "hh_worker_alert_seconds", "Time to process one alert", registry=self.registry
        )
        self.unroutable = Counter(
            "hh_worker_events_unroutable", "Events no downstream queue was bound for",
            ["routing_key"], registry=self.registry,
        )
        self.waited = Histogram(
            "hh_worker_message_wait_seconds",
            "From publish to being taken from a queue, by queue: the backlog's delay, retry "
            "delays included (AMQP timestamps have whole seconds)",
            ["queue"], registry=self.registry,
            buckets=(1, 2, 5, 15, 30, 60, 300, 900, 3600, 6 * 3600),
        )
        self.consuming = Gauge(
            "hh_worker_consuming", "1 while this worker consumes its queues",
            registry=self.registry,
        )
