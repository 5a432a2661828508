"""Past its bound on alerts in flight the ingest refuses at once (503, Retry-After), and
publishes nothing of what it refused."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest.admission import REFUSED_KEEP_ALIVE, RESTING_LIMIT
from ingest.app import ADMISSION, BROKER, create_app
from shared.settings import Settings
from shared.wire import CALLBACK_PATHS, PROBE_HEADER
from tests.broker_control import AMQP_URL, rabbitmqctl, rabbitmqctl_output
from tests.conftest import take_queued, wait_until
from tests.integration.test_slow_clients import metric, start_ingest
from tests.keys import alert_body, gateway_hmac, gateway_rsa, signed_headers
from tests.logcapture import captured

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
        with captured() as logged:
            refusals = [await post(client, f"refused-{n}") for n in range(5)]
        # One line for the storm, not one per refusal: the first refused, the bound full.
        assert [(e["event"], e["refused"], e["in_flight"], e["bound"]) for e in logged
                if e["event"] == "alerts_refused_overloaded"] == [
            ("alerts_refused_overloaded", 1, BOUND, BOUND)]
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


async def test_a_confirm_stall_is_ridden_out_up_to_the_ceiling(
    make_settings: Callable[..., Settings], services: None,
    amqp: aio_pika.abc.AbstractChannel,
) -> None:
    """The bound follows latency (ingest.admission): while the broker holds every confirm back
    and the loop keeps time, the alerts waiting cost the process nothing, so an alert that
    finds every place taken is let in and the bound doubled, up to the ceiling; past it the
    alert is refused at once and never published."""
    start = RESTING_LIMIT
    settings = make_settings(ingest={"max_in_flight": 2 * start},
                             amqp={"publish_timeout_s": 60.0})
    app = create_app(settings)
    admission = app[ADMISSION]
    assert admission.target_s > 0 and admission.limit == start
    client: TestClient[Any, Any] = TestClient(TestServer(app),
                                              connector=aiohttp.TCPConnector(limit=0))
    await client.start_server()

    async def hmac_post(payment_id: str) -> int:
        body = alert_body(payment_id=payment_id)
        async with client.post(PATH, data=body, headers=signed_headers(body, gateway_hmac())
                               ) as response:
            return response.status

    async def places_taken(count: int) -> bool:
        return admission.in_flight == count

    async def loop_keeps_time() -> bool:
        return admission.keeps_time(time.monotonic())

    async def sent_until_taken(payment_id: str) -> asyncio.Task[int]:
        """Send the alert again each time it is refused, as HighHelp does: the one taken."""
        async def answered_or_taken(sending: asyncio.Task[int], before: int) -> bool:
            return sending.done() or admission.in_flight > before

        for _ in range(100):
            before = admission.in_flight
            sending = asyncio.create_task(hmac_post(payment_id))
            await wait_until(partial(answered_or_taken, sending, before), 20,
                             "the alert taken or refused", every=0.01)
            if not sending.done():
                return sending
            assert sending.result() == 503
        raise AssertionError(f"{payment_id} never taken through the stall")

    try:
        await wait_until(lambda: _ready(app[BROKER].ready), 20, "ingest connected")
        await take_queued(amqp)
        await memory_alarm(True)
        try:
            taken = [asyncio.create_task(hmac_post(f"held-{n}")) for n in range(start)]
            await wait_until(lambda: places_taken(start), 20, "the resting bound filled")
            # The burst that filled them kept this loop (the test's client and the ingest
            # share it) busy: a stall is told only by a loop that keeps time again, else the
            # alert past the rest is refused and the bound grows by a quarter instead.
            await wait_until(loop_keeps_time, 20, "the loop on time after the burst",
                             every=0.005)
            # Every place taken, nothing answered: once the silence outlasts the target, the
            # next alert is let in and the bound doubled, to the ceiling.
            taken.append(await sent_until_taken("past-the-rest"))
            assert admission.limit == 2 * start
            taken += [asyncio.create_task(hmac_post(f"held-{n}"))
                      for n in range(start, 2 * start - 1)]
            await wait_until(lambda: places_taken(2 * start), 20, "the ceiling filled")
            assert await hmac_post("past-the-ceiling") == 503  # at once, the stall or not
            assert not any(task.done() for task in taken)
        finally:
            await memory_alarm(False)
        assert await asyncio.gather(*taken) == [200] * (2 * start)
        published = {json.loads(json.loads(b)["body"])["general"]["payment_id"]
                     for b in await take_queued(amqp)}
        assert published == ({f"held-{n}" for n in range(2 * start - 1)} | {"past-the-rest"})
    finally:
        await client.close()


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


def raw_alert(payment_id: str, route: str = "callback", probe: bool = False) -> bytes:
    """A signed alert as one piece of bytes, as an HTTP client writes it."""
    body = alert_body(payment_id=payment_id)
    headers = {"Host": "ingest", "Content-Type": "application/json",
               **signed_headers(body, gateway_hmac()), "Content-Length": str(len(body))}
    if probe:
        headers[PROBE_HEADER] = "1"
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST {CALLBACK_PATHS[route]} HTTP/1.1\r\n{head}\r\n".encode() + body


async def answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP answer off a kept-alive connection: its head and its body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    return head, await asyncio.wait_for(reader.readexactly(length), 10)


async def test_past_the_bound_an_alert_arriving_whole_is_refused_before_aiohttp_parses_it(
    settings: Settings, tmp_path: Path, old_rsa_pem: bytes, amqp: aio_pika.abc.AbstractChannel,
) -> None:
    """A real ingest process (its connection guard is the early refusal's home), one place,
    held by an alert whose confirm the broker holds back: a whole alert on an idle
    connection is answered with the hand-written 503, the connection kept; a probe and
    everything not an alert still go to aiohttp; once the place is free, the same
    connection's next alert is taken; a pipelined alert waits for the one before it. Nothing
    refused is published."""
    # Long connection timeouts: the raw connection idles while the broker's alarm is cleared.
    ingest, port = await start_ingest(
        settings, tmp_path, old_rsa_pem, {"max_in_flight": 1, "header_timeout_s": 30.0},
        amqp={"publish_timeout_s": 60.0})
    await take_queued(amqp)

    async def place_taken() -> bool:
        return await metric(port, "hh_ingest_in_flight") == 1
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with aiohttp.ClientSession() as http:
            await memory_alarm(True)
            try:
                held = asyncio.create_task(http.post(
                    f"http://127.0.0.1:{port}{PATH}", data=alert_body(payment_id="held"),
                    headers=signed_headers(alert_body(payment_id="held"), gateway_hmac())))
                await wait_until(place_taken, 20, "the held alert to take the place")
                for n, route in enumerate(["callback", "success", "decline"]):
                    writer.write(raw_alert(f"refused-{n}", route))
                    head, body = await answer(reader)
                    assert head + body == REFUSED_KEEP_ALIVE, head + body
                writer.write(raw_alert("probed", probe=True))
                head, body = await answer(reader)
                assert head.startswith(b"HTTP/1.1 200") and json.loads(body) == {
                    "status": "probe"}
                writer.write(raw_alert("refused-by-aiohttp") * 2)  # pipelined: the long way
                for _ in range(2):
                    head, body = await answer(reader)
                    assert head.startswith(b"HTTP/1.1 503") and b"Server:" in head, head
                # Part of a request's headers, then bytes that look like a whole alert: they
                # continue the part aiohttp holds, so aiohttp reads the whole (one answer).
                writer.write(f"POST {PATH} HTTP/1.1\r\nConnection: keep-alive\r\nX-Pad: ".encode())
                await writer.drain()
                await asyncio.sleep(0.2)  # two reads, not one (the answer is the same if one)
                writer.write(raw_alert("continued"))
                head, body = await answer(reader)
                assert head.startswith(b"HTTP/1.1 503") and b"Server:" in head, head
                assert not held.done()  # every refusal answered while the place was held
            finally:
                await memory_alarm(False)
            async with await held as response:
                assert response.status == 200
        writer.write(raw_alert("taken"))  # the connection refused by hand serves on
        head, body = await answer(reader)
        assert head.startswith(b"HTTP/1.1 200"), head + body

        # A client that pipelines: its second alert comes while its first holds the place.
        # The connection is not idle, so aiohttp takes it, after the first is answered.
        await memory_alarm(True)
        try:
            writer.write(raw_alert("first"))
            await wait_until(place_taken, 20, "the first alert to take the place")
            writer.write(raw_alert("second"))
            await writer.drain()
        finally:
            await memory_alarm(False)
        for _ in range(2):
            head, body = await answer(reader)
            assert head.startswith(b"HTTP/1.1 200"), head + body
        assert await metric(port, 'hh_ingest_rejections_total{reason="overloaded"}') == 6
    finally:
        writer.close()
        assert await ingest.stop() == 0, ingest.output()[-2000:]
    published = sorted(json.loads(json.loads(b)["body"])["general"]["payment_id"]
                       for b in await take_queued(amqp))
    assert published == ["first", "held", "second", "taken"]


async def test_a_place_taken_as_an_alert_is_read_comes_back_however_it_ends(
    settings: Settings, tmp_path: Path, old_rsa_pem: bytes, amqp: aio_pika.abc.AbstractChannel,
) -> None:
    """A real ingest process, one place. The connection guard takes it as it reads a whole
    alert; the place must come back when the handler rejects the alert (a bad signature,
    401), and when aiohttp refuses the request before any handler (a header aiohttp does not
    parse, 400, the connection closed): each time, the next alert is taken, not refused."""
    ingest, port = await start_ingest(settings, tmp_path, old_rsa_pem, {"max_in_flight": 1})
    await take_queued(amqp)

    async def send(data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(data)
            head, _body = await answer(reader)
            return head
        finally:
            writer.close()

    try:
        forged = raw_alert("forged").replace(b'"forged"', b'"FORGED"')  # signed for another
        assert (await send(forged)).startswith(b"HTTP/1.1 401")
        assert (await send(raw_alert("after-401"))).startswith(b"HTTP/1.1 200")
        unparsed = raw_alert("unparsed").replace(b"Host: ingest", b"Bad Name: ingest")
        assert (await send(unparsed)).split(b"\r\n")[0].endswith(b" 400 Bad Request")

        async def place_free() -> bool:
            return await metric(port, "hh_ingest_in_flight") == 0
        await wait_until(place_free, 10, "the place of the alert aiohttp refused to come back")
        assert (await send(raw_alert("after-400"))).startswith(b"HTTP/1.1 200")
        assert await metric(port, 'hh_ingest_rejections_total{reason="overloaded"}') == 0
    finally:
        assert await ingest.stop() == 0, ingest.output()[-2000:]
    published = sorted(json.loads(json.loads(b)["body"])["general"]["payment_id"]
                       for b in await take_queued(amqp))
    assert published == ["after-400", "after-401"]
