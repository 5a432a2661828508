"""OpenTelemetry tracing, off unless the standard OTEL_* environment asks for it.

On, one trace follows an alert: the ingest's request span (aiohttp server instrumentation),
its publish (aio-pika instrumentation's span, `producing`: W3C `traceparent` in the AMQP
headers), the worker's
consume of it (the same, extracting the context), the store commands (PyMongo's command
listener, which the async client fires too), and the event's publish, whose headers carry the
trace on to downstream consumers; the poller's /info calls are client spans. Off, nothing is
imported or patched: tracing costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

_EXPORTER_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
ON = False  # set by configure: code that adds to spans asks this first (off: no OTel import)


def wanted(env: Mapping[str, str]) -> bool:
    """Tracing is on when an OTLP endpoint or a traces exporter is set, and the SDK is not
    disabled (OTEL_SDK_DISABLED=true)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter) or any(env.get(name) for name in _EXPORTER_VARIABLES)


def start_if_wanted(service_name: str, env: Mapping[str, str] = os.environ) -> Any:
    """At a process's start: the tracer provider if the environment asks for tracing (shut
    it down at exit, which flushes the last spans), else None."""
    return configure(service_name) if wanted(env) else None


def configure(service_name: str, exporter: Any = None) -> Any:
    """Install the tracer provider and the instrumentations; returns the provider (flush it
    with `shutdown()` at exit). `exporter`: a span exporter (the tests' in-memory one); by
    default OTLP over HTTP, configured by the OTEL_EXPORTER_OTLP_* variables, or the console
    with OTEL_TRACES_EXPORTER=console (to look at spans by hand)."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                               service_name)})
    provider = TracerProvider(resource=resource)
    if exporter is None and os.environ.get("OTEL_TRACES_EXPORTER", "").strip() == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))  # to look
    elif exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(_rabbitmq_attributes())
    trace.set_tracer_provider(provider)
    for instrumentor in (AioPikaInstrumentor(), PymongoInstrumentor(),
                         AioHttpServerInstrumentor(), AioHttpClientInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
    global ON
    ON = True
    return provider


def _rabbitmq_attributes() -> Any:
    """A span processor giving aio-pika's spans the messaging conventions' RabbitMQ
    attributes: its instrumentation names the destination "exchange,routing_key" only."""
    from opentelemetry.sdk.trace import Span, SpanProcessor
    from opentelemetry.trace import SpanKind

    class RabbitMqAttributes(SpanProcessor):
        def on_start(self, span: Span, parent_context: Any = None) -> None:
            attributes = span.attributes or {}
            if attributes.get("messaging.system") != "rabbitmq":
                return
            destination = str(attributes.get("messaging.destination", ""))
            exchange, _, routing_key = destination.partition(",")
            span.set_attribute("messaging.destination.name", exchange or "(default)")
            if routing_key:
                span.set_attribute("messaging.rabbitmq.destination.routing_key", routing_key)
            span.set_attribute("messaging.operation.type",
                               "send" if span.kind is SpanKind.PRODUCER else "receive")

    return RabbitMqAttributes()


@contextmanager
def producing(exchange: str, routing_key: str, channel: Any, properties: Any) -> Iterator[None]:
    """The publish span aio-pika's instrumentation makes, around a publish that goes to
    aiormq's channel itself (shared/broker.py), and its W3C traceparent in the headers."""
    from opentelemetry import propagate, trace
    from opentelemetry.instrumentation.aio_pika.span_builder import SpanBuilder

    builder: Any = SpanBuilder(trace.get_tracer("opentelemetry.instrumentation.aio_pika"))
    builder.set_as_producer()
    builder.set_destination(f"{exchange},{routing_key}")
    builder.set_channel(channel)
    builder.set_message(SimpleNamespace(properties=properties))
    span = builder.build()
    if span is None:  # instrumentation suppressed for this context
        yield
        return
    with trace.use_span(span, end_on_exit=True):
        propagate.inject(properties.headers)
        yield


def annotate_receive(queue: str, routing_key: str | None) -> None:
    """On the current (consume) span: the queue taken from and the message's routing key."""
    from opentelemetry import trace

    span = trace.get_current_span()
    span.set_attribute("messaging.destination.subscription.name", queue)
    if routing_key:
        span.set_attribute("messaging.rabbitmq.destination.routing_key", routing_key)


def uninstrument() -> None:
    """Undo `configure`'s patches (the tests trace one test, not the whole session)."""
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    global ON
    ON = False
    for instrumentor in (AioPikaInstrumentor(), PymongoInstrumentor(),
                         AioHttpServerInstrumentor(), AioHttpClientInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


def add_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: the current span's trace_id and span_id on each log line."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event
