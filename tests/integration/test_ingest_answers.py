"""Every bad request gets its defined answer, and nothing reaches the broker."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest.app import BROKER, create_app
from shared.settings import IngestSettings, Settings
from shared.wire import CALLBACK_PATHS, SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.conftest import take_queued, wait_until
from tests.keys import alert_body, gateway_rsa, merchant_rsa, signed_headers, vectors
from tests.logcapture import captured

pytestmark = pytest.mark.services
PATH = CALLBACK_PATHS["callback"]


async def queued(amqp: aio_pika.abc.AbstractChannel) -> int:
    """How many alerts reached the work queue (taken off it)."""
    return len(await take_queued(amqp))


def without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


def tampered_body() -> tuple[bytes, dict[str, str]]:
    body = alert_body()
    return body.replace(b"150000", b"150001"), signed_headers(body, gateway_rsa())


def tampered_timestamp() -> tuple[bytes, dict[str, str]]:
    body = alert_body()
    headers = signed_headers(body, gateway_rsa())
    return body, {**headers, TIMESTAMP_HEADER: str(int(headers[TIMESTAMP_HEADER]) - 1)}


# Well outside the window: the header's second is truncated and the request takes time to
# arrive, so one second past the edge can land back inside it (the edge is a unit test's).
OUTSIDE_WINDOW_S = IngestSettings.timestamp_tolerance_s + 60

CASES: list[tuple[str, Callable[[], tuple[bytes, dict[str, str]]], int]] = [
    ("tampered body", tampered_body, 401),
    ("tampered timestamp", tampered_timestamp, 401),
    ("wrong key", lambda: (alert_body(), signed_headers(alert_body(), merchant_rsa())), 401),
    ("no signature", lambda: (alert_body(), without(
        signed_headers(alert_body(), gateway_rsa()), SIGNATURE_HEADER)), 401),
    ("old timestamp", lambda: (alert_body(), signed_headers(
        alert_body(), gateway_rsa(), int(time.time()) - OUTSIDE_WINDOW_S)), 401),
    ("future timestamp", lambda: (alert_body(), signed_headers(
        alert_body(), gateway_rsa(), int(time.time()) + OUTSIDE_WINDOW_S)), 401),
    ("unknown project", lambda: (alert_body(project_id="00000000-0000-0000-0000-000000000000"),
        signed_headers(alert_body(project_id="00000000-0000-0000-0000-000000000000"),
                       gateway_rsa())), 401),
    ("not json", lambda: (b"hello", {TIMESTAMP_HEADER: "1"}), 400),
    ("json array", lambda: (b"[1]", {}), 400),
    ("no project_id", lambda: (json.dumps({"general": {"payment_id": "p"},
                                           "status": {"status": "success"}}).encode(), {}), 400),
    ("no payment_id", lambda: (alert_body().replace(b'"payment_id":"order-1001",', b""), {}), 400),
    ("no status", lambda: (alert_body().replace(b'"status":"processing",', b""), {}), 400),
    ("over the limit", lambda: (alert_body(pad="x" * 70_000), {}), 413),
]


@pytest.mark.parametrize(("name", "make", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_bad_alert_answer_and_nothing_published(
    ingest: TestClient[Any, Any], amqp: aio_pika.abc.AbstractChannel,
    name: str, make: Callable[[], tuple[bytes, dict[str, str]]], expected: int,
) -> None:
    body, headers = make()
    with captured() as logged:
        response = await ingest.post(PATH, data=body, headers=headers)
    assert response.status == expected, name
    if expected == 401:
        assert await response.json() == {"status": "unauthorized"}  # the reason stays with us
    assert await queued(amqp) == 0
    [line] = [e for e in logged if e["event"] == "alert_rejected"]
    assert line["outcome"] == expected
    signature = headers.get(SIGNATURE_HEADER)
    assert not signature or signature not in repr(logged)


async def test_chunked_body_over_the_limit_is_413(
    ingest: TestClient[Any, Any], amqp: aio_pika.abc.AbstractChannel,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    response = await ingest.post(PATH, data=chunks(), headers={TIMESTAMP_HEADER: "1"})
    assert response.status == 413
    assert await queued(amqp) == 0


async def test_oversize_headers_are_400_and_nothing_published(
    ingest: TestClient[Any, Any], amqp: aio_pika.abc.AbstractChannel,
) -> None:
    # aiohttp's parser limits: a header field of 8,190 bytes, 128 header lines.
    body = alert_body("big-headers")
    signed = signed_headers(body, gateway_rsa())
    one_huge = {**signed, "x-padding": "a" * 9000}
    very_many = {**signed, **{f"x-pad-{n}": "a" for n in range(200)}}
    for headers in (one_huge, very_many):
        response = await ingest.post(PATH, data=body, headers=headers)
        assert response.status == 400
    assert await queued(amqp) == 0
    assert (await ingest.post(PATH, data=body, headers=signed)).status == 200  # the same alert


async def test_wrong_method_and_probes(ingest: TestClient[Any, Any]) -> None:
    assert (await ingest.get(PATH)).status == 405
    assert (await ingest.get("/healthz")).status == 200
    assert (await ingest.get("/readyz")).status == 200
    metrics = await (await ingest.get("/metrics")).text()
    assert "hh_ingest_alerts_total" in metrics


async def test_accepted_alert_is_logged_once_with_ids(
    ingest: TestClient[Any, Any], amqp: aio_pika.abc.AbstractChannel,
) -> None:
    body = alert_body("pay-log")
    headers = signed_headers(body, gateway_rsa())
    with captured() as logged:
        assert (await ingest.post(PATH, data=body, headers=headers)).status == 200
    [line] = [e for e in logged if e["event"] == "alert_accepted"]
    assert line["payment_id"] == "pay-log" and line["request_id"] == "req-1"
    assert line["idempotency_key"].endswith(":pay-log:processing:new")
    assert line["route"] == "callback" and line["correlation_id"] and line["outcome"] == 200
    assert headers[SIGNATURE_HEADER] not in repr(logged)
    assert await queued(amqp) == 1


async def test_independent_implementations_alert_is_accepted_and_its_twin_refused(
    make_settings: Callable[..., Settings], amqp: aio_pika.abc.AbstractChannel,
) -> None:
    """The vectors were signed by an independent implementation at a fixed past time, so this
    ingest allows a window reaching back to it."""
    vec = vectors()
    age = int(time.time()) - vec["timestamp"] + 3600
    app = create_app(make_settings(ingest={"timestamp_tolerance_s": age}))
    async with TestClient(TestServer(app)) as client:
        await wait_until(lambda: _true(app[BROKER].ready), 20, "broker")
        case = vec["cases"][1]
        headers = {TIMESTAMP_HEADER: str(vec["timestamp"]), "Content-Type": "application/json"}
        good = await client.post(PATH, data=case["raw_body"].encode(), headers={
            **headers, SIGNATURE_HEADER: case["rsa_signature_by_gateway_key"]})
        assert good.status == 200
        for negative in vec["negative_cases"]:
            bad = await client.post(PATH, data=negative["raw_body"].encode(), headers={
                **headers, TIMESTAMP_HEADER: str(negative["timestamp"]),
                SIGNATURE_HEADER: negative["signature"]})
            assert bad.status == 401, negative["why"]
    assert await queued(amqp) == 1


async def _true(value: bool) -> bool:
    return value


async def test_broker_unreachable_answers_503(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(amqp={"url": "amqp://guest:guest@127.0.0.1:1/"}))
    async with TestClient(TestServer(app)) as client:
        body = alert_body()
        response = await client.post(PATH, data=body, headers=signed_headers(body, gateway_rsa()))
        assert response.status == 503
        assert (await client.get("/readyz")).status == 503
        assert (await client.get("/healthz")).status == 200


async def test_random_requests_never_get_a_500(
    ingest: TestClient[Any, Any], amqp: aio_pika.abc.AbstractChannel,
) -> None:
    """Random bodies and headers over real HTTP: only 200, 400, 401 or 413."""
    import random

    rng = random.Random(11)
    pieces = [b"{", b"}", b"[", b"]", b'"project_id"', b":", b",", b'"general"', b'"status"',
              b'"57aff4db-b45d-42bf-bc5f-b7a499a01782"', b"null", b"1e999", b"\xff", b"\\u0000",
              b'"payment_id"', b'"x"', b"true", b" "]
    seen = set()
    for _ in range(300):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        if rng.random() < 0.3:
            body = alert_body(f"fz-{rng.randint(0, 9)}")
        headers = {TIMESTAMP_HEADER: rng.choice(["", "x", "-1", str(int(time.time())),
                                                     "9" * 40]),
                   SIGNATURE_HEADER: rng.choice(["", "00", "a" * 3000, "=="])}
        response = await ingest.post(PATH, data=body, headers=headers)
        seen.add(response.status)
    assert seen <= {200, 400, 401, 413}, seen
    assert await queued(amqp) == 0  # none of them was signed


async def test_source_allowlist_answers_403_and_trusts_only_its_proxy(
    make_settings: Callable[..., Settings], amqp: aio_pika.abc.AbstractChannel,
) -> None:
    app = create_app(make_settings(ingest={"allowed_networks": ["203.0.113.0/24"],
                                           "trusted_proxies": ["127.0.0.1/32"]}))
    async with TestClient(TestServer(app)) as client:
        await wait_until(lambda: _true(app[BROKER].ready), 20, "broker")
        body = alert_body("pay-net")
        headers = signed_headers(body, gateway_rsa())
        refused = await client.post(PATH, data=body, headers=headers)
        assert refused.status == 403 and await refused.json() == {"status": "forbidden"}
        forged = await client.post(PATH, data=body, headers={
            **headers, "X-Forwarded-For": "203.0.113.5, 6.6.6.6"})
        assert forged.status == 403
        via_proxy = await client.post(PATH, data=body, headers={
            **headers, "X-Forwarded-For": "203.0.113.5"})
        assert via_proxy.status == 200
    assert await queued(amqp) == 1
