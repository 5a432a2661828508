"""Telling the worker about a payment the merchant created: one confirmed publish to
hh.orders.register (the model is in shared.registration)."""

from __future__ import annotations

from shared.broker import Broker
from shared.contract import REGISTRATION, problems
from shared.registration import Registration
from shared.topology import REGISTER_QUEUE
from shared.wire import compact_json


async def publish_registration(broker: Broker, registration: Registration) -> None:
    """Publish with confirm; raises PublishFailed if the broker did not take it, and
    ValueError for a registration the contract's schema refuses (the worker would)."""
    value = registration.as_dict()
    found = problems(REGISTRATION, value)
    if found:
        raise ValueError(f"not a registration: {found[0]}")
    body = compact_json(value)
    await broker.publish("", REGISTER_QUEUE, body, correlation_id=registration.order_id)
