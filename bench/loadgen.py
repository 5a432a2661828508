"""The load generator: signed requests made before the clock starts, then sent closed-loop (a
fixed number of requests in flight) or open-loop (a fixed arrival rate), every latency and
status recorded."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import aio_pika
import aiohttp

from shared.signature import SigningKey, load_signing_key
from shared.wire import CALLBACK_PATHS, alert_headers, compact_json
from shared.wire import alert_value as wire_alert

PROJECT_ID = "57aff4db-b45d-42bf-bc5f-b7a499a01782"
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    headers: dict[str, str]
    payment_id: str


def alert_value(payment_id: str, status: str = "success", sub_status: str | None = None
                ) -> dict[str, object]:
    request_id = uuid.uuid5(uuid.NAMESPACE_URL, payment_id).hex
    value = wire_alert(PROJECT_ID, payment_id, request_id, status, sub_status)
    value["payment_info"] = {"amount": 150000, "currency": "RUB", "payment_method": "card"}
    return value


KeyKind = Literal["rsa", "hmac"]


def _sign_chunk(args: tuple[bytes, KeyKind, list[str], int]) -> list[Request]:
    material, kind, payment_ids, timestamp = args
    key = load_signing_key(material, kind)
    return [_signed(key, payment_id, timestamp) for payment_id in payment_ids]


def _signed(key: SigningKey, payment_id: str, timestamp: int) -> Request:
    value = alert_value(payment_id)
    return Request(path=CALLBACK_PATHS["success"], body=compact_json(value),
                   headers=alert_headers(value, key, timestamp), payment_id=payment_id)


def signed_requests(material: bytes, kind: KeyKind, count: int, prefix: str,
                    duplicate_share: float = 0.0) -> list[Request]:
    """`count` alerts signed in a process pool (distinct payment ids, or a share of repeats)."""
    distinct = max(1, round(count * (1 - duplicate_share)))
    ids = [f"{prefix}-{n}" for n in range(distinct)]
    timestamp = int(time.time()) + 60  # still inside the ±300 s window when the runs end
    workers = os.cpu_count() or 1
    chunks = [ids[n::workers] for n in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        made = [r for part in pool.map(_sign_chunk, [(material, kind, c, timestamp)
                                                     for c in chunks]) for r in part]
    return [made[n % distinct] for n in range(count)]


@dataclass
class Result:
    """One run: every latency (seconds) and every status code."""
    name: str
    offered_rps: float | None  # None for closed-loop
    concurrency: int | None
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    due_at: dict[str, float] = field(default_factory=dict)  # open loop: payment_id -> loop time

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed_s if self.elapsed_s else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name, "offered_rps": self.offered_rps, "concurrency": self.concurrency,
            "requests": len(self.latencies), "elapsed_s": round(self.elapsed_s, 3),
            "throughput_rps": round(self.throughput, 1),
            "latency_ms": {k: round(v * 1000, 3) for k, v in percentiles(self.latencies).items()},
            "statuses": dict(self.statuses),
        }


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """Exact percentiles over all samples (nearest rank), and the maximum."""
    if not samples:
        return {}
    ordered = sorted(samples)
    out = {f"p{p:g}": ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]
           for p in PERCENTILES}
    out["max"] = ordered[-1]
    return out


Send = Callable[[Request], Awaitable[str]]
Handle = Callable[[aio_pika.abc.AbstractIncomingMessage], Awaitable[None]]


async def consume_timed(queue: aio_pika.abc.AbstractQueue, expected: int, handle: Handle,
                        limit_s: float = 900) -> float:
    """Consume with `handle` (which acks) until `expected` messages are handled; seconds."""
    done = asyncio.Event()
    count = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal count
        await handle(message)
        count += 1
        if count >= expected:
            done.set()

    started = time.perf_counter()
    tag = await queue.consume(on_message)
    await asyncio.wait_for(done.wait(), limit_s)
    elapsed = time.perf_counter() - started
    await queue.cancel(tag)
    return elapsed


def http_sender(session: aiohttp.ClientSession, base_url: str) -> Send:
    async def send(request: Request) -> str:
        try:
            async with session.post(base_url + request.path, data=request.body,
                                    headers=request.headers) as response:
                await response.read()
                return str(response.status)
        except aiohttp.ClientError as exc:
            return type(exc).__name__

    return send


async def closed_loop(name: str, send: Send, requests: Sequence[Request], concurrency: int
                      ) -> Result:
    """`concurrency` lanes, each sending its next request when the last one is answered."""
    result = Result(name, None, concurrency)
    cursor = iter(requests)

    async def lane() -> None:
        for request in cursor:
            started = time.perf_counter()
            status = await send(request)
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] += 1

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - started
    return result


async def open_loop(name: str, send: Send, requests: Sequence[Request], rate: float) -> Result:
    """Request n is due at start + n/rate whatever the answers; its latency counts from when it
    was due, so a stalled server is not flattered by the generator waiting (coordinated
    omission)."""
    result = Result(name, rate, None)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(request: Request, due: float) -> None:
        result.due_at[request.payment_id] = due
        status = await send(request)
        result.latencies.append(loop.time() - due)
        result.statuses[status] += 1

    tasks = []
    for n, request in enumerate(requests):
        due = start + n / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the arrivals, not synchronizing
        tasks.append(asyncio.create_task(one(request, due)))
    await asyncio.gather(*tasks)
    result.elapsed_s = loop.time() - start
    return result
