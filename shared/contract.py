"""The broker contract's JSON Schemas (shared/schemas, documented by docs/asyncapi.yaml): which
schema a message on an exchange and routing key follows, and validators for them."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.protocols import Validator

from shared.topology import CALLBACKS_EXCHANGE, CHECKS_EXCHANGE, ORDERS_EXCHANGE, REGISTER_QUEUE

# The events' schema version, in each event: major.minor. A minor adds properties only
# (consumers ignore what they do not know); a major is a new schema file and routing.
EVENT_SCHEMA_VERSION = "1.0"

ORDER_EVENT = "order-event.v1"
REGISTRATION = "registration.v1"
ALERT_ENVELOPE = "alert-envelope.v1"
CHECK = "check.v1"
SCHEMAS = (ORDER_EVENT, REGISTRATION, ALERT_ENVELOPE, CHECK)


def schema_for(exchange: str, routing_key: str) -> str | None:
    """The schema of a message published to `exchange` with `routing_key`; None for the
    broker's own re-routing (retries, dead letters), which re-publishes bodies unchanged."""
    if exchange == ORDERS_EXCHANGE:
        return ORDER_EVENT
    if exchange == CALLBACKS_EXCHANGE:
        return ALERT_ENVELOPE
    if exchange == CHECKS_EXCHANGE:
        return CHECK
    if exchange == "" and routing_key == REGISTER_QUEUE:
        return REGISTRATION
    return None


@cache
def schema(name: str) -> dict[str, Any]:
    text = resources.files("shared").joinpath("schemas", f"{name}.json").read_text("utf-8")
    value: dict[str, Any] = json.loads(text)
    return value


@cache
def validator(name: str, *, formats: bool = False) -> Validator:
    """A validator of schema `name`; with `formats`, "date-time" and "uuid" are checked too
    (date-time needs the rfc3339-validator package: the tests have it)."""
    checker = Draft7Validator.FORMAT_CHECKER if formats else None
    return Draft7Validator(schema(name), format_checker=checker)


def problems(name: str, value: object, *, formats: bool = False) -> list[str]:
    """What is wrong with `value` under schema `name`, one line each (none: valid)."""
    return [f"{'/'.join(map(str, error.absolute_path)) or '(body)'}: {error.message}"
            for error in validator(name, formats=formats).iter_errors(value)]  # type: ignore[arg-type]
