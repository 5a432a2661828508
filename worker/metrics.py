"""The worker's Prometheus metrics (served on its /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
