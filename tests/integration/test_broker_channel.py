"""A publish the broker refuses (a nack) fails, and renews the publishing channel: after a lost
node, a channel opened before the cluster elected the new queue leaders has every publish
refused until that node returns (RabbitMQ 3.10; tests/cluster)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
import structlog

from shared.broker import Broker, PublishFailed
from shared.settings import Settings
from shared.topology import PROCESS_QUEUE
from tests.conftest import take_queued, wait_until

pytestmark = pytest.mark.services
FULL = "hh.test.full"  # a quorum queue of one message, refusing the next


@pytest.fixture
async def broker(settings: Settings, amqp: aio_pika.abc.AbstractChannel
                 ) -> AsyncIterator[Broker]:
    await amqp.declare_queue(FULL, durable=True, arguments={
        "x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "reject-publish"})
    broker = Broker.for_settings(settings)
    await broker.connect()
    yield broker
    await broker.close()
    await amqp.queue_delete(FULL)


async def test_a_nack_fails_the_publish_and_renews_the_channel(
    broker: Broker, amqp: aio_pika.abc.AbstractChannel,
) -> None:
    assert broker.channel is not None
    before = await broker.channel.get_underlay_channel()
    refused = None
    with structlog.testing.capture_logs() as lines:
        # A quorum queue learns it is over its length as its log applies: a few go in first.
        for _ in range(100):
            try:
                await broker.publish("", FULL, b"{}", correlation_id="c")
            except PublishFailed as exc:
                refused = exc
                break
        assert refused is not None and "nack" in str(refused)

        async def renewed() -> Any:
            channel = broker.channel
            return (broker.ready and channel is not None
                    and await channel.get_underlay_channel() is not before)
        await wait_until(renewed, 20, "a new channel under the broker's")
    assert [line["event"] for line in lines].count("broker_channel_renewed") == 1
    # The renewed channel publishes, declarations and all.
    await take_queued(amqp)
    await broker.publish("", PROCESS_QUEUE, b'{"renewed": true}', correlation_id="c")
    assert await take_queued(amqp) == [b'{"renewed": true}']
