"""Tracing on: one trace follows an alert from the POST to the downstream event, through the
maintained instrumentations of aiohttp (server and client), aio-pika and PyMongo (checked
here against the real broker and store), and log lines carry its trace_id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ingest.app import BROKER, create_app
from shared import logs, tracing
from shared.settings import Settings
from tests import logcapture
from tests.conftest import EventTap, wait_until
from tests.integration.test_pipeline import post
from tests.keys import alert_body
from tests.logcapture import LOG_LINES
from worker.app import Worker

pytestmark = pytest.mark.services


def test_tracing_is_off_unless_the_otel_environment_asks() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_SERVICE_NAME": "x"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none",
                               "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not tracing.wanted({"OTEL_SDK_DISABLED": "true",
                               "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.start_if_wanted("hh-test", {}) is None
    assert not tracing.ON


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = tracing.configure("hh-test", exporter)
    logs.configure("json", "debug", cache=False, trace_ids=True)
    logcapture.configure(trace_ids=True)
    yield exporter
    tracing.uninstrument()
    logcapture.configure()
    provider.shutdown()


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def parent_chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = [span]
    while chain[-1].parent is not None and chain[-1].parent.span_id in by_id:
        chain.append(by_id[chain[-1].parent.span_id])
    return chain


async def test_one_trace_from_the_post_to_the_downstream_event(
    spans: InMemorySpanExporter, settings: Settings, amqp: Any, events: EventTap,
) -> None:
    app = create_app(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    worker = Worker(settings)
    await worker.start(http=False)
    try:
        async def ready() -> bool:
            return app[BROKER].ready
        await wait_until(ready, 20, "ingest connected")
        assert await post(client, alert_body("traced-1", "success", None), "success") == 200
        await events.wait(1)
        # The poller's session to HighHelp is traced too (its /info calls are client spans).
        assert worker._http_session.trace_configs
    finally:
        await worker.stop()
        await client.close()

    finished = list(spans.get_finished_spans())
    by_id = {s.context.span_id: s for s in finished}
    [server] = [s for s in finished if s.kind is SpanKind.SERVER]
    trace_id = server.context.trace_id
    assert server.name == "POST /callbacks/highhelp/success"
    assert server.attributes and server.attributes["http.status_code"] == 200

    # The event's publish span: its parents lead back through the store commands' sibling,
    # the consume and the alert's publish, to the POST.
    [event_publish] = [s for s in finished if s.kind is SpanKind.PRODUCER
                       and (s.attributes or {}).get("messaging.destination.name") == "hh.orders"]
    chain = parent_chain(event_publish, by_id)
    kinds = [(s.kind, (s.attributes or {}).get("messaging.destination.name")) for s in chain]
    assert kinds[:3] == [(SpanKind.PRODUCER, "hh.orders"), (SpanKind.CONSUMER, "hh.callbacks"),
                         (SpanKind.PRODUCER, "hh.callbacks")]
    assert chain[3] is server
    consume, alert_publish = chain[1], chain[2]
    assert all(s.context.trace_id == trace_id for s in chain)
    # The messaging conventions for RabbitMQ.
    assert alert_publish.attributes is not None and event_publish.attributes is not None
    assert alert_publish.attributes["messaging.system"] == "rabbitmq"
    assert alert_publish.attributes["messaging.rabbitmq.destination.routing_key"] == (
        "callback.success")
    assert event_publish.attributes["messaging.rabbitmq.destination.routing_key"] == (
        "order.success")
    assert consume.attributes is not None
    assert consume.attributes["messaging.destination.subscription.name"] == "hh.callbacks.process"
    # The store commands of the alert are children of its consume span.
    store = [s for s in finished if s.parent is not None
             and s.parent.span_id == consume.context.span_id
             and (s.attributes or {}).get("db.system") == "mongodb"]
    assert {(s.attributes or {}).get("db.mongodb.collection") for s in store} >= {
        "callbacks", "transitions", "orders"}

    # The downstream consumer gets the trace: the event's traceparent names its publish span.
    [message] = events.seen
    version, traced, parent, flags = str(message.headers["traceparent"]).split("-")
    assert (version, traced, parent) == (
        "00", hex_id(trace_id, 32), hex_id(event_publish.context.span_id, 16))
    assert int(flags, 16) & 1  # sampled

    # Log lines about this alert carry its trace_id, in the ingest and in the worker.
    lines = [json.loads(line) for line in LOG_LINES if '"traced-1"' in line]
    for name in ("alert_accepted", "alert_processed"):
        [line] = [entry for entry in lines if entry["event"] == name]
        assert line["trace_id"] == hex_id(trace_id, 32), name
