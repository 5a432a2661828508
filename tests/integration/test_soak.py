"""Soak: 20,000 alerts (25 % duplicates, 20 % of orders delivered out of order) through a real
ingest process and two worker processes, with RabbitMQ restarted and a worker killed with
SIGKILL in the middle. The final order states must equal the ground truth, with nothing lost
and no duplicate transition. Run with `make soak` (marker `soak`; a few minutes)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest

from shared import mongo
from shared.settings import Settings
from shared.topology import DEAD_QUEUE
from shared.wire import CALLBACK_PATHS
from tests.broker_control import broker_accepts, rabbitmqctl
from tests.conftest import take_queued, toml_text, wait_until, write_config
from tests.keys import alert_body, gateway_hmac, gateway_rsa, signed_headers
from tests.processes import ServiceProcess, answers, free_port

pytestmark = [pytest.mark.services, pytest.mark.soak, pytest.mark.timeout(1800)]

TOTAL = 20_000
DUPLICATE_SHARE = 0.25
REORDERED_SHARE = 0.20
STEPS = [("processing", "new"), ("processing", "requisites")]  # then a final status
CONCURRENCY = 32


@dataclass
class Alert:
    payment_id: str
    step: int  # position in the order's true history: the gateway time is base + step
    status: str
    sub_status: str | None

    @property
    def route(self) -> str:
        return self.status if self.status in ("success", "decline") else "callback"


@dataclass
class Tally:
    answers: Counter[int] = field(default_factory=Counter)
    accepted: set[tuple[str, int]] = field(default_factory=set)
    retried: int = 0


def ground_truth(rng: random.Random) -> tuple[list[Alert], dict[str, str], int]:
    """The delivery stream, each order's final status, and how many alerts are distinct."""
    orders = int(TOTAL * (1 - DUPLICATE_SHARE)) // (len(STEPS) + 1)
    truth, histories = {}, []
    for n in range(orders):
        payment_id = f"soak-{n}"
        final = "success" if rng.random() < 0.7 else "decline"
        truth[payment_id] = final
        history = [Alert(payment_id, i, s, sub) for i, (s, sub) in enumerate(STEPS)]
        history.append(Alert(payment_id, len(STEPS), final, None))
        if rng.random() < REORDERED_SHARE:
            while [a.step for a in history] == sorted(a.step for a in history):
                rng.shuffle(history)
        histories.append(history)
    # Orders interleave; each keeps its own delivery order.
    stream: list[Alert] = []
    cursors = [0] * len(histories)
    live = list(range(len(histories)))
    while live:
        pick = rng.randrange(min(len(live), 200))  # a moving window of ~200 open orders
        n = live[pick]
        stream.append(histories[n][cursors[n]])
        cursors[n] += 1
        if cursors[n] == len(histories[n]):
            live.pop(pick)
    distinct = len(stream)
    for _ in range(TOTAL - distinct):  # repeats land a little later than their original
        at = rng.randrange(len(stream))
        stream.insert(min(len(stream), at + rng.randrange(1, 500)), stream[at])
    return stream, truth, distinct


class Sender:
    def __init__(self, http: aiohttp.ClientSession, url: str, tally: Tally) -> None:
        self.http, self.url, self.tally = http, url, tally
        self.base_ts: dict[str, int] = {}  # each order's gateway clock, fixed at its first alert

    async def send(self, alert: Alert, n: int) -> int:
        body = alert_body(alert.payment_id, alert.status, alert.sub_status)
        base = self.base_ts.setdefault(alert.payment_id, int(time.time()))
        key = gateway_hmac() if n % 2 else gateway_rsa()
        try:
            async with self.http.post(
                    self.url + CALLBACK_PATHS[alert.route], data=body,
                    headers=signed_headers(body, key, base + alert.step)) as response:
                status = response.status
        except aiohttp.ClientError:
            status = 0  # no answer: HighHelp would retry, and so do we
        self.tally.answers[status] += 1
        if status == 200:
            self.tally.accepted.add((alert.payment_id, alert.step))
        return status

    async def send_all(self, alerts: list[tuple[int, Alert]]) -> list[tuple[int, Alert]]:
        """Send with bounded concurrency; return those not answered 200, to send again."""
        queue: asyncio.Queue[tuple[int, Alert]] = asyncio.Queue()
        for item in alerts:
            queue.put_nowait(item)
        failed: list[tuple[int, Alert]] = []

        async def lane() -> None:
            while not queue.empty():
                n, alert = queue.get_nowait()
                if await self.send(alert, n) != 200:
                    failed.append((n, alert))
        await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
        return failed


def processed_keys(workers: list[ServiceProcess]) -> set[str]:
    """Idempotency keys the workers logged as processed (any outcome)."""
    keys = set()
    for worker in workers:
        for line in worker.lines:
            if b'"alert_processed"' in line:
                keys.add(json.loads(line)["idempotency_key"])
    return keys


async def test_soak(
    settings: Settings, tmp_path: Path, old_rsa_pem: bytes, amqp: aio_pika.abc.AbstractChannel,
) -> None:
    started = time.monotonic()
    stream, truth, distinct = ground_truth(random.Random(20_000))
    port = free_port()
    raw = write_config(
        tmp_path, old_rsa_pem, mongo={"database": settings.mongo.database},
        ingest={"port": port}, amqp={"prefetch": 16}, poller={"enabled": False})
    config = tmp_path / "soak.toml"
    config.write_text(toml_text(raw))
    ingest = await ServiceProcess.start(config, "ingest")
    workers = [await ServiceProcess.start(config) for _ in range(2)]
    tally = Tally()
    base = f"http://127.0.0.1:{port}"

    def processed() -> int:
        return sum(w.count("alert_processed") for w in workers)

    async with aiohttp.ClientSession() as http:
        ready = answers(http, f"{base}/readyz", 200)
        await wait_until(ready, 30, "ingest ready")
        sender = Sender(http, base, tally)
        numbered = list(enumerate(stream))
        third = len(numbered) // 3
        retry = await sender.send_all(numbered[:third])

        # RabbitMQ goes away while alerts keep coming: they are answered 503, and resent.
        await rabbitmqctl("stop_app")
        outage_started = time.monotonic()
        try:
            retry += await sender.send_all(numbered[third:third + 400])
        finally:
            returned = asyncio.create_task(broker_accepts())
            await rabbitmqctl("start_app")
            await rabbitmqctl("await_startup")
        back = await returned
        outage_s = back - outage_started
        await wait_until(ready, 60, "ingest reconnected")
        recovery_s = time.monotonic() - back
        retry += await sender.send_all(numbered[third + 400:])
        while retry:
            tally.retried += len(retry)
            retry = await sender.send_all(retry)
        sent_s = time.monotonic() - started

        # A worker is killed in the middle of the work and a fresh one takes its place.
        async def halfway() -> bool:
            return processed() >= TOTAL // 2
        await wait_until(halfway, 900, "half the alerts processed", every=0.5)
        killed_at = processed()
        await workers[0].kill()
        workers.append(await ServiceProcess.start(config))

        # Counted from the workers' logs: a query over the whole inbox would scan it on the
        # local server, competing with the workers it waits for.
        async def all_processed() -> bool:
            return len(processed_keys(workers)) >= distinct
        await wait_until(all_processed, 1500, f"{distinct} distinct alerts processed", every=2)
        for process in (*workers[1:], ingest):
            assert await process.stop() == 0, process.output()[-3000:]
    wall_s = time.monotonic() - started
    client = mongo.client(dataclasses.replace(settings.mongo, timeout_ms=60_000))
    db = mongo.Collections.of(client[settings.mongo.database])

    views = {v["payment_id"]: v async for v in db.orders.find({})}
    wrong = {p: (views.get(p) or {}).get("status") for p, final in truth.items()
             if (views.get(p) or {}).get("status") != final}
    log: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    async for record in db.transitions.find({}):
        log[record["order_id"]].append(record)
    duplicate_steps = gaps = 0
    for records in log.values():
        steps = [(r["to"]["status"], r["to"]["sub_status"]) for r in records]
        duplicate_steps += len(steps) - len(set(steps))
        gaps += sorted(r["seq"] for r in records) != list(range(1, len(records) + 1))
    published = {p["_id"] async for p in db.published.find({})}
    unpublished = sum(r["event"]["event_id"] not in published
                      for records in log.values() for r in records)
    recorded = {(c["payment_id"], c["status"], c["sub_status"])
                async for c in db.callbacks.find({})}
    lost = sum((a.payment_id, a.status, a.sub_status) not in recorded
               for a in stream if (a.payment_id, a.step) in tally.accepted)
    dead = len(await take_queued(amqp, DEAD_QUEUE))
    await client.close()

    print(f"\nsoak: {len(stream)} alerts sent ({len(stream) - distinct} duplicates, "
          f"{len(truth)} orders), answers {dict(tally.answers)}, {tally.retried} resent; "
          f"broker down {outage_s:.1f} s, ingest serving {recovery_s:.2f} s after its return; "
          f"worker killed after {killed_at} processed; "
          f"{len(recorded)} distinct processed, {processed()} processing passes, {lost} lost, "
          f"{sum(map(len, log.values()))} transitions, {duplicate_steps} duplicate, "
          f"{unpublished} unpublished, {dead} dead-lettered, {len(wrong)} wrong final states; "
          f"all sent in {sent_s:.1f} s, wall time {wall_s:.1f} s")
    assert set(tally.answers) <= {200, 503, 0}
    assert tally.answers[503] > 0  # the outage was seen by senders
    assert len(recorded) == distinct and lost == 0
    assert not wrong, list(wrong.items())[:10]
    assert duplicate_steps == 0 and gaps == 0 and unpublished == 0 and dead == 0
