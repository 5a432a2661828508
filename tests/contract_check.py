"""The session-wide contract check: every message published through `Broker.publish` in the
test process, and every event a test takes from hh.orders (from any process or container),
is validated against its JSON Schema; so is each body's set of properties (every one must be
declared in the schema: a field added without documenting it fails the run)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from shared.broker import Broker
from shared.contract import problems, schema, schema_for

SEEN: Counter[str] = Counter()  # messages checked, by schema
FOUND: list[str] = []  # what was wrong, one line each


def check(exchange: str, routing_key: str, body: bytes) -> None:
    name = schema_for(exchange, routing_key)
    if name is None:
        return
    SEEN[name] += 1
    try:
        value = json.loads(body)
    except ValueError:
        FOUND.append(f"{name} on {exchange or '(default)'}/{routing_key}: not JSON")
        return
    found = problems(name, value, formats=True)
    if isinstance(value, Mapping):
        declared = schema(name)["properties"]
        found += [f"{key}: not declared in the schema" for key in value if key not in declared]
    FOUND.extend(f"{name} on {exchange or '(default)'}/{routing_key}: {problem}"
                 for problem in found)


def install() -> None:
    """Wrap Broker.publish: check the message, then publish it as before."""
    original = Broker.publish

    async def publish(self: Broker, exchange: str, routing_key: str, body: bytes,
                      **kwargs: Any) -> None:
        check(exchange, routing_key, body)
        await original(self, exchange, routing_key, body, **kwargs)

    Broker.publish = publish  # type: ignore[method-assign]
