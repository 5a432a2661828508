"""The ingest aiohttp app: read, verify (ingest.verify), publish with confirm, answer."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import structlog
from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from ingest.admission import RETRY_AFTER_S, UNAVAILABLE, Admission
from ingest.network import SourcePolicy
from ingest.verify import Accepted, Rejected, verify_alert
from shared.broker import Broker, PublishFailed
from shared.envelope import AlertEnvelope
from shared.metrics import export_broker_node, metrics_handler, process_registry
from shared.queue_watch import QueueWatch
from shared.settings import ProjectSettings, Settings, SettingsError, load_settings
from shared.topology import (
    CALLBACKS_EXCHANGE,
    IDEMPOTENCY_HEADER,
    WATCHED_QUEUES,
    callback_routing_key,
)
from shared.wire import CALLBACK_PATHS, PROBE_HEADER

log = structlog.get_logger("ingest")



class IngestMetrics:
    def __init__(self) -> None:
        self.registry = process_registry()
        self.alerts = Counter(
            "hh_ingest_alerts", "Alerts answered, by route and outcome",
            ["route", "outcome"], registry=self.registry,
        )
        self.rejections = Counter(
            "hh_ingest_rejections", "Alerts refused, by reason", ["reason"], registry=self.registry
        )
        self.publish_seconds = Histogram(
            "hh_ingest_publish_seconds", "Confirmed publish latency", registry=self.registry
        )
        self.in_flight = Gauge(
            "hh_ingest_in_flight", "Alert requests being answered", registry=self.registry
        )
        self.max_in_flight = Gauge(
            "hh_ingest_max_in_flight", "The bound on alerts in flight now: it follows their "
            "latency and the event loop's lag, up to ingest.max_in_flight",
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "hh_ingest_loop_lag_seconds", "How late the event loop ran a timer, read every "
            "0.1 s: its work queued behind other work", registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.connections_cut = Counter(
            "hh_ingest_connections_cut", "Connections closed before a request was read: "
            "headers_too_slow, too_many_connections (answered 503)", ["reason"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "hh_ingest_request_seconds", "Alert request latency, by route", ["route"],
            registry=self.registry,
        )
        # The children every accepted alert touches, looked up once.
        self.accepted = {route: self.alerts.labels(route, "200") for route in CALLBACK_PATHS}
        self.overloaded = {route: self.alerts.labels(route, "503") for route in CALLBACK_PATHS}
        self.refused_overloaded = self.rejections.labels("overloaded")
        self.request_seconds_by_route = {route: self.request_seconds.labels(route)
                                         for route in CALLBACK_PATHS}


class KeyRing:
    """The cash registers and their keys, swapped whole on reload (SIGHUP): a request reads
    one consistent set, and requests in flight are never dropped."""

    def __init__(self, projects: Mapping[str, ProjectSettings], config_file: str | None = None
                 ) -> None:
        self.projects = projects
        self.config_file = config_file  # the file the process started with, --config or not

    def reload(self) -> bool:
        """Read the keys again from the file the process started with. A reload that fails,
        or that would leave no cash register (every alert would then be 401), keeps the keys
        in use and says why."""
        try:
            fresh = load_settings(self.config_file).projects
        except SettingsError as exc:
            log.error("keys_reload_failed", error=str(exc))
            return False
        if not fresh:
            log.error("keys_reload_failed", config_file=self.config_file,
                      error="the config names no cash register: the keys in use are kept")
            return False
        self.projects = fresh
        log.info("keys_reloaded", config_file=self.config_file,
                 keys={p: [k.key_id for k in project.callback_keys]
                       for p, project in fresh.items()})
        return True


class Lifecycle:
    """Whether the process is draining (SIGTERM received): readiness then says 503; and the
    task that connects to the broker, which the process watches for a failure for good."""

    def __init__(self) -> None:
        self.draining = False
        self.connecting: asyncio.Task[None] | None = None


SETTINGS = web.AppKey("settings", Settings)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
KEYS = web.AppKey("keys", KeyRing)
BROKER = web.AppKey("broker", Broker)
METRICS = web.AppKey("metrics", IngestMetrics)
SOURCES = web.AppKey("sources", SourcePolicy)
WATCH = web.AppKey("queue_watch", QueueWatch)
ADMISSION = web.AppKey("admission", Admission)


def _json(http_status: int, /, **fields: str) -> web.Response:
    return web.json_response(fields, status=http_status)


UNAUTHORIZED = {"status": "unauthorized"}
FORBIDDEN = {"status": "forbidden"}
RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_S)}


PROBED = b'{"status": "probe"}'


def _unavailable() -> web.Response:
    # A refusal is answered often under overload: its body is made once.
    return web.Response(body=UNAVAILABLE, status=503, headers=RETRY_AFTER,
                        content_type="application/json")


async def _answer_alert(request: web.Request, route: str, correlation_id: str) -> web.Response:
    settings = request.app[SETTINGS]
    limit = settings.ingest.max_body_bytes
    policy = request.app[SOURCES]
    if policy.allow:  # an empty allowlist admits everyone: no address to parse
        sender = policy.sender(request.remote, request.headers.get("X-Forwarded-For"))
        if not policy.admits(sender):
            return _rejected(request, route, correlation_id, Rejected(403, "network_not_allowed"),
                             sender=str(sender))
    # The limit holds before the body is read whole: a declared length over it is refused at
    # once, and aiohttp stops reading an undeclared (chunked) body at client_max_size.
    if request.content_length is not None and request.content_length > limit:
        return _rejected(request, route, correlation_id, Rejected(413, "body_too_large"))
    try:
        async with asyncio.timeout(settings.ingest.body_timeout_s):
            body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _rejected(request, route, correlation_id, Rejected(413, "body_too_large"))
    except TimeoutError:  # a body trickled in: the connection is not held for it
        return _rejected(request, route, correlation_id, Rejected(408, "body_too_slow"))

    result = verify_alert(
        body, request.headers, request.app[KEYS].projects, time.time(),
        settings.ingest.timestamp_tolerance_s,
    )
    if isinstance(result, Rejected):
        return _rejected(request, route, correlation_id, result)
    return await _publish(request, route, result, correlation_id)


def _rejected(
    request: web.Request, route: str, correlation_id: str, rejected: Rejected, **fields: str,
) -> web.Response:
    metrics = request.app[METRICS]
    metrics.alerts.labels(route, str(rejected.http_status)).inc()
    metrics.rejections.labels(rejected.reason).inc()
    alert = rejected.alert
    log.warning(
        "alert_rejected", outcome=rejected.http_status, reason=rejected.reason,
        route=route, correlation_id=correlation_id, **fields,
        project_id=alert.project_id if alert else None,
        payment_id=alert.payment_id if alert else None,
        request_id=alert.request_id if alert else None,
        idempotency_key=alert.idempotency_key if alert else None,
    )
    if rejected.http_status in (401, 403):
        return web.json_response(UNAUTHORIZED if rejected.http_status == 401 else FORBIDDEN,
                                 status=rejected.http_status)
    return _json(rejected.http_status, status="rejected", reason=rejected.reason)


async def _publish(
    request: web.Request, route: str, accepted: Accepted, correlation_id: str,
) -> web.Response:
    metrics, broker = request.app[METRICS], request.app[BROKER]
    alert = accepted.alert
    # Both lines about the alert name it in full; passed to each rather than bound as context
    # variables: binding and resetting seven of them cost more than the line itself.
    about = {"route": route, "correlation_id": correlation_id, "project_id": alert.project_id,
             "payment_id": alert.payment_id, "request_id": alert.request_id,
             "idempotency_key": alert.idempotency_key, "key_id": accepted.key_id}
    envelope = AlertEnvelope(
        body=accepted.body_text, route=route, timestamp=accepted.timestamp,
        key_id=accepted.key_id, received_at=time.time(), correlation_id=correlation_id,
    )
    started = time.perf_counter()
    try:
        await broker.publish(
            CALLBACKS_EXCHANGE, callback_routing_key(alert.status), envelope.to_bytes(),
            correlation_id=correlation_id, headers={IDEMPOTENCY_HEADER: alert.idempotency_key},
            message_id=correlation_id,  # one message per request: its id names it already
        )
    except PublishFailed as exc:
        metrics.alerts.labels(route, "503").inc()
        metrics.rejections.labels("broker_unavailable").inc()
        log.error("alert_not_accepted", outcome=503, reason=str(exc), **about)
        return _unavailable()
    metrics.publish_seconds.observe(time.perf_counter() - started)
    metrics.accepted[route].inc()
    log.info("alert_accepted", outcome=200, status=alert.status, sub_status=alert.sub_status,
             **about)
    # Made by hand, once per accepted alert: json_response would encode a dict each time.
    return web.Response(body=b'{"status": "accepted", "correlation_id": "%s"}'
                        % correlation_id.encode(), content_type="application/json")


def alert_handler(route: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        metrics, admission = request.app[METRICS], request.app[ADMISSION]
        if PROBE_HEADER in request.headers:  # hh-admin doctor: this URL reaches us
            log.info("probe_answered", route=route)
            return web.Response(body=PROBED, content_type="application/json")
        # Its place taken as it arrived (ingest.slow), or now, before the body is read: a
        # refusal costs next to nothing.
        if not (admission.claim(request.transport) or admission.enter()):
            return _overloaded(metrics, admission, route)
        started = time.perf_counter()
        published = False
        try:
            correlation_id = os.urandom(16).hex()  # as random as uuid4, at a third of its cost
            answer = await _answer_alert(request, route, correlation_id)
            published = answer.status == 200
            return answer
        finally:
            took = time.perf_counter() - started
            # Only a published alert's time tells the bound of a queue: a rejection is quick.
            admission.leave(took if published else None)
            metrics.request_seconds_by_route[route].observe(took)

    return handler


def _overloaded(metrics: IngestMetrics, admission: Admission, route: str) -> web.Response:
    count_overloaded(metrics, admission, route)
    return _unavailable()


def count_overloaded(metrics: IngestMetrics, admission: Admission, route: str) -> None:
    """An alert refused for want of a place, by the handler or before aiohttp read it."""
    metrics.overloaded[route].inc()
    metrics.refused_overloaded.inc()
    refused = admission.refusals_to_log(time.monotonic())
    if refused:  # one line a second at most: a storm of refusals must not become one of logs
        log.warning("alerts_refused_overloaded", refused=refused, in_flight=admission.in_flight,
                    bound=admission.limit)


async def healthz(_request: web.Request) -> web.Response:
    return _json(200, status="ok")


async def readyz(request: web.Request) -> web.Response:
    if request.app[LIFECYCLE].draining:
        return _json(503, status="draining")
    if request.app[BROKER].ready:
        return _json(200, status="ready")
    return _json(503, status="broker unavailable")


async def _broker_ctx(app: web.Application) -> AsyncIterator[None]:
    # Start serving at once: until the broker answers, /readyz and alerts say 503.
    connecting = app[LIFECYCLE].connecting = asyncio.create_task(app[BROKER].connect_forever())
    watching = asyncio.create_task(_watch_queues(app[WATCH], connecting))
    yield
    for task in (watching, connecting):
        task.cancel()
    await asyncio.gather(watching, connecting, return_exceptions=True)
    await app[WATCH].close()
    await app[BROKER].close()


async def _admission_ctx(app: web.Application) -> AsyncIterator[None]:
    following = asyncio.create_task(app[ADMISSION].run(app[METRICS].loop_lag.observe))
    yield
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)


async def _watch_queues(watch: QueueWatch, connecting: asyncio.Task[None]) -> None:
    """The queues' gauges, once connected: the ingest exports the work queue's depth and
    consumers too, so that an alert still fires when no worker runs at all."""
    try:
        await asyncio.shield(connecting)
    except Exception:  # noqa: BLE001 - the process reports a failed connection itself
        return
    await watch.run()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.ingest.max_body_bytes)
    app[SETTINGS] = settings
    app[LIFECYCLE] = Lifecycle()
    app[METRICS] = IngestMetrics()
    app[KEYS] = KeyRing(settings.projects, settings.config_file)
    app[ADMISSION] = admission = Admission(settings.ingest.max_in_flight,
                                           settings.ingest.latency_target_s)
    app[METRICS].in_flight.set_function(lambda: admission.in_flight)
    app[METRICS].max_in_flight.set_function(lambda: admission.limit)
    app[SOURCES] = SourcePolicy.parse(settings.ingest.allowed_networks,
                                      settings.ingest.trusted_proxies)
    app[BROKER] = Broker.for_settings(settings)
    app[WATCH] = QueueWatch(app[BROKER], app[METRICS].registry, WATCHED_QUEUES,
                            settings.amqp.queue_watch_interval_s)
    export_broker_node(app[METRICS].registry, app[BROKER])
    app.cleanup_ctx.append(_broker_ctx)
    app.cleanup_ctx.append(_admission_ctx)
    for route, path in CALLBACK_PATHS.items():
        app.router.add_post(path, alert_handler(route))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler(app[METRICS].registry))
    return app
