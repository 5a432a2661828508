"""Ceilings (b) and (c): raw aio-pika persistent publishes with publisher confirms to a quorum
queue, and a raw consume+ack of that queue, with the load generator's lanes and concurrency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import aio_pika

from bench.loadgen import Request, Result, Send, closed_loop

CEILING_QUEUE = "hh.bench.ceiling"


async def quorum_queue(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractQueue:
    queue = await channel.declare_queue(
        CEILING_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    await queue.purge()
    return queue


async def publish_ceiling(url: str, requests: Sequence[Request], concurrency: int) -> Result:
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await quorum_queue(channel)

        async def publish(request: Request) -> str:
            await channel.default_exchange.publish(
                aio_pika.Message(request.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=CEILING_QUEUE, mandatory=True)
            return "confirmed"

        send: Send = publish
        return await closed_loop("ceiling (b): confirmed publish", send, requests, concurrency)
    finally:
        await connection.close()


async def consume_ceiling(url: str, expected: int, prefetch: int) -> Result:
    """Consume and ack what `publish_ceiling` left in the queue."""
    connection = await aio_pika.connect_robust(url)
    result = Result("ceiling (c): consume+ack", None, prefetch)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(CEILING_QUEUE)
        done = asyncio.Event()
        count = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal count
            await message.ack()
            count += 1
            if count >= expected:
                done.set()

        started = time.perf_counter()
        tag = await queue.consume(on_message)
        await asyncio.wait_for(done.wait(), 300)
        result.elapsed_s = time.perf_counter() - started
        await queue.cancel(tag)
        result.latencies = [result.elapsed_s / expected] * expected  # per message, on average
        result.statuses["acked"] = expected
        await queue.delete(if_unused=False, if_empty=False)
        return result
    finally:
        await connection.close()
