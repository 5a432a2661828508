"""Ceilings (b) and (c): raw aio-pika persistent publishes with publisher confirms to a quorum
queue, and a raw consume+ack of that queue, with the load generator's lanes and concurrency."""

from __future__ import annotations

from collections.abc import Sequence

import aio_pika

from bench.loadgen import Request, Result, Send, closed_loop, consume_timed

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


async def _ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    await message.ack()


async def consume_ceiling(url: str, expected: int, prefetch: int) -> Result:
    """Consume and ack what `publish_ceiling` left in the queue."""
    connection = await aio_pika.connect_robust(url)
    result = Result("ceiling (c): consume+ack", None, prefetch)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(CEILING_QUEUE)
        result.elapsed_s = await consume_timed(queue, expected, _ack, limit_s=300)
        result.latencies = [result.elapsed_s / expected] * expected  # per message, on average
        result.statuses["acked"] = expected
        await queue.delete(if_unused=False, if_empty=False)
        return result
    finally:
        await connection.close()
