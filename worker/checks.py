"""Stale checks: "look at this order at seq s, poll step k" messages that the broker holds for
their delay (a wait queue per delay) and then hands to a worker (the due queue). The message is
the schedule: no query looks for due orders."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from shared.topology import CHECKS_EXCHANGE, wait_queue
from worker import ids
from worker.ports import Publisher


class InvalidCheck(ValueError):
    pass


@dataclass(frozen=True)
class Check:
    order_id: str
    seq: int  # the order's step it was scheduled for: a check for an older step is dropped
    step: int  # polls made at that seq before this one (0: the first, after the change)
    # Set on a check that could not be decided yet (a poll in flight elsewhere) and was put
    # back to wait: when it comes again it finishes what a crashed poll may have left undone.
    recheck: bool = False

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Check:
        try:
            raw = json.loads(data)
            check = cls(str(raw["order_id"]), int(raw["seq"]), int(raw["step"]),
                        bool(raw.get("recheck", False)))
        except (ValueError, TypeError, KeyError):
            raise InvalidCheck("not a check") from None
        if check.seq < 0 or check.step < 0 or ":" not in check.order_id:
            raise InvalidCheck("not a check")
        return check


async def publish_check(broker: Publisher, check: Check, delay_s: float) -> None:
    """Into the wait queue of `delay_s`, with confirm (raises PublishFailed): the caller acks
    what caused the check only after this returns, so a crash gives a duplicate, never none."""
    await broker.publish(CHECKS_EXCHANGE, wait_queue(delay_s), check.to_bytes(),
                         correlation_id=check.order_id,
                         message_id=ids.check(check.order_id, check.seq, check.step))
