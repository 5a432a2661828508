"""The turn publisher's order when the connection's write queue is full: a later turn's frames
never pass an earlier turn's that wait for room (their delivery tags are their wire order).
The broker itself is in tests/integration/test_turn_publish.py; here, the queue's logic."""

from __future__ import annotations

import asyncio
from typing import Any

from pamqp.body import ContentBody
from pamqp.commands import Basic

from shared.turn_publish import TurnPublisher


class _Channel:
    """What the publisher uses of aiormq's Channel, with a write queue of one place."""

    number = 1
    is_closed = False

    def __init__(self) -> None:
        self.write_queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        self.delivery_tag = 0
        self.confirmations: dict[int, Any] = {}
        self.message_id_delivery_tag: dict[str, int] = {}

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def _split_body(self, body: bytes) -> list[ContentBody]:
        return [ContentBody(body)]


async def test_a_later_turn_waits_behind_frames_that_wait_for_room() -> None:
    channel: Any = _Channel()
    publisher = TurnPublisher()
    channel.write_queue.put_nowait("the writer is behind")
    publisher.publish(channel, "", "q", b"first", Basic.Properties(message_id="m1"))
    await asyncio.sleep(0)  # the turn ends: no room for its frames,
    await asyncio.sleep(0)  # which wait for it
    publisher.publish(channel, "", "q", b"second", Basic.Properties(message_id="m2"))
    assert channel.write_queue.get_nowait() == "the writer is behind"  # room, this turn
    written = [await asyncio.wait_for(channel.write_queue.get(), 5) for _ in range(2)]
    assert [b"first" in w.payload for w in written] == [True, False]
    assert b"second" in written[1].payload
    assert sorted(channel.confirmations) == [1, 2]
    assert channel.message_id_delivery_tag == {"m1": 1, "m2": 2}
