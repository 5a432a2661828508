"""Past its bound on alerts in flight the ingest refuses at once (503, Retry-After), and
publishes nothing of what it refused."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest.app import ADMISSION, BROKER, create_app
from shared.settings import Settings
from shared.wire import CALLBACK_PATHS
from tests.broker_control import AMQP_URL, rabbitmqctl, rabbitmqctl_output
from tests.conftest import take_queued, wait_until
from tests.keys import alert_body, gateway_rsa, signed_headers

pytestmark = pytest.mark.services
PATH = CALLBACK_PATHS["callback"]
BOUND = 3


async def _ready(value: bool) -> bool:
    return value


@pytest.fixture
async def bounded_ingest(make_settings: Callable[..., Settings], services: None,
                         amqp: aio_pika.abc.AbstractChannel,
                         ) -> AsyncIterator[TestClient[Any, Any]]:
    # A long publish timeout: the alerts taken wait on the broker for as long as the test
    # holds its confirms back, and are then answered 200.
    settings = make_settings(ingest={"max_in_flight": BOUND}, amqp={"publish_timeout_s": 60.0})
    app = create_app(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    await wait_until(lambda: _ready(app[BROKER].ready), 20, "ingest connected to the broker")
    await take_queued(amqp)
    yield client
    await client.close()


async def memory_alarm(on: bool) -> None:
    """A memory alarm: the broker stops reading from publishing connections, so a publish
    waits for its confirm until the alarm is cleared."""
    alarm = "{resource_limit, memory, node()}"
    await rabbitmqctl("eval", f"rabbit_alarm:set_alarm({{{alarm}, []}})." if on
                      else f"rabbit_alarm:clear_alarm({alarm}).")


async def post(client: TestClient[Any, Any], payment_id: str) -> tuple[int, dict[str, str], Any]:
    body = alert_body(payment_id=payment_id)
    async with client.post(PATH, data=body, headers=signed_headers(body, gateway_rsa())) as r:
        return r.status, dict(r.headers), json.loads(await r.read())


async def test_alerts_past_the_bound_are_refused_at_once_and_never_published(
    bounded_ingest: TestClient[Any, Any], amqp: aio_pika.abc.AbstractChannel,
) -> None:
    client = bounded_ingest
    admission = client.server.app[ADMISSION]
    await memory_alarm(True)
    try:
        taken = [asyncio.create_task(post(client, f"held-{n}")) for n in range(BOUND)]

        async def all_places_taken() -> bool:
            return admission.in_flight == BOUND

        await wait_until(all_places_taken, 20, "the alerts in flight to fill the bound")
        refusals = [await post(client, f"refused-{n}") for n in range(5)]
        # Answered while every alert taken still waits for its confirm: nothing waited.
        assert not any(task.done() for task in taken)
        for status, headers, answer in refusals:
            assert (status, headers.get("Retry-After"), answer) == (
                503, "1", {"status": "unavailable"})
        metrics = await (await client.get("/metrics")).text()
        assert 'hh_ingest_rejections_total{reason="overloaded"} 5.0' in metrics
    finally:
        await memory_alarm(False)
    answers = await asyncio.gather(*taken)
    assert [status for status, _, _ in answers] == [200] * BOUND
    assert admission.in_flight == 0
    assert (await post(client, "after"))[0] == 200  # the places are free again
    published = sorted(json.loads(json.loads(b)["body"])["general"]["payment_id"]
                       for b in await take_queued(amqp))
    assert published == sorted([f"held-{n}" for n in range(BOUND)] + ["after"])


async def test_a_publish_that_fails_gives_its_place_back(
    make_settings: Callable[..., Settings], services: None,
    amqp: aio_pika.abc.AbstractChannel,
) -> None:
    """Confirms held back past the publish timeout: each alert is answered 503, and its place
    is free again, so the ingest takes alerts once the broker confirms again."""
    settings = make_settings(ingest={"max_in_flight": BOUND}, amqp={"publish_timeout_s": 0.5})
    app = create_app(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        await wait_until(lambda: _ready(app[BROKER].ready), 20, "ingest connected")
        await take_queued(amqp)
        await memory_alarm(True)
        try:
            failed = await asyncio.gather(*(post(client, f"timed-out-{n}")
                                            for n in range(BOUND)))
        finally:
            await memory_alarm(False)
        assert [status for status, _, _ in failed] == [503] * BOUND
        assert app[ADMISSION].in_flight == 0
        assert (await post(client, "after-the-alarm"))[0] == 200
    finally:
        await client.close()
        await take_queued(amqp)


async def test_alerts_waiting_on_a_node_lost_to_its_heartbeat_are_answered_503(
    make_settings: Callable[..., Settings], services: None,
) -> None:
    """The broker paused (SIGSTOP) while alerts wait for their confirms: the client finds it
    lost by its heartbeat and aiormq cancels what waited. Each such alert is answered 503,
    never dropped without an answer."""
    settings = make_settings(amqp={"url": AMQP_URL + "?heartbeat=1", "publish_timeout_s": 60.0})
    app = create_app(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    pid = int((await rabbitmqctl_output("eval", "os:getpid().")).strip().strip('"'))
    try:
        await wait_until(lambda: _ready(app[BROKER].ready), 20, "ingest connected")
        os.kill(pid, signal.SIGSTOP)
        try:
            answers = await asyncio.gather(*(post(client, f"cut-{n}") for n in range(3)))
        finally:
            os.kill(pid, signal.SIGCONT)
        assert [(status, answer) for status, _headers, answer in answers] == [
            (503, {"status": "unavailable"})] * 3
    finally:
        await client.close()
