"""A turn's publishes leave in one frame write, in the order of their delivery tags, each
confirmed on its own; a closed channel refuses a publish before it takes a tag, and fails
one it closes under."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiormq
import pytest

from shared.broker import Broker, PublishFailed
from shared.settings import Settings
from tests.conftest import take_queued

pytestmark = pytest.mark.services
QUEUE = "hh.test.turn"


@pytest.fixture
async def broker(settings: Settings, amqp: aio_pika.abc.AbstractChannel
                 ) -> AsyncIterator[Broker]:
    await amqp.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    broker = Broker.for_settings(settings)
    await broker.connect()
    yield broker
    await broker.close()
    await amqp.queue_delete(QUEUE)


async def _underlay(broker: Broker) -> Any:
    assert broker.channel is not None
    return await broker.channel.get_underlay_channel()


async def test_a_turns_publishes_leave_in_one_write_in_order_and_are_each_confirmed(
    broker: Broker, amqp: aio_pika.abc.AbstractChannel, monkeypatch: pytest.MonkeyPatch,
) -> None:
    channel: aiormq.Channel = await _underlay(broker)
    queue = channel.write_queue
    writes: list[int] = []
    put = queue.put_nowait

    def counted(item: Any) -> None:
        writes.append(len(item.payload))
        put(item)

    monkeypatch.setattr(queue, "put_nowait", counted)
    bodies = [b'{"n": %d}' % n for n in range(40)]
    # Forty tasks that all publish in the same turn, as the ingest's requests do under load.
    await asyncio.gather(*(broker.publish("", QUEUE, body, correlation_id=f"c{n}")
                           for n, body in enumerate(bodies)))
    assert len(writes) == 1
    assert await take_queued(amqp, QUEUE) == bodies


async def test_a_closed_channel_refuses_the_publish_before_it_takes_a_tag(
    broker: Broker,
) -> None:
    channel: aiormq.Channel = await _underlay(broker)
    tag = channel.delivery_tag
    await channel.close()
    with pytest.raises(PublishFailed):
        await broker.publish("", QUEUE, b"{}", correlation_id="c")
    assert channel.delivery_tag == tag


async def test_a_channel_closed_before_a_publish_is_confirmed_fails_the_publish(
    broker: Broker, amqp: aio_pika.abc.AbstractChannel,
) -> None:
    """The publish took its tag and its frames are on their way when the channel closes:
    aiormq rejects the confirmation as it closes, and the sender is answered a failure (a 503
    at the ingest, sent again later). The frames may have reached the queue before the Close:
    a copy the worker's inbox takes once, never an alert answered 200 and lost."""
    channel: aiormq.Channel = await _underlay(broker)
    publishing = asyncio.create_task(broker.publish("", QUEUE, b"{}", correlation_id="c"))
    await asyncio.sleep(0)  # the publish took its tag; its frames leave when the turn ends
    assert len(channel.confirmations) == 1
    await channel.close()
    with pytest.raises(PublishFailed) as failed:
        await publishing
    assert "in time" not in str(failed.value)  # failed by the close, not by the timeout
    assert await take_queued(amqp, QUEUE) in ([], [b"{}"])
