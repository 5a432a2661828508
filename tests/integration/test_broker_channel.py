"""A publish the broker refuses (a nack) fails, and renews the publishing channel: after a lost
node, a channel opened before the cluster elected the new queue leaders has every publish
refused until that node returns (RabbitMQ 3.10; tests/cluster)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
import structlog

from shared.broker import Broker, PublishFailed, Unroutable
from shared.settings import Settings
from shared.topology import PROCESS_QUEUE, RETRY_EXCHANGE
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


async def test_an_unroutable_publish_and_an_unknown_exchange_fail_and_the_channel_goes_on(
    broker: Broker, amqp: aio_pika.abc.AbstractChannel,
) -> None:
    # Mandatory: the broker returns a message no queue is bound for (aiormq's own channel,
    # not aio-pika's exchange, publishes it: the return must still fail the publish).
    with pytest.raises(Unroutable, match=r"no queue bound for hh\.test\.unbound"):
        await broker.publish(RETRY_EXCHANGE, "hh.test.unbound", b"{}", correlation_id="c")
    with pytest.raises(PublishFailed, match="not in the topology"):
        await broker.publish("hh.test.nowhere", "any", b"{}", correlation_id="c")
    await take_queued(amqp)
    await broker.publish("", PROCESS_QUEUE, b'{"after": true}', correlation_id="c",
                         headers={"x-test": "kept"}, message_id="m-1")
    # The properties it writes itself: persistent, JSON, its ids, headers and a timestamp.
    queue = await amqp.get_queue(PROCESS_QUEUE, ensure=False)
    message = await queue.get(no_ack=True, fail=False)
    assert message is not None and message.body == b'{"after": true}'
    assert (message.delivery_mode, message.content_type, message.message_id,
            message.correlation_id, message.headers.get("x-test")) == (
        aio_pika.DeliveryMode.PERSISTENT, "application/json", "m-1", "c", "kept")
    assert message.timestamp is not None
