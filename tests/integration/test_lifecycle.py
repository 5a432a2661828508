"""Graceful stop on SIGTERM: readiness turns 503 first; requests and messages in flight finish;
nothing accepted is lost; the process exits 0."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from shared.alert import decode_body, parse_alert
from shared.envelope import AlertEnvelope
from shared.mongo import Collections
from shared.settings import Settings
from shared.wire import CALLBACK_PATHS
from tests.conftest import take_queued, toml_text, wait_until, write_config
from tests.integration.test_pipeline import post
from tests.keys import alert_body, gateway_rsa, signed_headers
from tests.processes import ServiceProcess, answers, free_port, http_status
from worker.app import Worker

pytestmark = pytest.mark.services


async def queued_payment_ids(channel: aio_pika.abc.AbstractChannel) -> list[str]:
    envelopes = [AlertEnvelope.from_bytes(body) for body in await take_queued(channel)]
    return [parse_alert(decode_body(e.body.encode())[1]).payment_id for e in envelopes]


async def test_ingest_drains_on_sigterm(
    settings: Settings, tmp_path: Path, old_rsa_pem: bytes, amqp: aio_pika.abc.AbstractChannel,
) -> None:
    port = free_port()
    raw = write_config(tmp_path, old_rsa_pem, ingest={"port": port, "drain_s": 2},
                       mongo={"database": settings.mongo.database})
    config = tmp_path / "ingest.toml"
    config.write_text(toml_text(raw))
    ingest = await ServiceProcess.start(config, "ingest")
    base = f"http://127.0.0.1:{port}"
    # A fresh connection per request: a kept-alive one would hide that the listener closed.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        await wait_until(answers(http, f"{base}/readyz", 200), 30, "ingest ready")

        # A request in flight: headers and half the body sent, the rest held back.
        slow_body = alert_body("drain-slow", "success", None)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(slow_body, gateway_rsa()).items())
        writer.write(f"POST {CALLBACK_PATHS['success']} HTTP/1.1\r\nHost: ingest\r\n{head}"
                     f"Content-Length: {len(slow_body)}\r\nConnection: close\r\n\r\n".encode()
                     + slow_body[:20])
        await writer.drain()

        async def in_flight() -> bool:
            async with http.get(f"{base}/metrics") as response:
                return "hh_ingest_in_flight 1.0" in await response.text()
        await wait_until(in_flight, 10, "the slow request to be in flight")

        ingest.signal(signal.SIGTERM)
        await wait_until(answers(http, f"{base}/readyz", 503), 10,
                         "readiness 503 while draining")
        # While draining, alerts are still served: the one in flight completes...
        writer.write(slow_body[20:])
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        # ... and a new one is accepted, for the load balancer may still send a few.
        body = alert_body("drain-during", "success", None)
        async with http.post(f"{base}{CALLBACK_PATHS['callback']}", data=body,
                             headers=signed_headers(body, gateway_rsa())) as response:
            assert response.status == 200
        await wait_until(answers(http, f"{base}/healthz", None), 10,
                         "the listener to close")

    assert await ingest.wait() == 0, ingest.output()[-3000:]
    assert ingest.count("ingest_stopped") == 1
    # both confirmed before the process left
    assert sorted(await queued_payment_ids(amqp)) == ["drain-during", "drain-slow"]


async def test_worker_drains_on_stop(
    settings: Settings, ingest: TestClient[Any, Any], db: Collections,
    amqp: aio_pika.abc.AbstractChannel,
) -> None:
    port = free_port()
    worker = Worker(dataclasses.replace(
        settings, worker=dataclasses.replace(settings.worker, host="127.0.0.1", port=port)))
    await worker.start()
    body = alert_body("drain-worker", "success", None)
    order_id = parse_alert(decode_body(body)[1]).order_id
    readyz = f"http://127.0.0.1:{port}/readyz"
    async with aiohttp.ClientSession() as http:
        assert await http_status(http, readyz) == 200
        # Holding the order's lock keeps the worker's message in flight until we let go.
        async with worker.processor.locks(order_id):
            assert await post(ingest, body, "success") == 200

            async def in_flight() -> bool:
                return len(worker.consumer.in_flight) == 1
            await wait_until(in_flight, 10, "the alert to be in flight")
            stopping = asyncio.create_task(worker.stop())
            await wait_until(answers(http, readyz, 503), 10,
                             "readiness 503 while draining")
            assert not stopping.done() and worker.consumer.in_flight
        await asyncio.wait_for(stopping, 30)

    assert await db.callbacks.count_documents({}) == 1  # finished, not dropped
    view = await db.orders.find_one({"_id": order_id})
    assert view is not None and view["status"] == "success"
    assert await queued_payment_ids(amqp) == []  # and acked: nothing left to redeliver
